"""Native kernels (LLVM IR via llvmlite): the on-disk cache, and nm_linear's direct CPU call."""

import json
import os
import subprocess
import sys

import pytest
import torch
from llvmlite import ir
from torch.utils._python_dispatch import TorchDispatchMode

from robustprune.ops import nm_compress, nm_linear, nm_mask
from robustprune.sparse_ops import native
from robustprune.sparse_ops.backend import dispatch_reaches_cpu_kernel


def empty_kernel(name: str) -> ir.Module:
    module = native.new_module(name)
    function = ir.Function(module, native.KERNEL_TYPE, "nothing")
    ir.IRBuilder(function.append_basic_block("entry")).ret_void()
    return module


def test_library_without_the_function_names_it():
    library = native.load(empty_kernel("test_empty"))
    assert library.address("nothing")
    with pytest.raises(KeyError, match="no function 'missing'"):
        library.address("missing")


_PROBE = """
import json, sys, torch
from robustprune.ops import nm_linear
from robustprune.sparse_ops import native
torch.set_num_threads(2)  # large enough to split: the team member is loaded too
values, metadata = torch.load(sys.argv[1])
y = nm_linear(torch.ones(1, 4096), values, metadata, None, 2, 4)
print(json.dumps({"y": y.unique().tolist(), "from_cache": [lib.from_cache for lib in native._libraries.values()],
                  "numba": "numba" in sys.modules}))
"""


@pytest.fixture(scope="module")
def layer_file(tmp_path_factory):
    """A 1024 x 4096 2:4 layer (rows 1, -2, 0, 0, ...), compressed here: the probe imports no other op."""
    path = tmp_path_factory.mktemp("layer") / "layer.pt"
    torch.save(nm_compress(torch.tensor([1.0, -2.0, 0.0, 0.0]).repeat(1024, 1024), 2, 4), path)
    return path


def run_probe(cache, layer_file) -> dict:
    environment = dict(os.environ, ROBUSTPRUNE_KERNEL_CACHE=str(cache))
    done = subprocess.run([sys.executable, "-c", _PROBE, str(layer_file)], env=environment, capture_output=True, text=True,
                          timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_compiled_once_then_loaded_from_the_cache_without_numba(tmp_path, layer_file):
    first = run_probe(tmp_path, layer_file)
    assert first["y"] == [-1024.0] and first["from_cache"] == [False, False]  # kernel and team member
    entries = sorted(tmp_path.glob("*.o"))
    assert len(entries) == 2
    second = run_probe(tmp_path, layer_file)
    assert second == {"y": first["y"], "from_cache": [True, True], "numba": False}

    entries[0].write_bytes(entries[0].read_bytes()[:-100])  # damaged: rebuilt, not loaded
    third = run_probe(tmp_path, layer_file)
    assert third["y"] == first["y"] and sorted(third["from_cache"]) == [False, True]


def test_unwritable_cache_compiles_in_memory(tmp_path, layer_file):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    assert run_probe(blocker, layer_file)["y"] == [-1024.0]


def test_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(native.CACHE_VARIABLE, str(tmp_path / "kernels"))
    assert native.cache_directory() == tmp_path / "kernels"
    monkeypatch.delenv(native.CACHE_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert native.cache_directory() == tmp_path / "robustprune" / "kernels"


# ----------------------------------------------------------------------------------- direct CPU call

def test_direct_call_only_where_dispatch_would_add_nothing():
    x, w = torch.randn(2, 8), torch.randn(4, 8, requires_grad=True)
    assert dispatch_reaches_cpu_kernel(x, None, torch.nn.Parameter(torch.randn(3)).detach())
    assert not dispatch_reaches_cpu_kernel(x, w)  # a gradient to record
    with torch.no_grad():
        assert dispatch_reaches_cpu_kernel(x, w)
    with torch.inference_mode():
        assert dispatch_reaches_cpu_kernel(torch.randn(3))
    assert not dispatch_reaches_cpu_kernel(torch.randn(3, device="meta"))
    assert torch.vmap(lambda row: torch.tensor(dispatch_reaches_cpu_kernel(row)))(x).tolist() == [False, False]


class RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_nm_linear_is_seen_by_dispatch_modes_and_autograd():
    w = torch.randn(8, 64)
    w = w * nm_mask(w, 2, 4)
    values, metadata = nm_compress(w, 2, 4)
    x = torch.randn(1, 64)
    direct = nm_linear(x, values, metadata, None, 2, 4)
    with RecordOps() as mode:
        recorded = nm_linear(x, values, metadata, None, 2, 4)
    assert any("robustprune.nm_linear" in name for name in mode.names)
    assert torch.equal(recorded, direct)
    values.requires_grad_(True)
    y = nm_linear(x, values, metadata, None, 2, 4)
    assert y.grad_fn is not None and torch.equal(y.detach(), direct)
    y.sum().backward()
    assert values.grad is not None
