"""Native kernels (LLVM IR via llvmlite): the on-disk cache, and nm_linear's direct CPU call."""

import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from llvmlite import ir
from torch.utils._python_dispatch import TorchDispatchMode

from robustprune.ops import nm_compress, nm_linear, nm_mask
from robustprune.sparse_ops import native
from robustprune.sparse_ops.backend import dispatch_reaches_cpu_kernel
from robustprune.sparse_ops.compiled import KernelBuildError


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


def test_cache_directory_is_created_private(monkeypatch, tmp_path):
    monkeypatch.setenv(native.CACHE_VARIABLE, str(tmp_path / "new" / "kernels"))
    assert native.usable_cache_directory() == tmp_path / "new" / "kernels"
    assert stat.S_IMODE((tmp_path / "new" / "kernels").stat().st_mode) == 0o700
    native.load(empty_kernel("test_private_cache"))
    entries = list((tmp_path / "new" / "kernels").glob("test_private_cache-*.o"))
    assert len(entries) == 1 and stat.S_IMODE(entries[0].stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o770, 0o707], ids=["group-writable", "world-writable"])
def test_a_cache_others_can_write_is_refused(monkeypatch, tmp_path, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    monkeypatch.setenv(native.CACHE_VARIABLE, str(shared))
    with pytest.warns(RuntimeWarning, match="writable by group or others"):
        assert native.usable_cache_directory() is None
    library = native.load(empty_kernel(f"test_shared_cache_{mode:o}"))  # compiled in memory
    assert library.address("nothing") and not library.from_cache
    assert list(shared.iterdir()) == []


def test_an_entry_someone_else_could_write_is_not_loaded(monkeypatch, tmp_path):
    monkeypatch.setenv(native.CACHE_VARIABLE, str(tmp_path))
    module = empty_kernel("test_foreign_entry")
    path = tmp_path / f"test_foreign_entry-{native._cache_key(str(module))}.o"
    code = native.compile_object(module)
    native._write_cached(path, code)
    assert native._read_cached(path) == code
    path.chmod(0o666)
    assert native._read_cached(path) is None


def test_eviction_removes_the_least_recently_used_first(tmp_path):
    for age, name in enumerate(["newest", "middle", "older", "oldest"]):
        entry = tmp_path / f"{name}.o"
        entry.write_bytes(b"x" * 100)
        os.utime(entry, (1_000_000 - age * 10, 1_000_000 - age * 10))
    (tmp_path / "other.txt").write_text("not an entry")
    native.evict(tmp_path, max_entries=3)
    assert sorted(p.name for p in tmp_path.glob("*.o")) == ["middle.o", "newest.o", "older.o"]
    native.evict(tmp_path, max_bytes=150)
    assert [p.name for p in tmp_path.glob("*.o")] == ["newest.o"]
    assert (tmp_path / "other.txt").exists()


def test_the_cache_keeps_its_bound(monkeypatch, tmp_path):
    monkeypatch.setenv(native.CACHE_VARIABLE, str(tmp_path))
    monkeypatch.setattr(native, "CACHE_MAX_ENTRIES", 2)
    for index in range(3):
        native.load(empty_kernel(f"test_bound_{index}"))
        for entry in tmp_path.glob("*.o"):  # distinct times whatever the file system's resolution
            os.utime(entry, (entry.stat().st_mtime - 10,) * 2)
    names = sorted(p.name.split("-")[0] for p in tmp_path.glob("*.o"))
    assert names == ["test_bound_1", "test_bound_2"]


def test_dump_writes_ir_and_assembly(monkeypatch, tmp_path):
    monkeypatch.setenv(native.DUMP_VARIABLE, str(tmp_path / "dump"))
    monkeypatch.setenv(native.CACHE_VARIABLE, str(tmp_path / "cache"))
    native.load(empty_kernel("test_dump"))
    key = native._cache_key(str(empty_kernel("test_dump")))
    dumped = sorted(p.name for p in (tmp_path / "dump").iterdir())
    assert dumped == [f"test_dump-{key}{suffix}" for suffix in (".ll", ".opt.ll", ".s")]
    assert 'define void @"nothing"' in (tmp_path / "dump" / f"test_dump-{key}.ll").read_text()
    assert "nothing:" in (tmp_path / "dump" / f"test_dump-{key}.s").read_text()


def test_undefined_symbols_are_read_from_the_object():
    module = native.new_module("test_symbols")
    function = ir.Function(module, native.KERNEL_TYPE, "calls_out")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    builder.call(native.declare(module, "robustprune_elsewhere", ir.VoidType()), [])
    builder.ret_void()
    code = native.compile_object(module)
    assert "robustprune_elsewhere" in native.undefined_symbols(code)
    with pytest.raises(KernelBuildError, match="robustprune_elsewhere"):
        native.check_symbols(code, "test_symbols")
    with pytest.raises(KernelBuildError, match="LLVM refused the IR"):
        native.compile_object("define void @broken() {")


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
