"""Native CPU kernels: LLVM IR written with llvmlite, compiled once per machine, cached on disk as machine code.

A kernel module is LLVM IR built with ``llvmlite.ir``. The first process on a machine that needs it
optimises it (LLVM's level-3 pipeline, loop and SLP vectorisers on) and compiles it for the host CPU, then
stores the object code in the cache directory; every later process loads that object with llvmlite's
MCJIT (milliseconds; no C compiler, no numba). Kernels are plain C-ABI functions that never call back
into Python, run through ctypes (which releases the GIL for the call) or on an OpenMP team
(:func:`robustprune.sparse_ops.cpu_threads.run_split`).

Cache directory: ``$ROBUSTPRUNE_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/robustprune/kernels``, else
``~/.cache/robustprune/kernels``. An entry's name hashes the IR text, the CPU's name and features and the
LLVM version, so a changed kernel or another CPU never loads a stale object; each file carries the
SHA-256 of its object code and a damaged one is rebuilt. Where the directory cannot be written the kernel
is compiled in memory, in every process.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir

I8, I16, I32, I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
F32 = ir.FloatType()
CACHE_VARIABLE = "ROBUSTPRUNE_KERNEL_CACHE"
# Bumped when the way objects are built changes (not their IR): old cache entries are then ignored.
_FORMAT = b"robustprune-native-1\n"

_lock = threading.Lock()
_libraries: dict[str, NativeLibrary] = {}


class NativeLibrary:
    """Machine code of one IR module, loaded into this process (kept alive as long as the process)."""

    def __init__(self, engine: llvm.ExecutionEngine, from_cache: bool):
        self._engine = engine
        self.from_cache = from_cache  # loaded from the cache directory rather than compiled here

    def address(self, symbol: str) -> int:
        address = self._engine.get_function_address(symbol)
        if not address:
            raise KeyError(f"no function {symbol!r} in this native library")
        return address


@functools.cache
def target_machine() -> llvm.TargetMachine:
    """LLVM's target machine for this CPU (its name and every feature it reports)."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3, reloc="pic",
        codemodel="jitdefault")


def new_module(name: str) -> ir.Module:
    """An empty IR module for this machine's target (triple and data layout)."""
    module = ir.Module(name=name)
    module.triple = llvm.get_process_triple()
    module.data_layout = str(target_machine().target_data)
    return module


def cache_directory() -> Path:
    """Where compiled kernels are stored (see the module docstring)."""
    configured = os.environ.get(CACHE_VARIABLE, "").strip()
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "robustprune" / "kernels"


def _cache_key(ir_text: str) -> str:
    identity = "\n".join([llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(),
                          ".".join(map(str, llvm.llvm_version_info)), llvmlite.__version__, ir_text])
    return hashlib.sha256(_FORMAT + identity.encode()).hexdigest()[:32]


def _compile(ir_text: str) -> bytes:
    module = llvm.parse_assembly(ir_text)
    module.verify()
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = True
    tuning.slp_vectorization = True
    passes = llvm.create_pass_builder(target_machine(), tuning)
    passes.getModulePassManager().run(module, passes)
    return target_machine().emit_object(module)


def _read_cached(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    header_size = len(_FORMAT) + 32
    digest, code = data[len(_FORMAT):header_size], data[header_size:]
    if not data.startswith(_FORMAT) or hashlib.sha256(code).digest() != digest:
        return None  # damaged or from another version: rebuilt
    return code


def _write_cached(path: Path, code: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError:
        return  # not writable: compiled in memory, in every process
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(_FORMAT + hashlib.sha256(code).digest() + code)
        os.replace(temporary, path)  # atomic: concurrent processes see no entry or a whole one
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def load(module: ir.Module) -> NativeLibrary:
    """The machine code of ``module``: from this process, from the cache directory, or compiled now."""
    ir_text = str(module)
    key = _cache_key(ir_text)
    with _lock:
        library = _libraries.get(key)
        if library is not None:
            return library
        path = cache_directory() / f"{module.name}-{key}.o"
        code = _read_cached(path)
        from_cache = code is not None
        if code is None:
            code = _compile(ir_text)
            _write_cached(path, code)
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), target_machine())
        engine.add_object_file(llvm.ObjectFileRef.from_data(code))
        engine.finalize_object()
        library = _libraries[key] = NativeLibrary(engine, from_cache)
        return library


# ------------------------------------------------------------------------------------------- IR helpers

def declare(module: ir.Module, name: str, return_type: ir.Type, *argument_types: ir.Type) -> ir.Function:
    """The function ``name`` of ``module`` (an LLVM intrinsic, or one defined later), declared once."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(return_type, argument_types), name)


def constant_vector(element: ir.Type, values) -> ir.Constant:
    values = list(values)
    return ir.Constant(ir.VectorType(element, len(values)), values)


def splat(builder: ir.IRBuilder, value: ir.Value, lanes: int) -> ir.Value:
    """A vector of ``lanes`` copies of the scalar ``value``."""
    vector = ir.VectorType(value.type, lanes)
    first = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(I32, 0))
    return builder.shuffle_vector(first, ir.Constant(vector, ir.Undefined), constant_vector(I32, [0] * lanes))


def entry_variable(builder: ir.IRBuilder, initial: ir.Value) -> ir.AllocaInstr:
    """A stack slot allocated in the function's entry block (LLVM keeps it in a register), set to
    ``initial`` here."""
    entry = builder.function.entry_basic_block
    with builder.goto_block(entry):
        if entry.instructions:
            builder.position_before(entry.instructions[0])
        slot = builder.alloca(initial.type)
    builder.store(initial, slot)
    return slot


@contextlib.contextmanager
def loop(builder: ir.IRBuilder, start: ir.Value, stop: ir.Value, step: int | ir.Value = 1) -> Iterator[ir.Value]:
    """``for index in range(start, stop, step)`` over i64 (``step`` > 0); the body is built in the block."""
    step = step if isinstance(step, ir.Value) else ir.Constant(I64, step)
    before = builder.block
    header = builder.append_basic_block("loop")
    body = builder.append_basic_block("body")
    done = builder.append_basic_block("done")
    builder.branch(header)
    builder.position_at_end(header)
    index = builder.phi(I64)
    index.add_incoming(start, before)
    builder.cbranch(builder.icmp_signed("<", index, stop), body, done)
    builder.position_at_end(body)
    yield index
    index.add_incoming(builder.add(index, step), builder.block)
    builder.branch(header)
    builder.position_at_end(done)


def argument_reader(builder: ir.IRBuilder, arguments: ir.Value):
    """``read(i, type)``: entry ``i`` of an i64 argument block, as an i64 or (``type`` a pointer) a pointer."""
    def read(index: int, pointer_type: ir.Type | None = None) -> ir.Value:
        value = builder.load(builder.gep(arguments, [ir.Constant(I64, index)], inbounds=True))
        return value if pointer_type is None else builder.inttoptr(value, pointer_type)

    return read


# The C signature every split kernel has: ``void kernel(const int64_t *arguments, int64_t lo, int64_t hi)``.
KERNEL_TYPE = ir.FunctionType(ir.VoidType(), [I64.as_pointer(), I64, I64])
KERNEL_CTYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
