"""Compile every Triton kernel for NVIDIA GPUs on a machine without one, and report what ptxas says.

``python -m bench.cuda_compile [--arch 80 90] [--out FILE.md] [--json FILE.json]``

Each launcher in :mod:`robustprune.kernels` is called, on small CPU tensors, with every dtype and
option it is given by the ops (fp32 / fp16 / bf16; the N:M patterns; with and without bias; packed or
byte masks; with and without noise; ...). Nothing runs: ``JITFunction.run`` is replaced by a recorder, so
each call yields the kernel, its argument types and its constexprs exactly as the launcher passes them.
An autotuned kernel (``triton.autotune``) is recorded before its autotuner could time anything
(``Autotuner.run`` is replaced too): one launch per config it may pick for that call (its
``early_config_prune`` applied), with the config's constexprs, warps and stages, since each is a variant a
GPU will run. Every distinct launch is then compiled ahead of time for each target (``triton.compile``
with an ``ASTSource`` and ``GPUTarget("cuda", arch, 32)``: TTIR -> TTGIR -> LLVM IR -> PTX -> cubin, with
the ``ptxas`` that ships in the triton wheel); triton's own ``ptxas -v`` report gives registers and spills.

Checked per launch: it compiles; no register spills; kernels whose ``tl.dot`` runs on half inputs (or on
fp32 with TF32 asked for) emit tensor-core MMA instructions; fp32 dots in IEEE mode emit none (TF32 would
round the products). The table (``--out``) lists, per kernel and target, the variants and autotune configs
compiled and the largest register count, spill bytes and shared memory among them. Must run without
``TRITON_INTERPRET`` (the interpreter replaces the kernels, and keeps one config per autotuned kernel); a
test runs it in a subprocess.

What is compiled, and what is left out as redundant (the test must stay within about 2 minutes on 2 cores):
- N:M patterns: every group size M (4, 8, 16) with N = M/2 (2:4, 4:8, 8:16) and the largest N = M-1, whose
  unrolled loops over N hold the most registers; other N compile the same code with fewer trip counts.
  Kernels in which N only bounds a comparison (``rank < N`` in nm_mask's and SparseGPT's) compile the
  same code for every N: one N per M (M/2). The N:M format and matmul kernels compile bf16 (fp16's code
  paths with another element type) and the bias-free matmul (the same code less one load) at N = M-1 only.
- Autotune configs: the first config a launch may pick (its default) with every variant above; the other
  configs with the variant of each code path that holds the most registers: fp16 for the half types (bf16
  compiles the same code paths), IEEE for fp32 (every tile tried that spilled in TF32 spilled more in IEEE,
  whose FMA dot holds whole operand tiles in registers), N = M-1, with bias.
- SparseGPT's block kernel is compiled at the default block width (128), the widest tile it holds. The
  hard-concrete gate's constants are float constexprs: compiled with the paper's (gamma, zeta, beta),
  which is what the ops pass unless a caller changes them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import pkgutil
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

ARCHS = (80, 90)
DTYPES = ("float32", "float16", "bfloat16")
PATTERNS = tuple((n, m) for m in (4, 8, 16) for n in (m // 2, m - 1))
ONE_N_PER_M = tuple((m // 2, m) for m in (4, 8, 16))  # for kernels where N only bounds a comparison
# What tl.dot compiles to on tensor cores: mma.sync (Ampere, and Hopper for small tiles) or wgmma (Hopper).
MMA = re.compile(r"\b(?:mma\.sync|wgmma\.mma_async)\b")
TF32_MMA = re.compile(r"\b(?:mma\.sync|wgmma\.mma_async)[\w.]*\.tf32\b")


@dataclass(frozen=True)
class Launch:
    """One kernel launch as a launcher makes it: the kernel, its signature and its constexprs."""

    kernel: str
    signature: tuple[tuple[str, str], ...]  # (parameter, type or "constexpr") in order
    constexprs: tuple[tuple[str, object], ...]
    options: tuple[tuple[str, int], ...]  # launch options the launcher sets (num_warps, num_stages)
    uses_dot: bool
    expects_mma: bool
    config: str = ""  # the autotune config (config_label), "" for a fixed launch

    @property
    def variant(self) -> str:
        pointers = ",".join(sorted({t[1:] for _, t in self.signature if t.startswith("*")}))
        consts = " ".join(f"{k}={v}" for k, v in self.constexprs + self.options)
        return f"{pointers} {consts}"


@dataclass
class Compiled:
    """What compiling one launch for one target gave."""

    kernel: str
    variant: str
    arch: int
    ok: bool
    error: str = ""
    registers: int = 0
    spill_bytes: int = 0
    shared_bytes: int = 0
    has_mma: bool = False
    has_tf32_mma: bool = False
    uses_dot: bool = False
    expects_mma: bool = False
    config: str = ""
    seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        found = []
        if not self.ok:
            found.append(f"does not compile: {self.error}")
            return found
        if self.spill_bytes:
            found.append(f"spills {self.spill_bytes} bytes of registers")
        if self.uses_dot and self.expects_mma and not self.has_mma:
            found.append("tl.dot emits no tensor-core MMA instruction")
        if self.uses_dot and not self.expects_mma and (self.has_mma or self.has_tf32_mma):
            found.append("an IEEE fp32 tl.dot emits tensor-core MMA (TF32) instructions")
        return found


# ---------------------------------------------------------------------------------------------- launches

def _torch_type(dtype) -> str:
    import torch

    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.uint8: "u8",
             torch.int8: "i8", torch.int32: "i32", torch.int64: "i64", torch.bool: "i1"}
    return names[dtype]


def _argument_type(value) -> str:
    import torch

    if isinstance(value, torch.Tensor):
        return "*" + _torch_type(value.dtype)
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"cannot type a kernel argument of type {type(value).__name__}")


def _launcher_calls() -> Iterator[Callable[[], None]]:
    """Every launcher call the ops can make, on small CPU tensors (nothing executes)."""
    import torch

    from robustprune.kernels import hard_concrete, nm_format, nm_mask, nm_matmul, obs, radix_histogram
    from robustprune.kernels import threshold_mask as threshold
    from robustprune.sparse_ops.hard_concrete import BETA, GAMMA, ZETA
    from robustprune.sparse_ops.magnitude import TRITON_DIGIT_PLAN

    dtypes = [getattr(torch, name) for name in DTYPES]
    for dtype in dtypes:
        x = torch.zeros(4096, dtype=dtype)
        prefix_shift = 31
        for digit_shift, digit_bits in TRITON_DIGIT_PLAN:  # the magnitude threshold's passes
            # one prefix (one sparsity, and every first pass), or a full group of them (a sweep's sparsities)
            for count in ((1,) if prefix_shift == 31 else (1, radix_histogram.PREFIX_SLOTS)):
                hist = torch.zeros(count, 1 << digit_bits, dtype=torch.int32)
                prefixes = torch.arange(count, dtype=torch.int32)
                yield lambda x=x, h=hist, q=prefixes, p=prefix_shift, d=digit_shift: (
                    radix_histogram.radix_histogram(x, h, q, p, d))
            prefix_shift = digit_shift
        yield lambda x=x: radix_histogram.radix_histogram(  # counting the ties at the threshold
            x, torch.zeros(1, 2, dtype=torch.int32), torch.zeros(1, dtype=torch.int32), 0, 0)
        for packed in (False, True):
            mask = torch.zeros(4096 // 8 if packed else 4096, dtype=torch.uint8)
            yield lambda x=x, k=mask, p=packed: threshold.threshold_mask_(x, k, 0, p)
        for noise in (None, torch.zeros(4096)):
            log_alpha, out = torch.zeros(4096), torch.zeros(4096, dtype=dtype)
            yield lambda x=x, la=log_alpha, z=noise, o=out: hard_concrete.hard_concrete_forward(
                x, la, z, o, GAMMA, ZETA, BETA)
            for weight_grad in (None, torch.zeros(4096, dtype=dtype)):
                yield lambda x=x, la=log_alpha, z=noise, g=weight_grad: hard_concrete.hard_concrete_backward(
                    x, x, la, z, g, torch.zeros(4096), GAMMA, ZETA, BETA)
    for n, m in PATTERNS:
        bits = m.bit_length() - 1
        rows, columns = 64, 256
        kept = columns // m * n
        row_bytes = (kept * bits + 7) // 8
        metadata = torch.zeros(rows, row_bytes, dtype=torch.uint8)
        indices = torch.zeros(rows, kept, dtype=torch.uint8)
        yield lambda i=indices, meta=metadata, b=bits: nm_format.pack_index_stream(i, meta, b)
        for dtype in dtypes:
            dense = torch.zeros(rows, columns, dtype=dtype)
            values = torch.zeros(rows, kept, dtype=dtype)
            if (n, m) in ONE_N_PER_M:
                yield lambda d=dense, n=n, m=m: nm_mask.nm_mask(d, torch.zeros(d.shape, dtype=torch.uint8), n, m)
            if dtype == torch.bfloat16 and n != m - 1:
                continue  # bf16 compiles fp16's code paths: checked where the unrolled loops are longest
            yield lambda d=dense, v=values, i=indices, n=n, m=m: nm_format.compress(
                d, v, i, torch.zeros(1, dtype=torch.int32), n, m)
            yield lambda d=dense, v=values, meta=metadata, n=n, m=m: nm_format.decompress(v, meta, d, n, m)
            precisions = ("ieee", "tf32") if dtype == torch.float32 else ("native",)
            for precision in precisions:
                x2, y = torch.zeros(8, columns, dtype=dtype), torch.zeros(8, rows, dtype=dtype)
                # without bias the kernel is the same code less one load: compiled where the loops are longest
                for bias in ((None, torch.zeros(rows, dtype=dtype)) if n == m - 1 else (torch.zeros(rows, dtype=dtype),)):
                    yield lambda x2=x2, v=values, meta=metadata, b=bias, y=y, n=n, m=m, p=precision: (
                        nm_matmul.nm_linear(x2, v, meta, b, y, n, m, p))
                yield lambda y=y, v=values, meta=metadata, x2=x2, n=n, m=m, p=precision: (
                    nm_matmul.nm_linear_grad_input(y, v, meta, x2, n, m, p))
                yield lambda y=y, x2=x2, meta=metadata, v=values, n=n, m=m, p=precision: (
                    nm_matmul.nm_linear_grad_values(y, x2, meta, v, n, m, p))
    for n, m in ((0, 0), *ONE_N_PER_M):  # SparseGPT's block loop: fp32 working copy, default blocksize 128
        w, err = torch.zeros(64, 128), torch.zeros(64, 128)
        hinv, keep = torch.eye(128), torch.zeros(64, 128, dtype=torch.uint8)
        yield lambda w=w, h=hinv, e=err, k=keep, n=n, m=m: obs.sparsegpt_block_(w, h, e, k, n, m)


def config_label(config) -> str:
    """How a ``triton.Config`` reads in a variant, the table and the JSON (``BLOCK=1024 num_warps=4 ...``)."""
    return " ".join(f"{k}={v}" for k, v in (*config.kwargs.items(), ("num_warps", config.num_warps),
                                             ("num_stages", config.num_stages)))


def _extra_config_variant(kernel, args: tuple, kwargs: dict) -> bool:
    """Whether an autotuned launch is compiled with its extra configs (all but the first it may pick): only
    the variant of each code path that holds the most registers (see the module docstring)."""
    values = dict(zip([param.name for param in kernel.params], args)) | kwargs
    if any(str(getattr(value, "dtype", "")) == "torch.bfloat16" for value in values.values()):
        return False  # fp16 compiles the same code paths
    if "N" in values and "M" in values and values["N"] != values["M"] - 1:
        return False  # fewer trips through the same unrolled loops
    if values.get("INPUT_PRECISION") == "tf32":
        return False  # IEEE fp32 holds more registers on the same tiles (FMA operands, not MMA fragments)
    return values.get("HAS_BIAS", True)  # without bias: one load fewer


def record_launches() -> list[Launch]:
    """The distinct launches the launchers make (see the module docstring)."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    recorded: list[tuple[JITFunction, tuple, dict, str]] = []  # kernel, arguments, constexprs, config label
    originals = JITFunction.run, Autotuner.run

    def record(self, *args, grid, warmup, **kwargs):  # grid and warmup are the launcher's: unused
        recorded.append((self, args, kwargs, ""))

    def record_configs(self, *args, grid, warmup, **kwargs):
        # Replaces Autotuner.run before it times anything: one launch per config it may pick for this call
        # (its early_config_prune applied), each with the config's constexprs, warps and stages.
        assert isinstance(self.fn, JITFunction), f"{self.base_fn.__name__}: autotune directly over @triton.jit"
        self.nargs = dict(zip(self.arg_names, args))
        configs = self.prune_configs(kwargs)
        self.nargs = None
        for index, config in enumerate(configs):
            if index and not _extra_config_variant(self.fn, args, kwargs):
                continue
            merged = kwargs | config.all_kwargs()
            grid(dict(zip(self.arg_names, args)) | merged)  # the grid reads its tile from the config
            recorded.append((self.fn, args, merged, config_label(config)))

    JITFunction.run, Autotuner.run = record, record_configs
    try:
        for call in _launcher_calls():
            call()
    finally:
        JITFunction.run, Autotuner.run = originals
    launches: dict[Launch, None] = {}
    for kernel, args, kwargs, config in recorded:
        names = [param.name for param in kernel.params]
        values = dict(zip(names, args)) | kwargs
        signature, constexprs = [], []
        for param in kernel.params:
            value = values[param.name]
            if param.is_constexpr:
                signature.append((param.name, "constexpr"))
                constexprs.append((param.name, value))
            else:
                signature.append((param.name, _argument_type(value)))
        source = kernel.src
        uses_dot = "tl.dot(" in source
        consts = dict(constexprs)
        pointer_types = {t for _, t in signature if t.startswith("*")}
        half = bool(pointer_types & {"*fp16", "*bf16"})
        expects_mma = uses_dot and ((half and not consts.get("DOT_FP32", False))
                                    or consts.get("INPUT_PRECISION") == "tf32")
        options = tuple((k, kwargs[k]) for k in ("num_warps", "num_stages") if k in kwargs)
        launches[Launch(kernel.fn.__name__, tuple(signature), tuple(constexprs), options, uses_dot,
                        expects_mma, config)] = None
    return list(launches)


# ------------------------------------------------------------------------------------------- compiling

def kernel_modules() -> list[ModuleType]:
    """Every module of :mod:`robustprune.kernels` (a new one is covered without being listed here)."""
    import robustprune.kernels as package

    return [importlib.import_module(f"{package.__name__}.{info.name}") for info in pkgutil.iter_modules(package.__path__)]


def _kernel_function(name: str):
    """The @triton.jit function ``name`` (under its autotuner, for an autotuned kernel)."""
    from triton.runtime.jit import JITFunction

    for module in kernel_modules():
        if hasattr(module, name):
            kernel = getattr(module, name)
            while not isinstance(kernel, JITFunction):
                kernel = kernel.fn
            return kernel
    raise KeyError(name)


def compile_launch(launch: Launch, arch: int) -> Compiled:
    """Compile ``launch`` for ``sm_<arch>`` and read registers, spills, shared memory and MMA use."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    result = Compiled(launch.kernel, launch.variant, arch, ok=False, uses_dot=launch.uses_dot,
                      expects_mma=launch.expects_mma, config=launch.config)
    start = time.perf_counter()
    log = io.StringIO()
    try:
        source = ASTSource(fn=_kernel_function(launch.kernel), signature=dict(launch.signature),
                           constexprs=dict(launch.constexprs))
        # TRITON_DUMP_PTXAS_LOG (set in main) makes triton print its own `ptxas -v` report: read it here
        # rather than assembling the PTX a second time
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=dict(launch.options))
    except Exception as error:  # noqa: BLE001 - a compile failure is the finding: report it, compile the others
        lines = str(error).strip().splitlines()
        result.error = f"{type(error).__name__}: {lines[-1] if lines else ''}"
        result.seconds = time.perf_counter() - start
        return result
    ptx = compiled.asm["ptx"]
    result.shared_bytes = int(getattr(compiled.metadata, "shared", 0))
    result.has_mma = bool(MMA.search(ptx))
    result.has_tf32_mma = bool(TF32_MMA.search(ptx))
    registers = re.findall(r"Used (\d+) registers", log.getvalue())
    if not registers:
        result.error = "no ptxas report (is TRITON_DUMP_PTXAS_LOG=1 set, and the kernel cached from another run?)"
    else:
        result.registers = max(int(r) for r in registers)
        result.spill_bytes = sum(int(b) for b in re.findall(r"(\d+) bytes spill (?:stores|loads)", log.getvalue()))
        result.ok = True
    result.seconds = time.perf_counter() - start
    return result


_LAUNCHES: list[Launch] = []


def _compile_index(job: tuple[int, int]) -> Compiled:
    index, arch = job
    return compile_launch(_LAUNCHES[index], arch)


def compile_all(archs: tuple[int, ...] = ARCHS, workers: int | None = None) -> list[Compiled]:
    """Every distinct launch compiled for every target (in ``workers`` processes; default: the cores)."""
    global _LAUNCHES
    _LAUNCHES = record_launches()
    jobs = [(index, arch) for index in range(len(_LAUNCHES)) for arch in archs]
    # the largest group sizes first (their unrolled loops compile longest), so that the workers finish together
    jobs.sort(key=lambda job: -dict(_LAUNCHES[job[0]].constexprs).get("M", 0))
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        return [_compile_index(job) for job in jobs]
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_compile_index, jobs))


def _limits(group: list[Compiled]) -> str:
    """The largest registers, spill bytes and shared memory among ``group``'s compiled variants (table cells)."""
    ok = [r for r in group if r.ok]
    return (f"{max((r.registers for r in ok), default=0)} | {max((r.spill_bytes for r in ok), default=0)} | "
            f"{max((r.shared_bytes for r in ok), default=0)}")


def table(results: list[Compiled]) -> str:
    """Markdown: per kernel and target, variants, autotune configs, the largest registers / spills / shared
    memory, MMA; then the same per autotune config."""
    import triton

    rows: dict[tuple[str, int], list[Compiled]] = {}
    configs: dict[tuple[str, str, int], list[Compiled]] = {}
    for result in results:
        rows.setdefault((result.kernel, result.arch), []).append(result)
        if result.config:
            configs.setdefault((result.kernel, result.config, result.arch), []).append(result)
    lines = [(f"Triton {triton.__version__}, compiled ahead of time on a CPU-only machine "
              f"(`python -m bench.cuda_compile`); largest value over each kernel's variants."), "",
             ("| kernel | target | variants | autotune configs | max registers | spill bytes "
              "| max shared memory (bytes) | tensor-core MMA |"),
             "|---|---|---|---|---|---|---|---|"]
    for (kernel, arch), group in sorted(rows.items()):
        ok = [r for r in group if r.ok]
        dots = [r for r in ok if r.uses_dot]
        mma = ("-" if not dots else
               f"{sum(r.has_mma for r in dots if r.expects_mma)}/{sum(r.expects_mma for r in dots)} half/TF32 "
               f"variants; IEEE fp32: {'none' if not any(r.has_mma for r in dots if not r.expects_mma) else 'SOME'}")
        failed = len(group) - len(ok)
        tuned = len({r.config for r in group if r.config}) or "fixed"
        lines.append(f"| `{kernel}` | sm_{arch} | {len(group)}{f' ({failed} FAILED)' if failed else ''} | {tuned} | "
                     f"{_limits(group)} | {mma} |")
    lines += ["", "Per autotune config (`triton.autotune` on CUDA; the interpreter runs each kernel's default):", "",
              "| kernel | config | target | variants | max registers | spill bytes | max shared memory (bytes) |",
              "|---|---|---|---|---|---|---|"]
    for (kernel, config, arch), group in sorted(configs.items()):
        lines.append(f"| `{kernel}` | {config} | sm_{arch} | {len(group)} | {_limits(group)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cuda_compile", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), help="compute capabilities (80 90)")
    parser.add_argument("--out", type=Path, help="write the Markdown table here")
    parser.add_argument("--json", type=Path, help="write every compile's result here")
    parser.add_argument("--workers", type=int, default=None, help="compile processes (default: the cores)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("bench.cuda_compile: unset TRITON_INTERPRET (the interpreter replaces the kernels it compiles)",
              file=sys.stderr)
        return 2
    # triton 3.9 warns that its FP-fusion default will change: keep today's (fused multiply-add) explicitly
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
    # a cached kernel is not assembled again, so it has no ptxas report: compile into a fresh cache
    cache = tempfile.mkdtemp(prefix="cuda-compile-")
    os.environ["TRITON_CACHE_DIR"] = cache
    start = time.perf_counter()
    try:
        results = compile_all(tuple(args.arch), args.workers)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    text = table(results)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"problems": r.problems} for r in results], indent=1))
    problems = [(r, p) for r in results for p in r.problems]
    for result, problem in problems:
        print(f"{result.kernel} sm_{result.arch} [{result.variant}]: {problem}", file=sys.stderr)
    print(f"{len(results)} compiles ({len(results) // len(args.arch)} launches x {len(args.arch)} targets) in "
          f"{time.perf_counter() - start:.0f} s; {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
