"""Native CPU kernels: LLVM IR written with llvmlite, compiled once per machine, cached on disk as machine code.

A kernel module is LLVM IR built with ``llvmlite.ir`` (opaque pointers: every load and address computation
names its element type). The first process on a machine that needs it optimises it (LLVM's level-3
pipeline, loop and SLP vectorisers on) and compiles it for the host CPU, then stores the object code in the
cache directory; every later process loads that object with llvmlite's MCJIT (milliseconds; no C compiler,
no numba). Kernels are plain C-ABI functions that never call back into Python, run through ctypes (which
releases the GIL for the call) or on an OpenMP team (:func:`robustprune.sparse_ops.cpu_threads.run_split`).

Every failure to build or load a kernel raises :class:`~robustprune.sparse_ops.compiled.KernelBuildError`
(the ops then run their eager torch path). Before the JIT links an object, its undefined symbols are checked
against :data:`ALLOWED_SYMBOLS`: a symbol the process may not have (``__extendhfsf2`` exists only in newer
libgcc) would otherwise abort the process inside LLVM.

Cache directory: ``$ROBUSTPRUNE_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/robustprune/kernels``, else
``~/.cache/robustprune/kernels``; created with mode 0700. Since machine code loaded from it runs in the
process, it is used only when owned by the current user and not writable by group or others (else, and
where it cannot be written, kernels are compiled in memory in every process, with one warning). An entry's
name hashes the IR text, the CPU's name and features and the LLVM version, so a changed kernel or another
CPU never loads a stale object; each file carries the SHA-256 of its object code (integrity, not origin)
and a damaged one is rebuilt. At most :data:`CACHE_MAX_ENTRIES` entries and :data:`CACHE_MAX_BYTES` bytes
are kept: the least recently used go first (a hit refreshes an entry's time).

Debugging: ``ROBUSTPRUNE_KERNEL_DUMP=DIR`` writes each kernel this process builds as ``DIR/<name>.ll`` (the
IR as written), ``<name>.opt.ll`` (after optimisation) and ``<name>.s`` (the assembly), compiling it even
when the cache holds it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import stat
import struct
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from robustprune.sparse_ops.compiled import KernelBuildError

I1, I8, I16, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
F32 = ir.FloatType()
PTR = ir.PointerType()  # opaque: the element type is given where memory is read or addressed
CACHE_VARIABLE = "ROBUSTPRUNE_KERNEL_CACHE"
DUMP_VARIABLE = "ROBUSTPRUNE_KERNEL_DUMP"
CACHE_MAX_ENTRIES = 256
CACHE_MAX_BYTES = 64 << 20
# Undefined symbols a kernel's object code may reference: the C library's memory functions (LLVM turns
# copy and fill loops into calls to them), present in every process, and the global offset table position-
# independent code addresses constants through (the JIT's linker provides it). Anything else is refused
# before loading.
ALLOWED_SYMBOLS = frozenset({"memcpy", "memmove", "memset", "_GLOBAL_OFFSET_TABLE_"})
# Bumped when the way objects are built changes (not their IR): old cache entries are then ignored.
_FORMAT = b"robustprune-native-2\n"

_lock = threading.Lock()
_libraries: dict[str, NativeLibrary] = {}
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------- targets

@dataclass(frozen=True)
class Target:
    """What a kernel is compiled for: an LLVM triple, a CPU name and the features the kernel builders rely
    on (``"+avx2,+f16c"``; the CPU name may imply more, which LLVM uses but the builders do not ask about)."""

    triple: str
    cpu: str
    features: str = ""

    def has(self, feature: str) -> bool:
        """Whether ``feature`` (LLVM's name, e.g. ``"avx512f"``) is among :attr:`features`."""
        return f"+{feature}" in self.features.split(",")

    @property
    def arch(self) -> str:
        return self.triple.split("-", 1)[0]


@functools.cache
def host() -> Target:
    """This machine's target: the process triple, the CPU's name and every feature it reports."""
    try:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
    except RuntimeError as error:
        raise KernelBuildError(f"LLVM has no native target here: {error}") from error
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # some platforms report none: the CPU's name still selects its instructions
        features = ""
    return Target(llvm.get_process_triple(), llvm.get_host_cpu_name(), features)


@functools.cache
def target_machine(target: Target | None = None) -> llvm.TargetMachine:
    """LLVM's target machine for ``target`` (default: this CPU)."""
    target = target or host()
    if target != host():
        llvm.initialize_all_targets()
        llvm.initialize_all_asmprinters()
    try:
        return llvm.Target.from_triple(target.triple).create_target_machine(
            cpu=target.cpu, features=target.features, opt=3, reloc="pic", codemodel="jitdefault")
    except RuntimeError as error:
        raise KernelBuildError(f"LLVM has no target for {target}: {error}") from error


def new_module(name: str, target: Target | None = None) -> ir.Module:
    """An empty IR module for ``target`` (default: this machine): its triple and data layout."""
    target = target or host()
    module = ir.Module(name=name)
    module.triple = target.triple
    module.data_layout = str(target_machine(target).target_data)
    return module


# -------------------------------------------------------------------------------------------- compiling

def _optimised(ir_text: str, target: Target) -> llvm.ModuleRef:
    try:
        module = llvm.parse_assembly(ir_text)
        module.verify()
        tuning = llvm.create_pipeline_tuning_options(speed_level=3)
        tuning.loop_vectorization = True
        tuning.slp_vectorization = True
        passes = llvm.create_pass_builder(target_machine(target), tuning)
        passes.getModulePassManager().run(module, passes)
    except RuntimeError as error:  # llvmlite reports LLVM's parse and verification errors this way
        raise KernelBuildError(f"LLVM refused the IR: {error}") from error
    return module


def compile_object(module: ir.Module | str, target: Target | None = None) -> bytes:
    """Object code of ``module`` (IR module or its text) optimised and compiled for ``target``."""
    target = target or host()
    try:
        return target_machine(target).emit_object(_optimised(str(module), target))
    except RuntimeError as error:
        raise KernelBuildError(f"LLVM could not compile the IR for {target}: {error}") from error


def undefined_symbols(object_code: bytes) -> set[str]:
    """Names the ELF ``object_code`` references but does not define (what a linker must supply)."""
    if object_code[:4] != b"\x7fELF" or object_code[4] != 2 or object_code[5] != 1:
        raise ValueError("not a little-endian ELF64 object")
    section_offset, = struct.unpack_from("<Q", object_code, 0x28)
    entry_size, count = struct.unpack_from("<HH", object_code, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", object_code, section_offset + i * entry_size)
                for i in range(count)]
    names = set()
    for kind, offset, size, link, symbol_size in ((s[1], s[4], s[5], s[6], s[9]) for s in sections):
        if kind != 2:  # SHT_SYMTAB
            continue
        strings = sections[link][4]
        for position in range(offset + symbol_size, offset + size, symbol_size):  # entry 0 is the null symbol
            name_offset, _, _, section_index = struct.unpack_from("<IBBH", object_code, position)
            if section_index == 0 and name_offset:  # SHN_UNDEF
                end = object_code.index(b"\0", strings + name_offset)
                names.add(object_code[strings + name_offset:end].decode())
    return names


def check_symbols(object_code: bytes, name: str) -> None:
    """Raise :class:`KernelBuildError` if ``object_code`` needs a symbol outside :data:`ALLOWED_SYMBOLS`."""
    unexpected = undefined_symbols(object_code) - ALLOWED_SYMBOLS
    if unexpected:
        raise KernelBuildError(f"kernel {name} needs symbols outside the allowed set: {sorted(unexpected)}")


def _dump(name: str, ir_text: str) -> None:
    directory = os.environ.get(DUMP_VARIABLE, "").strip()
    if not directory:
        return
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    optimised = _optimised(ir_text, host())
    (path / f"{name}.ll").write_text(ir_text)
    (path / f"{name}.opt.ll").write_text(str(optimised))
    (path / f"{name}.s").write_text(target_machine().emit_assembly(optimised))


# ----------------------------------------------------------------------------------------------- cache

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


def cache_directory() -> Path:
    """Where compiled kernels are stored (see the module docstring)."""
    configured = os.environ.get(CACHE_VARIABLE, "").strip()
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "robustprune" / "kernels"


def _private(status: os.stat_result) -> bool:
    return status.st_uid == os.geteuid() and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def usable_cache_directory() -> Path | None:
    """:func:`cache_directory`, created if missing, when only this user can write it; else None (warned)."""
    directory = cache_directory()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = directory.stat()
    except OSError as error:
        _warn_once(f"kernel cache {directory} cannot be used ({error}); compiling kernels in memory")
        return None
    if not stat.S_ISDIR(status.st_mode):
        _warn_once(f"kernel cache {directory} is not a directory; compiling kernels in memory")
        return None
    if not _private(status):
        _warn_once(f"kernel cache {directory} is not owned by this user or is writable by group or others "
                   "(machine code loaded from it would run here); compiling kernels in memory")
        return None
    return directory


def _cache_key(ir_text: str) -> str:
    identity = "\n".join([host().cpu, host().features,
                          ".".join(map(str, llvm.llvm_version_info)), llvmlite.__version__, ir_text])
    return hashlib.sha256(_FORMAT + identity.encode()).hexdigest()[:32]


def _read_cached(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as file:
            if not _private(os.fstat(file.fileno())):
                return None  # not ours: rebuilt (and replaced) rather than run
            data = file.read()
        os.utime(path)  # recently used: evicted last
    except OSError:
        return None
    header_size = len(_FORMAT) + 32
    digest, code = data[len(_FORMAT):header_size], data[header_size:]
    if not data.startswith(_FORMAT) or hashlib.sha256(code).digest() != digest:
        return None  # damaged or from another version: rebuilt
    return code


def _write_cached(path: Path, code: bytes) -> None:
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")  # mode 0600
    except OSError:
        return  # not writable: compiled in memory, in every process
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(_FORMAT + hashlib.sha256(code).digest() + code)
        os.replace(temporary, path)  # atomic: concurrent processes see no entry or a whole one
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return
    evict(path.parent)


def evict(directory: Path, max_entries: int | None = None, max_bytes: int | None = None) -> None:
    """Delete the least recently used entries of ``directory`` until at most ``max_entries`` entries of at
    most ``max_bytes`` in all remain (defaults :data:`CACHE_MAX_ENTRIES`, :data:`CACHE_MAX_BYTES`)."""
    max_entries = CACHE_MAX_ENTRIES if max_entries is None else max_entries
    max_bytes = CACHE_MAX_BYTES if max_bytes is None else max_bytes
    entries = []
    for path in directory.glob("*.o"):
        with contextlib.suppress(OSError):  # another process may have removed it meanwhile
            status = path.stat()
            entries.append((status.st_mtime_ns, status.st_size, path))
    entries.sort()  # oldest first
    count, total = len(entries), sum(size for _, size, _ in entries)
    for _, size, path in entries:
        if count <= max_entries and total <= max_bytes:
            break
        with contextlib.suppress(OSError):
            path.unlink()
        count, total = count - 1, total - size


def load(module: ir.Module) -> NativeLibrary:
    """The machine code of ``module``: from this process, from the cache directory, or compiled now.

    Raises :class:`KernelBuildError` when it cannot be compiled or loaded here."""
    ir_text = str(module)
    key = _cache_key(ir_text)
    with _lock:
        library = _libraries.get(key)
        if library is not None:
            return library
        name = f"{module.name}-{key}"
        dumping = bool(os.environ.get(DUMP_VARIABLE, "").strip())
        if dumping:
            _dump(name, ir_text)
        directory = usable_cache_directory()
        path = None if directory is None else directory / f"{name}.o"
        code = None if path is None or dumping else _read_cached(path)
        from_cache = code is not None
        if code is None:
            code = compile_object(ir_text)
            if path is not None:
                _write_cached(path, code)
        check_symbols(code, module.name)
        try:
            engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), target_machine())
            engine.add_object_file(llvm.ObjectFileRef.from_data(code))
            engine.finalize_object()
        except RuntimeError as error:
            raise KernelBuildError(f"the JIT could not load kernel {module.name}: {error}") from error
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


def address(builder: ir.IRBuilder, element: ir.Type, base: ir.Value, index: ir.Value | int) -> ir.Value:
    """``&base[index]`` for an array of ``element`` at ``base``."""
    index = index if isinstance(index, ir.Value) else ir.Constant(I64, index)
    return builder.gep(base, [index], inbounds=True, source_etype=element)


def load_at(builder: ir.IRBuilder, element: ir.Type, base: ir.Value, index: ir.Value | int = 0,
            align: int | None = None) -> ir.Value:
    """``base[index]`` read as ``element`` (``align``: the alignment to assume, default the type's)."""
    return builder.load(address(builder, element, base, index), typ=element, align=align)


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


class _FunctionPointer(ir.CastInstr):
    """``inttoptr`` to a function of a known type: llvmlite reads a callee's type from a typed pointer's
    pointee, which an opaque pointer lacks, so the type travels with the value here."""

    def __init__(self, parent, value, function_type: ir.FunctionType):
        super().__init__(parent, "inttoptr", value, PTR)
        self._function_type = function_type

    @property
    def function_type(self) -> ir.FunctionType:
        return self._function_type


def function_pointer(builder: ir.IRBuilder, value: ir.Value, function_type: ir.FunctionType) -> ir.Value:
    """The i64 ``value`` as a callable pointer to a function of ``function_type`` (``builder.call`` takes it)."""
    instruction = _FunctionPointer(builder.block, value, function_type)
    builder._insert(instruction)
    return instruction


class Arguments:
    """The layout of a kernel's int64 argument block, declared once for both sides: :meth:`pack` fills it in
    Python, :meth:`reader` reads it in the kernel's IR. Pointers travel as their addresses.

    ``tail`` names an array of any length after the named entries (:meth:`pack` appends it)."""

    def __init__(self, *names: str, tail: str | None = None):
        if len(set(names)) != len(names):
            raise ValueError(f"argument names repeat: {names}")
        self.names, self.tail = names, tail
        self._index = {name: index for index, name in enumerate(names)}

    def index(self, name: str) -> int:
        """Position of entry ``name`` in the block (the tail starts at ``len(names)``)."""
        if name == self.tail:
            return len(self.names)
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"no argument {name!r} in {self.names}") from None

    def pack(self, tail=(), **values: int) -> np.ndarray:
        """The int64 block with every named entry (exactly those) and the ``tail`` array after them."""
        if set(values) != set(self.names):
            missing, extra = set(self.names) - set(values), set(values) - set(self.names)
            raise TypeError(f"kernel arguments: missing {sorted(missing)}, unexpected {sorted(extra)}")
        block = np.empty(len(self.names) + len(tail), dtype=np.int64)
        block[:len(self.names)] = [values[name] for name in self.names]
        block[len(self.names):] = tail
        return block

    def reader(self, builder: ir.IRBuilder, block: ir.Value):
        """``read(name, pointer=False)``: entry ``name`` of the block at ``block``, an i64 or (``pointer``)
        an opaque pointer; ``slot(name)``: its address."""
        def slot(name: str) -> ir.Value:
            return address(builder, I64, block, self.index(name))

        def read(name: str, pointer: bool = False) -> ir.Value:
            value = builder.load(slot(name), typ=I64)
            return builder.inttoptr(value, PTR) if pointer else value

        read.slot = slot
        return read


# The C signature every split kernel has: ``void kernel(const int64_t *arguments, int64_t lo, int64_t hi)``.
KERNEL_TYPE = ir.FunctionType(ir.VoidType(), [PTR, I64, I64])
KERNEL_CTYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
