"""Every native kernel compiles for the CPUs users have, and its object code needs nothing from the process but
the allowed symbols (native.ALLOWED_SYMBOLS: memcpy / memmove / memset and the GOT). A kernel that needed,
say, ``__extendhfsf2`` (fp16 -> fp32 without F16C, only in GCC >= 12's libgcc) or ``rintf`` would make the
JIT abort the process where the symbol is missing.

Targets: x86-64 baseline (SSE2 only: no F16C, no AVX), x86-64-v3 (AVX2, F16C, FMA), x86-64-v4 (AVX-512) and
AArch64 (Neoverse N1). Only ELF triples: the symbol reader parses ELF objects.
"""

import struct

import numpy as np
import pytest
import torch
from llvmlite import ir

from robustprune.sparse_ops import cpu_threads, native, nm_linear_cpu, nm_mask_cpu
from robustprune.sparse_ops.native import I16, I32, Target

_V3 = "+avx,+avx2,+bmi,+bmi2,+f16c,+fma,+lzcnt,+movbe,+popcnt,+sse4.2"
TARGETS = {
    "x86-64": Target("x86_64-unknown-linux-gnu", "x86-64"),
    "x86-64-v3": Target("x86_64-unknown-linux-gnu", "x86-64-v3", _V3),
    "x86-64-v4": Target("x86_64-unknown-linux-gnu", "x86-64-v4", _V3 + ",+avx512f,+avx512vl,+avx512bw,+avx512dq,+avx512cd"),
    "aarch64": Target("aarch64-unknown-linux-gnu", "neoverse-n1"),
}
# Patterns of the decode kernel: lanes a multiple of n (the permutation kinds) and not (gather only).
LINEAR_PATTERNS = [(2, 4), (4, 8), (2, 8), (8, 16), (3, 8)]


def kernel_modules(target: Target):
    """(name, IR module) of every native kernel ``target`` runs."""
    yield "team member", cpu_threads.build_team(target)
    for m in nm_mask_cpu.GROUP_SIZES:
        for bits in nm_mask_cpu.SCORE_BITS:
            yield f"nm_mask m={m} i{bits}", nm_mask_cpu.build(m, bits, target)
    for kind in nm_linear_cpu.kinds_for(target):
        for n, m in LINEAR_PATTERNS:
            if kind != "gather" and nm_linear_cpu.LANES[kind] % n:
                continue
            for value_format in nm_linear_cpu.VALUE_FORMATS.values():
                yield f"nm_linear {kind} {n}:{m} {value_format}", nm_linear_cpu.build(kind, n, m, value_format, target)


def test_kinds_follow_the_target():
    assert nm_linear_cpu.kinds_for(TARGETS["x86-64"]) == ("gather",)
    assert nm_linear_cpu.kinds_for(TARGETS["x86-64-v3"]) == ("avx2", "gather")
    assert nm_linear_cpu.kinds_for(TARGETS["x86-64-v4"]) == ("avx512", "avx2", "gather")
    assert nm_linear_cpu.kinds_for(TARGETS["aarch64"]) == ("gather",)
    assert not nm_linear_cpu.half_instructions(TARGETS["x86-64"])
    assert nm_linear_cpu.half_instructions(TARGETS["x86-64-v3"]) and nm_linear_cpu.half_instructions(TARGETS["aarch64"])
    with pytest.raises(ValueError, match="kind 'avx2' does not run on"):
        nm_linear_cpu.build("avx2", 2, 4, "fp32", TARGETS["aarch64"])


def _machine(code: bytes) -> int:
    return struct.unpack_from("<H", code, 0x12)[0]  # e_machine: 62 x86-64, 183 AArch64


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TARGETS))
def test_every_kernel_compiles_for_the_target_with_allowed_symbols_only(name):
    target = TARGETS[name]
    compiled = 0
    for kernel, module in kernel_modules(target):
        code = native.compile_object(module, target)
        assert _machine(code) == (183 if target.arch == "aarch64" else 62), kernel
        extra = native.undefined_symbols(code) - native.ALLOWED_SYMBOLS
        assert not extra, f"{kernel} for {name} needs {sorted(extra)}"
        compiled += 1
    assert compiled >= 1 + 6 + 5 * 3  # team member, masks, and at least the gather decode kernels in three formats


@pytest.mark.slow
def test_team_member_and_two_kernels_per_target_compile():
    """A quick look at each target: the team member, the smallest mask kernel, fp16 decode."""
    for target in TARGETS.values():
        for module in (cpu_threads.build_team(target), nm_mask_cpu.build(4, 16, target),
                       nm_linear_cpu.build("gather", 2, 4, "fp16", target)):
            code = native.compile_object(module, target)
            assert not native.undefined_symbols(code) - native.ALLOWED_SYMBOLS


def test_baseline_fp16_widening_is_exact_for_every_pattern():
    """The integer fp16 -> fp32 conversion the kernels use without F16C, run here on all 65536 patterns."""
    lanes = 8
    module = native.new_module("test_half_to_float")
    function = ir.Function(module, native.KERNEL_TYPE, "widen")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    arguments, lo, hi = function.args
    layout = native.Arguments("source", "target")
    read = layout.reader(builder, arguments)
    source, target = read("source", pointer=True), read("target", pointer=True)
    with native.loop(builder, lo, hi, lanes) as index:
        bits = builder.load(native.address(builder, I16, source, index), typ=ir.VectorType(I16, lanes), align=2)
        wide = nm_linear_cpu._widen(builder, bits, "fp16", lanes, native_half=False)
        builder.store(builder.bitcast(wide, ir.VectorType(I32, lanes)), native.address(builder, I32, target, index),
                      align=4)  # numpy's buffer is not aligned to the vector
    builder.ret_void()
    assert "fpext" not in str(module)
    widen = native.KERNEL_CTYPE(native.load(module).address("widen"))
    patterns = np.arange(1 << 16, dtype=np.uint16)
    out = np.empty(1 << 16, dtype=np.uint32)
    block = layout.pack(source=patterns.ctypes.data, target=out.ctypes.data)  # alive through the call
    widen(block.ctypes.data, 0, 1 << 16)
    expected = torch.from_numpy(patterns.view(np.int16)).view(torch.float16).float()
    got = torch.from_numpy(out.view(np.int32)).view(torch.float32)
    finite = torch.isfinite(expected) | torch.isinf(expected)
    assert torch.equal(got[finite].view(torch.int32), expected[finite].view(torch.int32))  # bit for bit
    assert bool(torch.isnan(got[~finite]).all())


def test_decode_without_f16c_equals_decode_with_it():
    """The fp16 decode kernel built as for a CPU without F16C (integer widening), run here, against the host's."""
    host = native.host()
    no_half = Target(host.triple, host.cpu, "")  # no features named: the gather kind, integer widening
    assert not nm_linear_cpu.half_instructions(no_half) or host.arch == "aarch64"
    g = torch.Generator().manual_seed(3)
    w = torch.randn(64, 256, generator=g).half()
    w[0, :8] = torch.tensor([6e-8, -6e-8, 1e-5, 65504.0, -0.0, 2.0 ** -14, 3e-5, 1.0], dtype=torch.half)
    from robustprune.ops import nm_compress, nm_mask

    values, metadata = nm_compress(w * nm_mask(w, 2, 4), 2, 4)
    x = torch.randn(2, 256, generator=g)
    ours = nm_linear_cpu.nm_linear_forward(x, values, metadata, 2, 4, "gather", target=no_half)
    reference = nm_linear_cpu.nm_linear_forward(x, values, metadata, 2, 4, "gather")
    # Both compiled for this CPU, the values widened exactly either way: the same sums, bit for bit.
    assert torch.equal(ours, reference)
