"""Load: a `BpfObject` (pure data read from an ELF) → live kernel maps and programs.

The spec stays untouched; everything the kernel created lives in a `LoadedObject`, which owns
every fd it opened and closes them all on `close()` / `with` exit, and also when loading fails
half-way, so a rejected program never leaks the maps created before it.

Steps, in libbpf's order:
1. load the object's BTF (`BpfObject.kernel_btf()`, with libbpf's fix-ups).  BTF is optional:
   a kernel that refuses it still gets the maps and programs, and `btf_error` says why;
2. create each map: BTF-defined `.maps` (type, key/value size, max_entries, flags, and their
   BTF key/value types) and the single-entry arrays behind `.data`/`.rodata`/`.bss`, filled
   with their initial bytes (`.rodata` then frozen);
3. for each program the running kernel can load: link its .text subprograms
   (`ProgramSpec.linked()`), point every map reference (an `ld_imm64`) at the map's fd
   (BPF_PSEUDO_MAP_FD, or BPF_PSEUDO_MAP_VALUE + offset for global data) and BPF_PROG_LOAD it
   with the object's license and the program's func_info/line_info;
4. on rejection, load again with a verifier log and raise `VerifierError`, which names the
   program, the errno, the C or Python source line of the failing instruction (from the
   program's line_info) and the log's tail.

io_uring programs (section `iouring.s/…`) belong to an RFC the mainline kernel never merged:
their type number 31 is BPF_PROG_TYPE_SYSCALL upstream, so loading them "as 31" would verify
them against the wrong context.  They are refused with an error that says what is missing and
where they run instead (the project's userspace engine behind `Ring`).
"""
from __future__ import annotations

import ctypes
import errno as _errno
import functools
import os
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from .. import cells, display
from . import complexity, hist, kernel
from .attach import TRACING_PREFIXES, Attachment, SocketAttachment, attach_tracing, load_attrs
from .btf import VMLINUX_BTF, kernel_btf
from ..diagnostics import Diagnostic, Source, Span
from ..errors import LoadError, ObjectError
from .globals_view import Globals, global_vars, with_globals
from ..uapi import BPF_PROG_TYPE_KPROBE, BPF_PROG_TYPE_RAW_TRACEPOINT, BPF_PROG_TYPE_TRACING
# update flags for KernelMap.set, re-exported so users need not import uapi
from ..uapi import (BPF_ANY, BPF_EXIST, BPF_MAP_TYPE_LRU_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY,  # noqa: F401
                   BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_RINGBUF, BPF_NOEXIST,
                   MAP_TYPE_NAMES, PROG_TYPE_NAMES)
from .ringbuf import KernelRingBuffer
from .mapview import MapView
from .values import INT_CTYPES, ctype_from_btf, pack, pack_per_cpu, per_cpu_slot, unpack, unpack_per_cpu

__all__ = ["load", "LoadedObject", "KernelProgram", "KernelMap", "TestRunResult", "Attachment",
           "SocketAttachment", "KernelSections",
           "VerifierError", "UnsupportedProgramError", "BPF_ANY", "BPF_NOEXIST", "BPF_EXIST"]

# kind → (prog type, prog_flags).  SYSCALL programs are always loaded sleepable: the kernel
# refuses a non-sleepable one ("Syscall programs can only be sleepable").
KERNEL_KINDS = {
    "syscall": (kernel.BPF_PROG_TYPE_SYSCALL, kernel.BPF_F_SLEEPABLE),
    "socket_filter": (kernel.BPF_PROG_TYPE_SOCKET_FILTER, 0),
    "tracepoint": (kernel.BPF_PROG_TYPE_TRACEPOINT, 0),
    "raw_tracepoint": (BPF_PROG_TYPE_RAW_TRACEPOINT, 0),
    "kprobe": (BPF_PROG_TYPE_KPROBE, 0),          # kprobe/ and kretprobe/ sections
    "tracing": (BPF_PROG_TYPE_TRACING, 0),        # tp_btf/, fentry/, fexit/: load_attrs
}

MAP_TYPES_BY_NAME = {name: num for num, name in MAP_TYPE_NAMES.items()}

LOG_TAIL_LINES = 24  # enough for the rejected path's last states, short enough to read
DEFAULT_LOG_SIZE = 4 << 20
MAX_LOG_SIZE = 1 << 30  # the kernel's own cap on log_size (UINT_MAX >> 2)


# --- errors -----------------------------------------------------------------------------------
@dataclass
class VerifierError(LoadError):
    """The kernel's verifier refused a program.  A LoadError (the source compiled; the kernel
    refused it) whose diagnostic points at the source line the verifier stopped at, so the CLI
    prints it as a compiler error (source line and caret, then the log's tail) and exits 1."""

    program: str = ""
    errno: int = 0
    log: str = ""
    insn: int | None = None  # index (in 8-byte slots) of the instruction the verifier stopped at
    combined: list = field(default_factory=list, repr=False)  # the errors `combine` merged

    @classmethod
    def combine(cls, errors: list["VerifierError"]) -> "VerifierError":
        """One error for several rejected programs: every diagnostic, the first one's details."""
        if len(errors) == 1:
            return errors[0]
        first = errors[0]
        return cls([d for e in errors for d in e.diagnostics], first.program, first.errno,
                   first.log, first.insn, list(errors))

    @property
    def rejections(self) -> list["VerifierError"]:
        """One VerifierError per rejected program."""
        return self.combined or [self]


@dataclass
class UnsupportedProgramError(LoadError):
    """A program of a kind this kernel cannot load (io_uring RFC programs, io_uring struct_ops
    on a kernel without `io_uring_bpf_ops`).  Says what is missing and where it runs instead."""

    program: str = ""
    kind: str = ""


def _unsupported_reason(kind: str) -> str | None:
    if kind in KERNEL_KINDS:
        return None
    if kind == "iouring":
        return ("io_uring BPF programs are from an RFC series that mainline Linux never merged: "
                "this kernel has no program type for them (mainline gave type 31 to "
                "BPF_PROG_TYPE_SYSCALL) and no IORING_OP_BPF; they run in pybpf_uring's "
                "userspace engine: use `pybpf_uring.Ring(...).register(obj)`")
    if kind in ("struct_ops", "loop_step"):
        if not kernel_has_btf_type("io_uring_bpf_ops"):
            return (f"this kernel ({os.uname().release}) has no `struct io_uring_bpf_ops` in "
                    "its BTF, so it cannot run an io_uring loop_step program (Linux 7.1+ with "
                    "CONFIG_IO_URING_BPF_OPS); `pybpf_uring.mainline.probe()` lists what is missing")
        return ("a loop_step program is attached to a ring, not loaded on its own: use "
                "`pybpf_uring.mainline.LoopRing(...).attach(obj)`")
    return f"unknown program kind {kind!r}: the loader knows {', '.join(sorted(KERNEL_KINDS))}"


def kernel_has_btf_type(name: str) -> bool:
    """Whether the running kernel's BTF names `name` (a cheap string-table search)."""
    kernel_types = kernel_btf()
    return kernel_types is not None and kernel_types.has_name(name)


PER_CPU_MAP_TYPES = frozenset({BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY,
                               BPF_MAP_TYPE_LRU_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE})


def possible_cpus() -> int:
    """CPUs the kernel may bring online (what per-CPU maps are sized by), e.g. "0-3,5" → 5."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
    except OSError:
        return os.cpu_count() or 1
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


# --- live maps --------------------------------------------------------------------------------
class KernelMap(MapView):
    """A map the kernel holds, used like a dict from the host.

    `m[k]` raises KeyError for a missing key (a hash map's absent key, an array index past
    max_entries); `m.get(k)` returns a default.  Keys and values are ints packed little-endian to
    the map's sizes, bytes, or ctypes objects; reads decode as `key_type` / `value_type` (set them
    to a ctypes Structure to read struct values as instances).  A per-CPU map's value reads as a
    list with one value per possible CPU (`values.unpack_per_cpu`); a ring buffer has no keys:
    `records()` consumes it."""

    def __init__(self, name: str, fd: int, map_type: int, key_size: int, value_size: int,
                 max_entries: int, flags: int = 0, key_type: Any = None, value_type: Any = None,
                 spec: Any = None, owner: "LoadedObject | None" = None) -> None:
        self.name, self._fd, self.type = name, fd, map_type
        # keeps the owner (and so this fd) alive as long as the map is used: were the owner
        # collected, its finalizer would close the fd and the number could be reused
        self._owner = owner
        self.key_size, self.value_size = key_size, value_size
        self.max_entries, self.flags = max_entries, flags
        self.key_type, self.value_type, self.spec = key_type, value_type, spec
        self._ring: KernelRingBuffer | None = None   # a ring buffer's pages, mapped by records()

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise ValueError(f"map {self.name!r} is closed")
        return self._fd

    def __repr__(self) -> str:
        kind = MAP_TYPE_NAMES.get(self.type, str(self.type))
        state = f"fd {self._fd}" if self._fd >= 0 else "closed"
        return (f"<KernelMap {self.name!r} {kind} key {self.key_size} B value {self.value_size} B "
                f"x{self.max_entries} {state}>")

    @property
    def per_cpu(self) -> bool:
        return self.type in PER_CPU_MAP_TYPES

    @property
    def _slot(self) -> int:
        return per_cpu_slot(self.value_size)

    @property
    def _buffer_size(self) -> int:
        """What a lookup writes.  Per-CPU maps return one value per *possible* CPU: a buffer of
        value_size would let the kernel write past its end."""
        return self._slot * possible_cpus() if self.per_cpu else self.value_size

    def _key(self, key: Any) -> bytes:
        self._keyed()
        return pack(key, self.key_size, f"map {self.name!r} key")

    def _keyed(self) -> None:
        """A ring buffer has no keys (the kernel refuses lookups and key walks on it): a
        TypeError saying what to use, as an engine ring buffer says it."""
        if self.type == BPF_MAP_TYPE_RINGBUF:
            raise TypeError(f"map {self.name!r} is a ringbuf: it has records, not keys (read them "
                            "with records())")

    def _value(self, value: Any) -> bytes:
        if not self.per_cpu:
            return pack(value, self.value_size, f"map {self.name!r} value")
        return pack_per_cpu(value, possible_cpus(), self.value_size, self._slot, self.name, "possible CPU")

    def _decode(self, raw: bytes) -> Any:
        if not self.per_cpu:
            return unpack(raw, self.value_type)
        return unpack_per_cpu(raw, self.value_size, self._slot, self.value_type)

    def records(self, timeout: float | None = 0, as_type: Any = None) -> Iterator:
        """A ring buffer's records, oldest first: bytes, or each decoded `as_type` (a Struct
        class, an int type); the iteration ends once no record has arrived for `timeout`
        seconds (0: what is there now, None: wait for ever).  See `ringbuf.iterate`."""
        if self.type != BPF_MAP_TYPE_RINGBUF:
            return super().records(timeout, as_type)
        return self._ring_buffer().records(timeout, as_type)

    def _ring_buffer(self) -> KernelRingBuffer:
        if self._ring is None:
            self._ring = KernelRingBuffer(self.fd, self.max_entries, self.name)
        return self._ring

    def close_ring(self) -> None:
        """Unmap the ring buffer's pages (LoadedObject.close does it with the fds)."""
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    def raw_value(self, key: bytes) -> bytes | None:
        return kernel.map_lookup_elem(self.fd, key, self._buffer_size)

    def set(self, key: Any, value: Any, flags: int = kernel.BPF_ANY) -> None:
        """Update with explicit flags: BPF_NOEXIST raises FileExistsError (EEXIST) if the key is
        there, BPF_EXIST raises FileNotFoundError (ENOENT) if it is not."""
        kernel.map_update_elem(self.fd, self._key(key), self._value(value), flags)

    def __delitem__(self, key: Any) -> None:
        try:
            kernel.map_delete_elem(self.fd, self._key(key))
        except FileNotFoundError:
            raise KeyError(key) from None

    def raw_keys(self) -> Iterator[bytes]:
        self._keyed()
        key = None
        while (key := kernel.map_get_next_key(self.fd, key, self.key_size)) is not None:
            yield key

    def __iter__(self) -> Iterator:
        """The keys; a ring buffer's records (consumed), as an engine ring buffer iterates."""
        return self.records() if self.type == BPF_MAP_TYPE_RINGBUF else super().__iter__()

    def __len__(self) -> int:
        """The keys; for a ring buffer, the records ready to be read."""
        if self.type == BPF_MAP_TYPE_RINGBUF:
            return self._ring_buffer().ready()
        return super().__len__()

    def info(self) -> kernel.MapInfo:
        return kernel.map_info(self.fd)

    _repr_html_ = hist.map_html      # Jupyter's view: log2 histograms as bars, then the first entries


class KernelSections:
    """Data sections in kernel maps, for `globals_view.Globals`.  A write reads the section's
    value, changes the variable's bytes and writes the value back (bpf() has no partial update):
    a program writing another variable of the same section in between loses that write."""

    def __init__(self, maps: Mapping[str, KernelMap], set_before: str) -> None:
        self._maps, self._set_before = maps, set_before

    def read(self, section: str) -> bytes:
        m = self._maps[section]
        return kernel.map_lookup_elem(m.fd, bytes(4), m.value_size)

    def write(self, section: str, offset: int, data: bytes) -> None:
        m = self._maps[section]
        value = bytearray(self.read(section))
        value[offset:offset + len(data)] = data
        kernel.map_update_elem(m.fd, bytes(4), bytes(value))

    def frozen(self, section: str) -> str:
        if self._maps[section].flags & kernel.BPF_F_RDONLY_PROG:   # frozen by _create_map
            return ("is frozen once the program is loaded (the verifier read its values as "
                    f"constants); give the value before loading: {self._set_before}")
        return ""


# --- live programs ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TestRunResult:
    retval: int       # r0 as the kernel reports it: the low 32 bits, unsigned
    ctx: Any          # the ctx after the run, of the type passed in (None if none was)
    duration: int     # ns, the kernel's measurement
    data: bytes = b""  # packet after the run (socket filters)

    @property
    def signed_retval(self) -> int:
        """retval as the i32 a program declared `-> i32` (or C `int`) returned."""
        return self.retval - (1 << 32) if self.retval & 0x80000000 else self.retval

    __test__ = False  # not a pytest class, despite the name
    _repr_html_ = display.test_run_html


class KernelProgram:
    """A program the verifier accepted; `.fd` is the kernel's handle."""

    def __init__(self, name: str, fd: int, kind: str, prog_type: int, verifier_log: str = "",
                 spec: Any = None, owner: "LoadedObject | None" = None) -> None:
        self.name, self._fd, self.kind, self.prog_type = name, fd, kind, prog_type
        self.verifier_log, self.spec, self._owner = verifier_log, spec, owner

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise ValueError(f"program {self.name!r} is closed")
        return self._fd

    def __repr__(self) -> str:
        state = f"fd {self._fd}" if self._fd >= 0 else "closed"
        return f"<KernelProgram {self.name!r} {self.kind} {state}>"

    def mark_closed(self) -> None:
        """Its owner closed the fd (a mainline loop attachment, which loaded the program):
        `.fd` says the program is closed from now on."""
        self._fd = -1

    def info(self) -> kernel.ProgInfo:
        return kernel.prog_info(self.fd)

    @property
    def verified_insns(self) -> int:
        """Instructions the verifier processed (its cost, which the 1M-instruction limit bounds)."""
        return self.info().verified_insns

    def xlated(self) -> list:
        """The instructions as the verifier rewrote them (helper calls resolved and inlined, dead
        code removed): what runs, before the JIT.  Map references read as map ids."""
        from . import isa
        return isa.decode(kernel.prog_xlated(self.fd))

    def attach(self) -> "Attachment":
        """Attach a tracing program where its section says (`tracepoint/io_uring/io_uring_complete`,
        `raw_tp/...`, `tp_btf/...`, `fentry/...`, `fexit/...`, `kprobe/...`, `kretprobe/...`;
        attach.py).  Detached by `Attachment.close()` or when the loaded object closes."""
        section = getattr(self.spec, "section", "")
        prefix, _, target = section.partition("/")
        if prefix not in TRACING_PREFIXES or not target or \
                prefix == "tracepoint" and not target.partition("/")[2]:
            raise UnsupportedProgramError(
                [Diagnostic(None, f"program {self.name!r} ({self.kind}, section {section!r}) has no "
                            "tracepoint to attach to", "only tracing programs (`tracepoint/<category>/"
                            "<name>`, raw_tp/, tp_btf/, fentry/, fexit/, kprobe/, kretprobe/) attach; "
                            "test others with test_run")], self.name, self.kind)
        return attach_tracing(self.fd, section, self._owner)

    def attach_socket(self, sock: Any) -> SocketAttachment:
        """Filter a socket's incoming packets with this socket filter (SO_ATTACH_BPF): `sock` is
        a socket object or its fd.  Detached by the attachment's `close()` (or `with` exit) or
        when the loaded object closes; see `attach`."""
        if self.prog_type != kernel.BPF_PROG_TYPE_SOCKET_FILTER:
            raise UnsupportedProgramError(
                [Diagnostic(None, f"program {self.name!r} ({self.kind}) is not a socket filter",
                            "only @socket_filter programs attach to sockets")], self.name, self.kind)
        return SocketAttachment(sock, self.fd, self.name, self._owner)

    def test_run(self, ctx: Any = None, data: bytes = b"", repeat: int = 0) -> TestRunResult:
        """Run once in the kernel with BPF_PROG_TEST_RUN.

        syscall: `ctx` (bytes or a ctypes object) is the program's context; the kernel copies it
        back after the run, and the result's ctx is a new object of the same type.  No packet
        data and no repeat: the kernel refuses both for this type.
        socket_filter: `data` is an Ethernet frame (at least 14 bytes); the program sees it from
        the network header on, as a socket would.  `ctx` optionally presets a `__sk_buff`."""
        if self.prog_type == kernel.BPF_PROG_TYPE_SYSCALL:
            return self._run_syscall(ctx, data, repeat)
        if self.prog_type == kernel.BPF_PROG_TYPE_SOCKET_FILTER:
            return self._run_socket_filter(ctx, data, repeat)
        raise UnsupportedProgramError(
            [Diagnostic(None, f"program {self.name!r}: the kernel cannot test-run "
                        f"{PROG_TYPE_NAMES.get(self.prog_type, self.prog_type)} programs",
                        "attach it to its tracepoint instead, or test it in the userspace engine")],
            self.name, self.kind)

    def _run_syscall(self, ctx: Any, data: bytes, repeat: int) -> TestRunResult:
        if data or repeat:
            raise ValueError(f"program {self.name!r}: the kernel test-runs syscall programs on "
                             "a ctx only (no data, no repeat)")
        raw = _ctx_bytes(ctx)
        if len(raw) > 0xFFFF:
            raise ValueError(f"program {self.name!r}: ctx of {len(raw)} bytes exceeds the "
                             "kernel's 65535-byte limit for syscall programs")
        run = self._run(ctx=raw)
        return TestRunResult(run.retval, _ctx_like(ctx, run.ctx), run.duration)

    def _run_socket_filter(self, ctx: Any, data: bytes, repeat: int) -> TestRunResult:
        if len(data) < 14:
            raise ValueError(f"program {self.name!r}: a socket filter's test data is an "
                             f"Ethernet frame of at least 14 bytes, got {len(data)}")
        raw = _ctx_bytes(ctx)
        # room for the packet as it comes back (a filter cannot grow it; others could)
        run = self._run(ctx=raw or None, data=bytes(data), data_out_size=len(data) + 256,
                        ctx_out=bool(raw), repeat=repeat)
        return TestRunResult(run.retval, _ctx_like(ctx, run.ctx), run.duration, run.data)

    def _run(self, **kw) -> kernel.TestRun:
        try:
            return kernel.prog_test_run(self.fd, **kw)
        except OSError as exc:
            if exc.errno == _errno.EINVAL and self.prog_type == kernel.BPF_PROG_TYPE_SYSCALL:
                raise OSError(exc.errno, f"{exc.strerror}: program {self.name!r}: the ctx "
                              "must cover every ctx field the program reads") from None
            raise


def _ctx_bytes(ctx: Any) -> bytes:
    if ctx is None:
        return b""
    if isinstance(ctx, (bytes, bytearray, memoryview)):
        return bytes(ctx)
    if isinstance(ctx, (ctypes.Structure, ctypes.Union, ctypes.Array)):
        return bytes(ctx)
    raise TypeError(f"ctx must be bytes or a ctypes Structure, not {type(ctx).__name__}")


def _ctx_like(original: Any, raw: bytes) -> Any:
    """The ctx written back, as the type the caller passed (a new instance, never the input)."""
    if original is None:
        return None
    if isinstance(original, (ctypes.Structure, ctypes.Union, ctypes.Array)):
        return type(original).from_buffer_copy(raw)
    if isinstance(original, bytearray):
        return bytearray(raw)
    return raw


class Programs(Mapping):
    """name → KernelProgram; a program left out because this kernel cannot load it raises
    UnsupportedProgramError (with the reason) instead of a bare KeyError."""

    def __init__(self) -> None:
        self._loaded: dict[str, KernelProgram] = {}
        self.skipped: dict[str, UnsupportedProgramError] = {}

    def __getitem__(self, name: str) -> KernelProgram:
        if name in self.skipped:
            raise self.skipped[name]
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded)

    def __len__(self) -> int:
        return len(self._loaded)


class LoadedObject:
    """The kernel side of one BpfObject: its maps and loaded programs, owner of their fds."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.programs = Programs()
        self.maps: dict[str, KernelMap] = {}
        self._fds: list[int] = []
        self.attachments: list[Attachment] = []   # attach.py adds and removes its own
        self.btf: KernelBtf | None = None  # the object's BTF in the kernel, if it loaded
        self.btf_error: str = ""            # why it did not, or why a program went without it
        # closes the fds even if the user forgets `close()`; a no-op after close()
        self._finalizer = weakref.finalize(self, _close_all, self._fds)

    def _own(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def close(self) -> None:
        for attachment in list(self.attachments):  # first: a socket keeps its filter otherwise
            attachment.close()
        for m in self.maps.values():
            m.close_ring()
        _close_all(self._fds)
        for obj in (*self.programs._loaded.values(), *self.maps.values()):
            obj._fd = -1

    @functools.cached_property
    def globals(self) -> Globals:
        """The object's `.data`/`.bss`/`.rodata` variables by name, typed from its BTF:
        `live.globals.count`, `live.globals["count"] = 5` (see `globals_view`).  `.rodata` is
        frozen: set it with `load(obj, globals={...})`."""
        return Globals(global_vars(self.spec), KernelSections(self.maps, "load(obj, globals={...})"))

    def __enter__(self) -> "LoadedObject":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LoadedObject programs={list(self.programs)} maps={list(self.maps)}>"

    _repr_html_ = display.loaded_html   # Jupyter's view: programs as verified, maps' entries


def _close_all(fds: list[int]) -> None:
    while fds:
        kernel.close(fds.pop())


# --- loading ----------------------------------------------------------------------------------
def load(obj: Any, *, only: set[str] | None = None, log_level: int = 0,
         globals: Mapping[str, Any] | None = None) -> LoadedObject:
    """Create the object's maps and load its kernel programs; see the module docstring.

    `only` names the programs to load (default: every one this kernel can load; a named program
    it cannot load is an error, an unnamed one is skipped with its reason in
    `loaded.programs.skipped`).  `log_level` > 0 keeps the verifier log of accepted programs
    in `KernelProgram.verifier_log` (a rejection always gets a log).  `globals` gives data-section
    variables their initial values by name (`globals_view.with_globals`; `.rodata` only so)."""
    if globals:
        obj = with_globals(obj, globals)
    loaded = LoadedObject(obj)
    try:
        loaded.btf = _load_btf(loaded, obj)
        for spec in obj.maps:
            _create_map(loaded, spec)
        rejected: list[VerifierError] = []
        for prog in _kernel_programs(obj, only, loaded.programs.skipped):
            try:  # verify every program, so the user sees every rejection at once
                _load_program(loaded, prog, obj, log_level)
            except VerifierError as exc:
                rejected.append(exc)
        if rejected:
            raise VerifierError.combine(rejected)
    except BaseException:
        loaded.close()
        raise
    return loaded


def _kernel_programs(obj: Any, only: set[str] | None, skipped: dict) -> list:
    """The programs to load.  One this kernel cannot load is an error if it was asked for by
    name or if nothing else is left to load, and otherwise recorded in `skipped`."""
    chosen = [p for p in obj.programs if only is None or p.name in only]
    if only is not None and (missing := only - {p.name for p in chosen}):
        raise KeyError(f"no program named {', '.join(sorted(missing))} in the object")
    loadable = [p for p in chosen if _unsupported_reason(p.kind) is None]
    for prog in chosen:
        if (reason := _unsupported_reason(prog.kind)) is None:
            continue
        err = UnsupportedProgramError(
            [Diagnostic(None, f"cannot load program {prog.name!r} ({prog.kind}) into the "
                        f"kernel: {reason}")], prog.name, prog.kind)
        if only is not None or not loadable:
            raise err
        skipped[prog.name] = err
    return loadable


def map_type_number(type_: Any) -> int:
    """A map type as the reader gave it (2, "array", "BPF_MAP_TYPE_ARRAY") → its number."""
    if isinstance(type_, int):
        return type_
    name = str(type_).lower().removeprefix("bpf_map_type_")
    if name not in MAP_TYPES_BY_NAME:
        raise LoadError([Diagnostic(None, f"unknown map type {type_!r}",
                                    f"known: {', '.join(sorted(MAP_TYPES_BY_NAME))}")])
    return MAP_TYPES_BY_NAME[name]


def _create_map(loaded: LoadedObject, spec: Any) -> None:
    """Create, fill and (for `.rodata`) freeze one map; the kernel refusing any of it (a map type,
    size or flag it does not take, memory it will not give) is a LoadError naming the map, as a
    program it refuses is a VerifierError."""
    try:
        _make_map(loaded, spec)
    except OSError as exc:
        raise LoadError([Diagnostic(None, f"cannot create map {spec.name!r}: "
                                          f"{exc.strerror or exc}")]) from None


def _make_map(loaded: LoadedObject, spec: Any) -> None:
    map_type = map_type_number(spec.type)
    flags = getattr(spec, "flags", 0) or 0
    key_id, value_id = getattr(spec, "key_type_id", 0), getattr(spec, "value_type_id", 0)
    args = (map_type, spec.key_size, spec.value_size, spec.max_entries, flags)
    fd = -1
    if loaded.btf and key_id and value_id:
        # with its key/value types the kernel (and bpftool) can show entries as C values;
        # a kernel that refuses them for this map type still gets the map without
        try:
            fd = kernel.map_create(*args, name=spec.name, btf_fd=loaded.btf.fd,
                                   btf_key_type_id=key_id, btf_value_type_id=value_id)
        except OSError as exc:
            loaded.btf_error = f"map {spec.name!r} was created without BTF types: {exc}"
            fd = -1
    if fd < 0:
        fd = kernel.map_create(*args, name=spec.name)
    loaded._own(fd)
    key_type, value_type = getattr(spec, "key_type", None), getattr(spec, "value_type", None)
    btf = getattr(loaded.spec, "btf", None)
    if btf is not None and not isinstance(btf, (bytes, bytearray)):
        decoded_key = ctype_from_btf(btf, key_id)
        # struct keys stay bytes: ctypes instances hash by identity, useless as dict keys
        if key_type is None and decoded_key in INT_CTYPES.values():
            key_type = decoded_key
        value_type = value_type or ctype_from_btf(btf, value_id)
    loaded.maps[spec.name] = KernelMap(spec.name, fd, map_type, spec.key_size, spec.value_size,
                                       spec.max_entries, flags, key_type, value_type, spec, loaded)
    initial = getattr(spec, "data", None)  # .data/.rodata contents
    if initial:
        kernel.map_update_elem(fd, bytes(4), bytes(initial).ljust(spec.value_size, b"\0"))
    if flags & kernel.BPF_F_RDONLY_PROG and map_type == kernel.BPF_MAP_TYPE_ARRAY:
        # .rodata, as libbpf does: frozen, so the verifier may fold reads of it into constants
        # (and the host cannot change what the program was verified with)
        kernel.map_freeze(fd)


def _load_program(loaded: LoadedObject, prog: Any, obj: Any, log_level: int) -> None:
    """Loads with the object's BTF (func_info, line_info: the verifier log then quotes source
    lines) when there is one; if the kernel refuses the program only because of its BTF, loads it
    without.  A rejection is explained from a log of the same attempt that failed, and costs one
    walk with a log: the first attempt writes none (log level 0 walks ~10x faster), and BTF
    records are checked before the walk, so only a refusal that walked nothing is retried."""
    prog_type, flags = KERNEL_KINDS[prog.kind]
    if getattr(prog, "sleepable", False):
        flags |= kernel.BPF_F_SLEEPABLE
    linked = prog.linked()
    code = relocate(linked, loaded.maps)
    license = getattr(obj, "license", "") or "GPL"
    try:
        target = tuple(load_attrs(getattr(prog, "section", "")).items())
    except FileNotFoundError as exc:
        raise UnsupportedProgramError([Diagnostic(None, f"program {prog.name!r}: {exc}")],
                                      prog.name, prog.kind) from None
    attempt = ProgLoad(prog_type, code, license, prog.name, flags, target)
    btf = loaded.btf.records(linked) if loaded.btf else None
    res = attempt.explained(log_level, btf)
    if res.fd < 0 and btf is not None and not _walked(res.log):  # the program, or its BTF records?
        plain = attempt.run(log_level, None)
        if plain.fd >= 0:
            loaded.btf_error = (f"program {prog.name!r} was loaded without BTF, which the kernel "
                                f"refused: {kernel.errno_meaning(res.errno)}: {verifier_reason(res.log)}")
            res = plain
    if res.fd < 0:
        raise verifier_error(prog.name, res.errno, res.log, line_info_of(linked), linked.instructions)
    fd = loaded._own(res.fd)
    loaded.programs._loaded[prog.name] = KernelProgram(prog.name, fd, prog.kind, prog_type, res.log,
                                                       prog, loaded)


def _walked(log: str) -> bool:
    """Whether the verifier walked any instruction before the refusal (the log's closing
    `processed N insns`): func_info and line_info are judged before the walk."""
    m = _PROCESSED.search(log)
    return bool(m and int(m.group(1)))


@dataclass(frozen=True)
class ProgLoad:
    """One program's BPF_PROG_LOAD, for a kernel object's programs and a mainline loop's
    struct_ops members alike."""

    prog_type: int
    code: bytes
    license: str
    name: str
    flags: int
    target: tuple = ()   # expected_attach_type and attach_btf_id: tracing, struct_ops

    def run(self, log_level: int, btf: "BtfRecords | None", whole_log: bool = True) -> kernel.ProgLoadResult:
        """BPF_PROG_LOAD, growing the log buffer when the kernel reports (log_true_size) that the
        log did not fit: on success a short buffer turns into ENOSPC since 6.4.  A load known
        to be refused needs no whole log: the kernel keeps the tail, which explains it."""
        size = DEFAULT_LOG_SIZE
        extra = {**(btf.attrs() if btf else {}), **dict(self.target)}
        while True:
            res = kernel.prog_load(self.prog_type, self.code, self.license, self.name, self.flags,
                                   log_level, log_size=size if log_level else 0, **extra)
            if not (whole_log and log_level and res.errno == _errno.ENOSPC
                    and size < res.log_true_size <= MAX_LOG_SIZE):
                return res
            size = res.log_true_size + 1

    def explained(self, log_level: int, btf: "BtfRecords | None") -> kernel.ProgLoadResult:
        """`run`, and for a refusal without a log (log level 0) one more walk whose log tail
        explains it; the errno stays the refusal's, not the ENOSPC of a tail."""
        res = self.run(log_level, btf)
        if res.fd < 0 and not res.log:
            told = self.run(1, btf, whole_log=False)
            res = told if told.fd >= 0 else replace(res, log=told.log)
        return res


# --- BTF for the kernel -----------------------------------------------------------------------
@dataclass(frozen=True)
class BtfRecords:
    """func_info and line_info of one linked program, in the kernel's record formats."""

    fd: int
    func_info: bytes
    line_info: bytes

    def attrs(self) -> dict:
        return {"btf_fd": self.fd, "func_info": self.func_info, "func_info_rec_size": 8,
                "line_info": self.line_info, "line_info_rec_size": 16}


class KernelBtf:
    """An object's BTF loaded into the kernel (`BpfObject.kernel_btf()`: libbpf's fix-ups done
    by the reader), and the program records that refer to it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def records(self, linked: Any) -> BtfRecords | None:
        """func_info and line_info of a linked program, or None without func_info (the kernel
        wants both or neither).  The kernel wants strictly increasing instruction offsets: where
        the compiler gave one instruction several lines (one per column), the first is kept."""
        from .btf import encode_func_info, encode_line_info
        funcs = list({f.insn: f for f in getattr(linked, "func_info", None) or []}.values())
        if not funcs:
            return None
        lines: dict[int, Any] = {}
        for entry in line_info_of(linked):
            if getattr(entry, "file_off", 0) and entry.insn not in lines:
                lines[entry.insn] = entry
        return BtfRecords(self.fd, encode_func_info(sorted(funcs, key=lambda f: f.insn)),
                          encode_line_info(lines[i] for i in sorted(lines)))


def _load_btf(loaded: LoadedObject, obj: Any) -> KernelBtf | None:
    """The object's BTF in the kernel, or None (recorded in `btf_error`): BTF only improves
    logs, introspection and map printing, so a kernel that refuses it still gets the programs."""
    kernel_btf = getattr(obj, "kernel_btf", None)
    try:
        raw = kernel_btf() if kernel_btf is not None else None
        if raw is None:
            return None
        fd = loaded._own(kernel.btf_load(raw))
    except (OSError, ObjectError) as exc:   # the kernel's refusal, or BTF it could not be given
        loaded.btf_error = f"the object's BTF was not loaded: {exc}"
        return None
    return KernelBtf(fd)


# --- relocation -------------------------------------------------------------------------------
def relocate(linked: Any, maps: Mapping[str, KernelMap]) -> bytes:
    """The program's bytes with each map reference bound to its map's fd (src_reg =
    BPF_PSEUDO_MAP_FD in the ld_imm64, imm = fd), as the kernel expects of an fd-based loader."""
    code = bytearray(encode_program(linked))
    for rel in linked.relocations:
        off = rel.insn_index * kernel.INSN_SIZE  # relocations count 8-byte slots, as the kernel
        if rel.kind == "map":
            if rel.symbol not in maps:
                raise LoadError([Diagnostic(None, f"program {linked.name!r} refers to map "
                                            f"{rel.symbol!r}, which the object does not define")])
            _patch_ld_imm64(code, off, kernel.BPF_PSEUDO_MAP_FD, maps[rel.symbol].fd, linked.name)
        elif rel.kind == "data":
            if rel.symbol not in maps:
                raise LoadError([Diagnostic(None, f"program {linked.name!r} uses global data "
                                            f"{rel.symbol!r}, which this loader has no map for",
                                            "keep values in maps or module-level constants")])
            _patch_ld_imm64(code, off, kernel.BPF_PSEUDO_MAP_VALUE, maps[rel.symbol].fd, linked.name)
        elif rel.kind == "kfunc":
            if code[off] != 0x85:
                raise LoadError([Diagnostic(None, f"program {linked.name!r}: kfunc relocation "
                                            f"at byte {off} is not a call")])
            # src_reg BPF_PSEUDO_KFUNC_CALL, imm = the function's id in vmlinux BTF, off 0 = vmlinux
            code[off + 1] = (code[off + 1] & 0x0F) | (kernel.BPF_PSEUDO_KFUNC_CALL << 4)
            code[off + 2:off + 4] = bytes(2)
            code[off + 4:off + 8] = kfunc_id(rel.symbol, linked.name).to_bytes(4, "little")
        elif rel.kind == "extern":
            raise LoadError([Diagnostic(None, f"program {linked.name!r} refers to undefined "
                                        f"symbol {rel.symbol!r}; this loader resolves maps, "
                                        "global data and subprograms only")])
        # "call" and "func" relocations were resolved by linked()
    return bytes(code)


def kfunc_id(name: str, program: str) -> int:
    """The vmlinux BTF id the verifier wants in a kfunc call's imm."""
    kernel_types = kernel_btf()
    type_id = kernel_types.find(name, "func") if kernel_types is not None else None
    if type_id is None:
        where = ("this kernel's BTF" if kernel_types is not None else
                 f"{VMLINUX_BTF} (missing: no kernel BTF)")
        raise LoadError([Diagnostic(None, f"program {program!r} calls kernel function {name!r}, "
                                    f"which is not in {where}",
                                    "kfuncs in kernel modules are not resolved by this loader")])
    return type_id


def _patch_ld_imm64(code: bytearray, off: int, src: int, fd: int, prog: str) -> None:
    if code[off] != 0x18:
        raise LoadError([Diagnostic(None, f"program {prog!r}: relocation at byte {off} is not "
                                    f"an ld_imm64 (opcode {code[off]:#04x})")])
    code[off + 1] = (code[off + 1] & 0x0F) | (src << 4)
    if src == kernel.BPF_PSEUDO_MAP_VALUE:
        # the offset into the data the compiler put in imm moves to the second half's imm
        # (as libbpf does), because the first half's imm now holds the map fd
        base = int.from_bytes(code[off + 4:off + 8], "little", signed=True)
        extra = int.from_bytes(code[off + 12:off + 16], "little", signed=True)
        code[off + 12:off + 16] = (base + extra).to_bytes(4, "little", signed=True)
    else:
        code[off + 12:off + 16] = bytes(4)
    code[off + 4:off + 8] = fd.to_bytes(4, "little", signed=True)


def encode_program(linked: Any) -> bytes:
    from . import isa
    return bytes(isa.encode(linked.instructions))


def line_info_of(linked: Any) -> list:
    return list(getattr(linked, "line_info", None) or [])


# --- verifier errors --------------------------------------------------------------------------
# Rejections the verifier reports at the end of an instruction line rather than on a line of
# their own (the log's last line is then the state dump that explains it, not the reason).
_INLINE_REASONS = re.compile(
    r"(infinite loop detected at insn \d+|back-edge from insn \d+ to \d+|"
    r"BPF program is too large\..*|The sequence of \d+ jumps is too complex\.?|"
    r"unreachable insn \d+|jump out of range from insn \d+ to \d+)")
_BOOKKEEPING = re.compile(r"^(processed |verification time|stack depth|-- END PROG LOAD LOG|from \d+ to|"
                          r"(cur|old) state:|R\d+[_=]|mark_precise|last_idx|regs=|frame\d|func#|;|\d+: )")


_PROCESSED = re.compile(r"processed (\d+) insns")


def verifier_reason(log: str) -> str:
    """The verifier's own sentence for the rejection (a refusal before the walk may lack its
    newline, running into the `processed` line: "invalid type id 1 in func infoprocessed 0")."""
    rows = [r.strip() for r in _PROCESSED.sub(r"\n\g<0>", log).strip().splitlines()]
    for row in reversed(rows[-16:]):
        if m := _INLINE_REASONS.search(row):
            return m.group(1)
    for row in reversed(rows):
        if row and not _BOOKKEEPING.match(row):
            return row
    return "no reason given in the log"


def failing_insn(log: str) -> tuple[int, str] | None:
    """The last `N: (op) ...` line of a verifier log (where the verifier gave up), as its index
    and its disassembly without the register states or messages the kernel appended to it."""
    for line in reversed(log.splitlines()):
        m = re.match(r"^(\d+): \([0-9a-f]{2}\) ", line)
        if m:
            text = re.split(r"\s+;|\s+\d+: R\d", line.strip())[0]
            return int(m.group(1)), _INLINE_REASONS.split(text)[0].rstrip()
    return None


def log_tail(log: str, lines: int = LOG_TAIL_LINES) -> str:
    rows = log.rstrip().splitlines()
    cut = rows[-lines:]
    head = [f"... ({len(rows) - lines} earlier lines of the log omitted)"] if len(rows) > lines else []
    return "\n".join(head + cut)


def source_span(line_info: list, insn: int) -> Span | None:
    """The source span of instruction `insn`: the line_info entry at or before it."""
    best = None
    for entry in line_info:
        off, file, line, col, text = _line_entry(entry)
        if off <= insn and (best is None or off >= best[0]) and line > 0:
            best = (off, file, line, col, text)
    if best is None:
        return None
    _, file, line, col, text = best
    raw = text or _line_text(file, line) or ""  # the text the compiler saw, else the file
    # Columns count characters, a tab being one, and the caret is drawn with spaces: showing
    # each tab as one space keeps the reported column true and the caret under it.
    shown = raw.replace("\t", " ")
    if col <= 0:  # no column: underline the whole statement
        col = len(shown) - len(shown.lstrip()) + 1
        end = len(shown.rstrip()) + 1
    else:
        end = col + 1
    source = Source(file or "<unknown>", shown, first_line=line, cell=cells.cell_name(file or ""))
    return Span(source, line, col, line, max(end, col + 1))


def _line_entry(entry: Any) -> tuple[int, str, int, int, str]:
    """(insn, file, line, column, line text) from a line_info entry of the reader."""
    if isinstance(entry, tuple):
        return entry
    return (entry.insn, entry.file, entry.line, entry.col, entry.text)


def _line_text(file: str, line: int) -> str | None:
    """Line `line` of `file` as it is on disk now (None if the file is gone)."""
    try:
        with open(file, encoding="utf-8", errors="replace") as f:
            for i, text in enumerate(f, 1):
                if i == line:
                    return text.rstrip("\n")
    except OSError:
        pass
    return None


# What to do instead, for the rejections users meet most (matched against the reason).
VERIFIER_HINTS = [
    (r"dereference of modified ctx ptr|variable ctx access",
     "a ctx can only be read at constant offsets: copy the field to a local first"),
    (r"unbounded min value|unbounded memory access|min value is negative|"
     r"invalid (variable-offset|unbounded variable-offset)",
     "the verifier cannot bound this index: mask it (`i & (N - 1)`) or compare it with the "
     "length right before the access"),
    (r"invalid access to map value|invalid access to memory|outside of the allowed memory range",
     "the access can fall outside the value: check the offset against the size first"),
    (r"R\d+ invalid mem access 'map_value_or_null'|invalid mem access '.*or_null'",
     "a map lookup can return NULL: test the result before using it"),
    (r"infinite loop detected|back-edge|The sequence of \d+ jumps is too complex|"
     r"BPF program is too large",
     "the verifier must see every loop end: give the loop a constant bound it can prove"),
    (r"combined stack size|stack size .* too large|invalid write to stack",
     "the stack of all frames together is limited to 512 bytes: keep large values in a map"),
    (r"!read_ok", "a register is read before anything was written to it"),
    (r"unknown func|program of this type cannot use helper",
     "this helper is not available to this program type"),
    (r"Syscall programs can only be sleepable", "syscall programs must be loaded sleepable"),
]


def verifier_hint(reason: str) -> str:
    for pattern, hint in VERIFIER_HINTS:
        if re.search(pattern, reason):
            return hint
    return ""


def verifier_error(name: str, code: int, log: str, line_info: list, insns=None) -> VerifierError:
    """The verifier's refusal as a diagnostic at the source line it is about: the failing
    instruction's, or for a walk past the verifier's limits the loop's (`insns`, the program's
    code, tells which loop and whether it has a constant bound: complexity.advice)."""
    where = failing_insn(log)
    insn = where[0] if where else None
    span = source_span(line_info, insn) if insn is not None else None
    parts = []
    if log.strip():
        reason = verifier_reason(log)
        message = f"the kernel verifier rejected program {name!r}: {kernel.errno_meaning(code)}: {reason}"
        loop = complexity.advice(reason, insns, insn) if insns is not None else None
        if loop is not None:
            span = source_span(line_info, loop[0]) or span
            parts.append(loop[1])
        elif hint := verifier_hint(reason):
            parts.append(hint)
    else:  # refused before verification (permissions, limits): there is no log to explain it
        message = f"the kernel refused to load program {name!r}: {kernel.errno_meaning(code)}"
    if where:
        parts.append(f"at instruction {where[1]}")
    if log.strip():
        parts.append("verifier log (tail):\n" + "\n".join("      " + r for r in log_tail(log).splitlines()))
    # the renderer prefixes the first line with "  note: "; the rest line up under it
    return VerifierError([Diagnostic(span, message, "\n  ".join(parts))], name, code, log, insn)
