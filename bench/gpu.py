"""The first-GPU benchmark: ``python -m bench.gpu [--quick] [--out FILE.md]``, one command on a CUDA machine;
and the prepared acceptance run: ``python -m bench.gpu --acceptance [--out DIR]``.

Runs every robustprune op on BERT-base and LLaMA-7B layer shapes and prints, per workload, our time, the
bytes and FLOPs of each launch's model (the models documented next to the kernels), the bandwidth and
FLOP rate they reach as a fraction of the device's peak (``triton.testing.get_dram_gbps`` /
``get_max_tensorcore_tflops``), and the time of what a user would otherwise run:

- N:M masks (2:4, 4:8; fp16, fp32) against ``topk`` + ``scatter_``;
- the exact global magnitude threshold and mask over BERT-base's 72 Linears against ``torch.kthvalue`` on
  the concatenated magnitudes (and ``torch.nn.utils.prune.global_unstructured`` without ``--quick``);
- ``nm_linear`` 2:4 at batch 1 / 16 / 128 against dense ``F.linear`` and, in fp16, against PyTorch's
  ``to_sparse_semi_structured`` 2:4 (cuSPARSELt / CUTLASS);
- SparseGPT's OBS update against the per-column Algorithm 1 (``sparsegpt_layer``);
- the fused hard-concrete gate (forward + backward) against the same formula as separate torch ops.

Times are ``triton.testing.do_bench`` medians (CUDA events, L2 flushed). The Markdown it prints (and
writes with ``--out``) is the format of the README's GPU table. Without CUDA it exits with one line.
``--smoke`` runs the same code on the CPU with tiny shapes (no peaks, wall-clock medians): how the
tests check the harness on a machine without a GPU.

``--acceptance`` (:mod:`bench.acceptance`) is what a GPU session runs, one command within 8 minutes on an
H100: each as a child process, the CUDA kernel tests (``TRITON_INTERPRET=0 python -m pytest -m cuda`` over
the kernel test modules: every kernel against the CPU path at small ragged and at BERT-base / LLaMA-7B
shapes, to the error bounds of its arithmetic), this benchmark at ``--quick``, and ``robustprune run
essential-sparsity --quick --device cuda`` and ``robustprune run robust-tickets --quick --device cuda``. The
children write the ops' launch counters and the devices of the tensors each op received
(``ROBUSTPRUNE_LAUNCH_LOG``); the verdict requires every op called to have run its Triton kernel (no CPU
kernel), on CUDA tensors. It writes ``DIR/acceptance.md`` (pass / fail per part, wall times, device, torch /
CUDA / Triton versions, launches per op), ``DIR/acceptance.json``, the benchmark table ``DIR/bench-gpu.md``
and each child's output under ``DIR/logs/`` (default DIR: ``results/acceptance``); exit status 0 only when
everything passed. ``--acceptance --smoke`` runs the same driver on the CPU with the Triton interpreter
(the interpreted kernel tests, ``--smoke`` here, the two sweeps on a 2-layer BERT): how the tests check it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.hard_concrete import separate_ops_gate
from bench.timing import Case, fmt_time, median_times
from bench.workloads import bert_base_shapes, topk_scatter_nm

SHAPES = {  # [out, in]
    "BERT-base": ((768, 768), (3072, 768), (768, 3072)),
    "LLaMA-7B": ((4096, 4096), (11008, 4096), (4096, 11008)),
}
SMOKE_SHAPES = {"tiny": ((64, 128), (96, 64))}
NM_PATTERNS = ((2, 4), (4, 8))
BATCHES = (1, 16, 128)


@dataclass(frozen=True)
class Device:
    """Where the benchmark runs and what it can do at most (None where unknown, e.g. on the CPU)."""

    torch_device: torch.device
    name: str
    peak_bytes_per_s: float | None
    peak_flops: Callable[[torch.dtype], float | None]
    repeats: int = 5  # timed calls per case (the median is reported)

    @classmethod
    def detect(cls, smoke: bool) -> Device:
        if smoke:  # the harness is what a smoke run checks: one timed call per case (the interpreter is slow)
            return cls(torch.device("cpu"), "CPU (smoke run: tiny shapes, no peaks)", None, lambda dtype: None,
                       repeats=1)
        import triton.testing
        from triton.runtime import driver

        properties = driver.active.utils.get_device_properties(torch.cuda.current_device())

        def peak_flops(dtype: torch.dtype) -> float | None:
            try:  # tensor-core peak at the SM clock (kHz), as triton's own table computes it
                return float(triton.testing.get_max_tensorcore_tflops(dtype, properties["sm_clock_rate"])) * 1e12
            except (AssertionError, RuntimeError, KeyError):  # a dtype or GPU outside triton's table
                return None

        return cls(torch.device("cuda"), torch.cuda.get_device_name(), float(triton.testing.get_dram_gbps()) * 1e9,
                   peak_flops)

    def time(self, fn: Callable[[], object], setup: Callable[[], tuple] | None = None,
             repeats: int | None = None) -> float:
        """Median seconds of ``fn``: triton's ``do_bench`` on CUDA; otherwise (or with a ``setup``, run untimed
        before each call, for ops that work in place) one warm-up call, then ``repeats`` timed calls (default:
        the device's)."""
        if self.torch_device.type == "cuda" and setup is None:
            import triton.testing

            return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")) / 1e3
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize()
            timed = Case(lambda *args: (fn(*args), torch.cuda.synchronize()), setup or tuple)
        else:
            timed = Case(fn, setup or tuple)
        return median_times({"ours": timed}, repeats or self.repeats)["ours"]


@dataclass(frozen=True)
class Measurement:
    """One workload: our time and cost model, and the baseline's time."""

    op: str
    workload: str
    dtype: str
    ours_s: float
    bytes: int
    flops: int
    baseline: str
    baseline_s: float | None


def _weight(shape: tuple[int, int], dtype: torch.dtype, device: torch.device, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.empty(shape, device=device).normal_(0.0, 0.02, generator=generator).to(dtype)


def nm_masks(device: Device, shapes: dict) -> Iterator[Measurement]:
    from robustprune.ops import nm_mask

    for family, family_shapes in shapes.items():
        for shape in family_shapes:
            for dtype in (torch.float16, torch.float32):
                w = _weight(shape, dtype, device.torch_device)
                for n, m in NM_PATTERNS:
                    ours = device.time(lambda w=w, n=n, m=m: nm_mask(w, n, m))
                    base = device.time(lambda w=w, n=n, m=m: topk_scatter_nm(w, n, m))
                    yield Measurement(f"N:M mask {n}:{m}", f"{family} {shape[0]}x{shape[1]}", str(dtype)[6:], ours,
                                      w.numel() * (w.element_size() + 1), 0, "topk + scatter_", base)


def global_threshold(device: Device, quick: bool, smoke: bool) -> Iterator[Measurement]:
    from robustprune.kernels.radix_histogram import radix_histogram_bytes
    from robustprune.ops import magnitude_mask_, magnitude_thresholds
    from robustprune.sparse_ops.magnitude import TRITON_DIGIT_PLAN

    shapes = SMOKE_SHAPES["tiny"] if smoke else bert_base_shapes()
    weights = [_weight(shape, torch.float32, device.torch_device, seed=i) for i, shape in enumerate(shapes)]

    def ours(copies: list[torch.Tensor]) -> None:
        thresholds, quota = magnitude_thresholds(copies, [0.5])
        for i, w in enumerate(copies):
            magnitude_mask_(w, float(thresholds[0]), int(quota[0, i]), True)

    numel = sum(w.numel() for w in weights)
    passes = len(TRITON_DIGIT_PLAN)
    read = sum(radix_histogram_bytes(w.numel(), 4, 1, 1 << bits)[0] for w in weights for _, bits in TRITON_DIGIT_PLAN)
    cost = read + numel * 4 * 2 + numel // 8  # the digit passes, then the mask pass reads and writes W, writes bits
    ours_s = device.time(ours, setup=lambda: ([w.clone() for w in weights],))
    kth = int(0.5 * numel)
    base_s = device.time(lambda: torch.cat([w.abs().view(-1) for w in weights]).kthvalue(kth))
    workload = f"{'tiny' if smoke else 'BERT-base'}, {len(weights)} matrices, {numel / 1e6:.1f}M weights"
    yield Measurement(f"global magnitude 50 % ({passes} digit passes + mask)", workload, "float32", ours_s, cost, 0,
                      "torch.cat + kthvalue (threshold only)", base_s)
    if not quick:
        from bench.workloads import torch_prune_global

        base_s = device.time(lambda: torch_prune_global(weights, 0.5), repeats=1)
        yield Measurement("global magnitude 50 %", workload, "float32", ours_s, cost, 0,
                          "torch.nn.utils.prune.global_unstructured", base_s)


def nm_linear(device: Device, shapes: dict) -> Iterator[Measurement]:
    from robustprune.kernels.nm_matmul import nm_linear_cost, nm_linear_kernel
    from robustprune.ops import nm_compress, nm_mask
    from robustprune.sparse_ops.nm_linear import nm_linear as sparse_linear

    for family, family_shapes in shapes.items():
        for shape in family_shapes:
            for dtype in (torch.float16, torch.float32):
                w = _weight(shape, dtype, device.torch_device)
                w = w * nm_mask(w, 2, 4)
                values, metadata = nm_compress(w, 2, 4)
                semi = _semi_structured(w) if dtype == torch.float16 else None
                for batch in BATCHES:
                    x = _weight((batch, shape[1]), dtype, device.torch_device, seed=1)
                    with torch.no_grad():
                        ours = device.time(lambda x=x, v=values, md=metadata: sparse_linear(x, v, md, None, 2, 4))
                        dense = device.time(lambda x=x, w=w: F.linear(x, w))
                        label = f"{family} {shape[0]}x{shape[1]}, batch {batch}"
                        # the bytes model needs the tile the autotuner picked for this launch (CUDA only)
                        best = getattr(nm_linear_kernel, "best_config", None) if w.is_cuda else None
                        tile = {"block_b": best.kwargs["BLOCK_B"], "block_o": best.kwargs["BLOCK_O"]} if best else {}
                        if best:
                            print(f"  note: nm_linear at {label}, {str(dtype)[6:]}: {best}", file=sys.stderr)
                        cost, flops = nm_linear_cost(batch, shape[0], shape[1], 2, 4, w.element_size(), **tile)
                        yield Measurement("nm_linear 2:4", label, str(dtype)[6:], ours, cost, flops, "dense F.linear",
                                          dense)
                        if semi is not None:
                            try:  # cuSPARSELt / CUTLASS constrain shapes: a refused one is a note, not a crash
                                semi_s = device.time(lambda x=x, s=semi: F.linear(x, s))
                            except Exception as error:
                                print(f"  note: to_sparse_semi_structured at {label}: {type(error).__name__}: "
                                      f"{error}", file=sys.stderr)
                                continue
                            yield Measurement("nm_linear 2:4", label, str(dtype)[6:], ours, cost, flops,
                                              "to_sparse_semi_structured 2:4", semi_s)


def _semi_structured(w: torch.Tensor):
    """PyTorch's 2:4 sparse tensor of ``w`` (CUDA fp16, Ampere or newer), or None where it is unavailable."""
    if w.device.type != "cuda":
        return None
    try:
        from torch.sparse import to_sparse_semi_structured

        return to_sparse_semi_structured(w)
    except Exception as error:  # older GPU or build: say so in the output rather than fail the run
        print(f"  note: to_sparse_semi_structured unavailable ({type(error).__name__}: {error})", file=sys.stderr)
        return None


def sparsegpt(device: Device, smoke: bool) -> Iterator[Measurement]:
    from robustprune.sparse_ops.obs import sparsegpt_hinv, sparsegpt_prune_
    from robustprune.sparse_ops.sparsegpt_algorithm import sparsegpt_layer

    shapes = SMOKE_SHAPES["tiny"] if smoke else SHAPES["BERT-base"]
    for shape in shapes:
        w = _weight(shape, torch.float32, device.torch_device)
        x = _weight((2 * shape[1], shape[1]), torch.float32, device.torch_device, seed=2) * 50
        hinv, _ = sparsegpt_hinv(2 * x.t() @ x / x.shape[0])
        blocksize = min(128, shape[1])
        ours = device.time(lambda w: sparsegpt_prune_(w, hinv, 0.5, blocksize=blocksize), setup=lambda: (w.clone(),))
        base = device.time(lambda: sparsegpt_layer(w, hinv, 0.5, blocksize=blocksize), repeats=1)
        rows, columns = shape
        flops = 2 * rows * columns * blocksize + 2 * rows * columns * max(0, columns - blocksize) // 2
        yield Measurement("SparseGPT OBS update 50 %", f"{shape[0]}x{shape[1]}", "float32", ours,
                          4 * rows * columns * 3 + 4 * columns * columns, flops, "per-column Algorithm 1", base)


def hard_concrete(device: Device, shapes: dict) -> Iterator[Measurement]:
    from robustprune.ops import hard_concrete_gate, sample_hard_concrete_noise

    shape = next(iter(shapes.values()))[0]
    for dtype in (torch.float32, torch.bfloat16):
        w = _weight(shape, dtype, device.torch_device).requires_grad_()
        log_alpha = _weight(shape, torch.float32, device.torch_device, seed=3).requires_grad_()
        noise = sample_hard_concrete_noise(log_alpha)

        def step(gate: Callable) -> None:
            gate(w, log_alpha, noise).sum().backward()

        ours = device.time(lambda: step(lambda a, b, c: hard_concrete_gate(a, b, c)))
        base = device.time(lambda: step(separate_ops_gate))
        cost = w.numel() * (3 * w.element_size() + 4 * 4)  # forward + backward, the kernel docstring's model
        yield Measurement("hard-concrete gate fwd + bwd", f"{shape[0]}x{shape[1]}", str(dtype)[6:], ours, cost,
                          40 * w.numel(), "separate torch ops", base)


def table(device: Device, measurements: list[Measurement]) -> str:
    """The Markdown the README's GPU table is filled from."""
    lines = [f"Device: {device.name}; peak DRAM bandwidth "
             f"{'-' if device.peak_bytes_per_s is None else f'{device.peak_bytes_per_s / 1e9:.0f} GB/s'}", "",
             "| op | workload | dtype | ours | GB/s (of peak) | TFLOP/s (of peak) | baseline | baseline time | speedup |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in measurements:
        bandwidth = r.bytes / r.ours_s
        of_peak = "" if device.peak_bytes_per_s is None else f" ({bandwidth / device.peak_bytes_per_s:.2f})"
        rate = "-"
        if r.flops:
            peak = device.peak_flops(getattr(torch, r.dtype))
            rate = f"{r.flops / r.ours_s / 1e12:.2f}" + ("" if peak is None else f" ({r.flops / r.ours_s / peak:.2f})")
        base = "-" if r.baseline_s is None else fmt_time(r.baseline_s)
        speedup = "-" if r.baseline_s is None else f"{r.baseline_s / r.ours_s:.2f}x"
        lines.append(f"| {r.op} | {r.workload} | {r.dtype} | {fmt_time(r.ours_s)} | {bandwidth / 1e9:.1f}{of_peak} | "
                     f"{rate} | {r.baseline} | {base} | {speedup} |")
    return "\n".join(lines) + "\n"


def run(quick: bool, smoke: bool) -> tuple[Device, list[Measurement]]:
    device = Device.detect(smoke)
    shapes = SMOKE_SHAPES if smoke else (dict(SHAPES) if not quick else {"BERT-base": SHAPES["BERT-base"]})
    measurements = [*nm_masks(device, shapes), *global_threshold(device, quick, smoke), *nm_linear(device, shapes),
                    *sparsegpt(device, smoke), *hard_concrete(device, shapes)]
    return device, measurements


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="BERT-base shapes only, no global_unstructured")
    parser.add_argument("--out", help="also write the Markdown table to this file (with --acceptance: the "
                        "directory of the summary, default results/acceptance)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: checks the harness")
    parser.add_argument("--acceptance", action="store_true", help="the acceptance run: CUDA kernel tests, this "
                        "benchmark at --quick and two --quick sweeps on CUDA, checked by the ops' launch counters")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("bench.gpu: no CUDA device here (torch.cuda.is_available() is False); run it on a machine with an "
              "NVIDIA GPU and a CUDA build of torch", file=sys.stderr)
        return 1
    if args.acceptance:
        from pathlib import Path

        from bench.acceptance import run_acceptance

        return 0 if run_acceptance(Path(args.out or "results/acceptance"), args.smoke) else 1
    device, measurements = run(args.quick, args.smoke)
    text = table(device, measurements)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
