"""Mainline io_uring BPF (`struct io_uring_bpf_ops`, Linux 7.1+, docs/abi.md §B): probe, ring, attach, run.

A `loop_step` program is a struct_ops program.  The kernel runs it from inside
`io_uring_enter(GETEVENTS)`: each step writes SQEs into the SQ region, submits them with the
`bpf_io_uring_submit_sqes` kfunc, reads CQEs from the CQ region and advances the CQ head itself,
then says how long to sleep (`cq_wait_idx`) and whether to go on.  Getting there takes what
libbpf does for `bpf_map__attach_struct_ops`, done here over `kernel` (bpf()) and `load`:

1. probe the running kernel (`probe()`): the ops type and its struct_ops value type, the kfuncs,
   the program/map/attach type numbers and the ring setup flags, all read from
   /sys/kernel/btf/vmlinux or tried with io_uring_setup, never inferred from the version (the
   types changed between 7.1 and 7.2, and distributions backport).  What is missing is named
   in a `MainlineUnsupportedError`, a CompileError: the CLI prints it, no traceback;
2. open a ring the loop can drive (`LoopRing`): SINGLE_ISSUER | DEFER_TASKRUN | NO_SQARRAY, plus
   SQ_REWIND (SQEs always taken from index 0, so a program writes `sqes[0..n)`) and CQSIZE when
   the kernel has them;
3. attach (`LoopRing.attach`): fill the object's ring-layout globals from the ring (they must be
   in frozen `.rodata` so the verifier knows the region sizes), create the object's BTF and
   data maps (`load.load` with no programs), load each program the ops variable points at as
   BPF_PROG_TYPE_STRUCT_OPS against the kernel's `io_uring_bpf_ops` (expected_attach_type is
   the member's index; first, `check_region_views` refuses a program whose constant-size
   view of the CQ or SQ region does not fit the ring), create the struct_ops map whose value is the kernel's
   `bpf_struct_ops_io_uring_bpf_ops` with the program fds and `ring_fd` at the offsets the
   kernel's BTF gives, and link it (BPF_LINK_CREATE, attach type BPF_STRUCT_OPS);
4. run (`LoopRing.run`): `io_uring_enter(fd, 0, 0, GETEVENTS)` returns when the program says
   STOP; detaching closes the link (the kernel unregisters the ops from the ring).

Every fd belongs to exactly one owner (`LoopRing`, `LoopAttachment`), which closes it on
`close()`, on `with` exit, on garbage collection and when a step fails half-way.

    from pybpf_uring.mainline import LoopRing
    with LoopRing(sq_entries=8, cq_entries=16) as ring:
        with ring.attach("nops.o", globals={"nops_wanted": 1000}) as att:   # or a BpfObject
            ring.run(timeout=10)                 # every NOP runs inside this one call
            print(att.globals["nops_done"])      # .data/.bss read back by name

Globals named in RING_LAYOUT_GLOBALS (`cq_entries`, `cq_head_offset`, ...) that the object
declares are filled from the ring unless `globals` gives them.
"""
from __future__ import annotations

import bisect
import ctypes
import dataclasses
import errno as _errno
import functools
import mmap as _mmapmod
import os
import signal
import struct
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Mapping

from . import btf as btfmod
from . import kernel
from .diagnostics import CompileError, Diagnostic
from .globals_view import Globals, global_vars
from .load import KernelSections, UnsupportedProgramError

__all__ = ["probe", "Support", "LoopRing", "LoopAttachment", "OpsSpec", "ops_specs", "as_object",
           "MainlineUnsupportedError", "LoopError", "UnsuitableRingError", "VmlinuxIndex", "RING_LAYOUT_GLOBALS",
           "RegionView", "region_views", "check_region_views",
           "IOU_LOOP_CONTINUE", "IOU_LOOP_STOP", "IOU_REGION_MEM", "IOU_REGION_CQ", "IOU_REGION_SQ"]

IOU_LOOP_CONTINUE, IOU_LOOP_STOP = 0, 1
IOU_REGION_MEM, IOU_REGION_CQ, IOU_REGION_SQ = 0, 1, 2

OPS_TYPE = "io_uring_bpf_ops"
VALUE_TYPE = "bpf_struct_ops_" + OPS_TYPE   # the kernel's map value: common header + the ops
KFUNCS = ("bpf_io_uring_submit_sqes", "bpf_io_uring_get_region")
OPS_SECTIONS = (".struct_ops.link", ".struct_ops")
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

# io_uring_setup flags (uapi #defines: they are not in BTF, so they are probed by trying them)
IORING_SETUP_IOPOLL = 1 << 0
IORING_SETUP_SQPOLL = 1 << 1
IORING_SETUP_CQSIZE = 1 << 3
IORING_SETUP_SINGLE_ISSUER = 1 << 12
IORING_SETUP_DEFER_TASKRUN = 1 << 13
IORING_SETUP_NO_SQARRAY = 1 << 16
IORING_SETUP_SQ_REWIND = 1 << 20
RING_FLAG_NAMES = {IORING_SETUP_IOPOLL: "IORING_SETUP_IOPOLL",
                   IORING_SETUP_SQPOLL: "IORING_SETUP_SQPOLL",
                   IORING_SETUP_CQSIZE: "IORING_SETUP_CQSIZE",
                   IORING_SETUP_SINGLE_ISSUER: "IORING_SETUP_SINGLE_ISSUER",
                   IORING_SETUP_DEFER_TASKRUN: "IORING_SETUP_DEFER_TASKRUN",
                   IORING_SETUP_NO_SQARRAY: "IORING_SETUP_NO_SQARRAY",
                   IORING_SETUP_SQ_REWIND: "IORING_SETUP_SQ_REWIND"}
# The kernel attaches ops only to a ring with DEFER_TASKRUN (which io_uring_setup allows only
# with SINGLE_ISSUER) and without SQPOLL or IOPOLL: io_install_bpf() in io_uring/bpf-ops.c
# returns EOPNOTSUPP otherwise.  NO_SQARRAY is not checked there: SQ_REWIND needs it.
REQUIRED_RING_FLAGS = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_NO_SQARRAY
REFUSED_RING_FLAGS = IORING_SETUP_SQPOLL | IORING_SETUP_IOPOLL
LOOP_RING_RULE = ("a BPF loop needs a ring set up with IORING_SETUP_SINGLE_ISSUER | "
                  "IORING_SETUP_DEFER_TASKRUN and without IORING_SETUP_SQPOLL or IORING_SETUP_IOPOLL "
                  "(the loop runs in the task that calls io_uring_enter and polls nothing); "
                  "LoopRing() without flags= sets up such a ring, with NO_SQARRAY and SQ_REWIND")
IORING_ENTER_GETEVENTS = 1 << 0
IORING_OP_NOP = 0

BPF_F_LINK = 1 << 13   # map flag: the struct_ops map is attached by a link, not by its update

# bpf() numbers this module needs, with the enum and value name the kernel's BTF spells them by
KERNEL_ENUMS = {"prog_type": ("bpf_prog_type", "BPF_PROG_TYPE_STRUCT_OPS"),
                "map_type": ("bpf_map_type", "BPF_MAP_TYPE_STRUCT_OPS"),
                "attach_type": ("bpf_attach_type", "BPF_STRUCT_OPS"),
                "link_create": ("bpf_cmd", "BPF_LINK_CREATE")}

# Names of globals the loader fills from the ring when an object declares them and the caller
# did not give a value: the program needs the ring's layout as constants (region sizes passed
# to bpf_io_uring_get_region must be known to the verifier), and only the host knows it.
RING_LAYOUT_GLOBALS = ("sq_entries", "cq_entries", "cq_mask", "cq_head_offset", "cq_tail_offset",
                       "cqes_offset", "sq_head_offset", "sq_tail_offset")

SQE_SIZE, CQE_SIZE = 64, 16
_NR_IO_URING_SETUP, _NR_IO_URING_ENTER = 425, 426
_IORING_OFF_SQ_RING, _IORING_OFF_SQES = 0, 0x10000000
_IORING_FEAT_SINGLE_MMAP = 1 << 0


# --- errors ------------------------------------------------------------------------------------
@dataclass
class MainlineUnsupportedError(UnsupportedProgramError):
    """The running kernel cannot run loop_step programs; `missing` names each absent piece
    (a BTF type, a kfunc, a ring flag), so the message says exactly what to look for."""

    missing: tuple[str, ...] = ()


class LoopError(OSError):
    """io_uring_enter() failed while running the loop; the message says what the errno means
    here (EINVAL: the program returned something other than CONTINUE/STOP, EINTR: a signal
    woke the sleeping loop)."""


@dataclass
class UnsuitableRingError(CompileError):
    """The ring cannot run this loop: the kernel refused to attach to it (`errno` EOPNOTSUPP:
    its setup flags), io_uring_setup refused the flags (`errno` EINVAL), or the program's view
    of a ring region does not fit the ring (`errno` 0: the loader's check).  A CompileError, so
    the CLI prints the message and the hint, no traceback."""

    errno: int = 0


def _error(message: str, hint: str = "") -> CompileError:
    return CompileError([Diagnostic(None, message, hint)])


# --- the running kernel's BTF, indexed without decoding it ---------------------------------------
_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0),
          15: (0, 12), 17: (4, 0), 19: (0, 12)}   # kind → (fixed bytes, bytes per vlen item)
_MODIFIER_KINDS = {8, 9, 10, 11, 18}               # typedef, volatile, const, restrict, type_tag


class VmlinuxIndex:
    """The kernel's BTF (about 120k types, 5 MB) reduced to what a loader looks up: where each
    type's record starts, decoding only the types asked for.

    `btf.parse_btf` decodes every type into dataclasses: 0.4 s here, 5 s in the TCG guest the
    mainline tests run in.  This walks the type section as u32 words, remembering only each
    record's start (0.25 s in the guest), and finds a name by searching the raw bytes for its
    string offset (C speed) and checking that a record starts there."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise btfmod.BtfError(f"kernel BTF is {len(data)} bytes, shorter than its header")
        magic, _v, _f, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
        if magic != btfmod.BTF_MAGIC or (hdr_len + type_off) % 4 or type_len % 4:
            raise btfmod.BtfError(f"kernel BTF has magic {magic:#06x} or unaligned types")
        self.data = data
        self.types_at = hdr_len + type_off
        self.blob = data[self.types_at:self.types_at + type_len]
        self.words = memoryview(self.blob).cast("I")
        self.strings = data[hdr_len + str_off:hdr_len + str_off + str_len]
        fixed, per = [0] * 32, [0] * 32
        for kind, (f, p) in _EXTRA.items():
            fixed[kind], per[kind] = f // 4, p // 4
        offsets = [0]      # type id → word index of its record (id 0, void, has none)
        append, words, i, n = offsets.append, self.words, 0, len(self.words)
        while i < n:
            append(i)
            info = words[i + 1]
            kind = info >> 24 & 0x1F
            i += 3 + fixed[kind] + per[kind] * (info & 0xFFFF)
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def kind(self, type_id: int) -> int:
        return self.words[self.offsets[type_id] + 1] >> 24 & 0x1F if 0 < type_id < len(self.offsets) else 0

    def string(self, offset: int) -> str:
        end = self.strings.find(b"\0", offset)
        return self.strings[offset:end if end >= 0 else None].decode(errors="replace")

    def ids(self, name: str, kind: str | None = None) -> list[int]:
        """Type ids named `name` (of `kind`: "struct", "func", "enum", ...)."""
        wanted, number = b"\0" + name.encode() + b"\0", _KIND_NUMBERS.get(kind) if kind else None
        out, at = [], self.strings.find(wanted)
        while at >= 0:
            needle, pos = struct.pack("<I", at + 1), self.blob.find(struct.pack("<I", at + 1))
            while pos >= 0:
                if pos % 4 == 0:
                    type_id = bisect.bisect_left(self.offsets, pos // 4, 1)
                    if type_id < len(self.offsets) and self.offsets[type_id] == pos // 4:
                        if number is None or self.kind(type_id) == number:
                            out.append(type_id)
                pos = self.blob.find(needle, pos + 1)
            at = self.strings.find(wanted, at + 1)
        return sorted(out)

    def find(self, name: str, kind: str) -> int | None:
        found = self.ids(name, kind)
        return found[0] if found else None

    def type(self, type_id: int) -> Any:
        """The type `type_id` as a `btf` dataclass (struct, union, enum, ptr, func, ...)."""
        if not 0 < type_id < len(self.offsets):
            return btfmod.Void()
        pos = self.types_at + 4 * self.offsets[type_id]
        name_off, info, size_or_type = struct.unpack_from("<III", self.data, pos)
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        name, body = self.string(name_off), pos + 12
        words = lambda n, at=body: struct.unpack_from(f"<{n}I", self.data, at)   # noqa: E731
        if kind in (4, 5):
            members = []
            for k in range(vlen):
                m_name, m_type, m_off = words(3, body + 12 * k)
                bits, off = ((m_off >> 24), m_off & 0xFFFFFF) if kflag else (0, m_off)
                members.append(btfmod.Member(self.string(m_name), m_type, off, bits))
            cls = btfmod.Struct if kind == 4 else btfmod.Union
            return cls(name, size_or_type, tuple(members))
        if kind == 6:
            values = []
            for k in range(vlen):
                v_name, value = words(2, body + 8 * k)
                if kflag and value >> 31:
                    value -= 1 << 32
                values.append(btfmod.EnumValue(self.string(v_name), value))
            return btfmod.Enum(name, size_or_type, tuple(values), bool(kflag))
        if kind == 19:
            values = []
            for k in range(vlen):
                v_name, lo, hi = words(3, body + 12 * k)
                values.append(btfmod.EnumValue(self.string(v_name), lo | hi << 32))
            return btfmod.Enum64(name, size_or_type, tuple(values), bool(kflag))
        if kind == 1:
            (enc,) = words(1)
            return btfmod.Int(name, size_or_type, enc & 0xFF, (enc >> 16) & 0xFF, (enc >> 24) & 0x0F)
        if kind == 2:
            return btfmod.Ptr(size_or_type, name)
        if kind == 12:
            return btfmod.Func(name, size_or_type, vlen)
        if kind == 13:
            params = tuple(btfmod.Param(self.string(p), t)
                           for p, t in (words(2, body + 8 * k) for k in range(vlen)))
            return btfmod.FuncProto(size_or_type, params, name)
        if kind in _MODIFIER_KINDS:
            return btfmod.Typedef(name, size_or_type)   # only followed, never shown
        if kind == 3:
            elem, index, nelems = words(3)
            return btfmod.Array(elem, index, nelems, name)
        return btfmod.Fwd(name)

    def resolve(self, type_id: int) -> int:
        for _ in range(64):
            if self.kind(type_id) not in _MODIFIER_KINDS:
                break
            type_id = self.type(type_id).type
        return type_id

    def is_func_pointer(self, type_id: int) -> bool:
        t = self.type(self.resolve(type_id))
        return isinstance(t, btfmod.Ptr) and self.kind(self.resolve(t.type)) == 13

    def size_of(self, type_id: int) -> int:
        t = self.type(self.resolve(type_id))
        if isinstance(t, btfmod.Ptr):
            return 8
        if isinstance(t, btfmod.Array):
            return t.nelems * self.size_of(t.type)
        return getattr(t, "size", 0)

    def enum_value(self, enum: str, value: str) -> int | None:
        for type_id in self.ids(enum, "enum") + self.ids(enum, "enum64"):
            for v in self.type(type_id).values:
                if v.name == value:
                    return v.value
        return None


_KIND_NUMBERS = {"int": 1, "ptr": 2, "array": 3, "struct": 4, "union": 5, "enum": 6, "fwd": 7,
                 "typedef": 8, "func": 12, "func_proto": 13, "var": 14, "datasec": 15,
                 "enum64": 19}


@functools.lru_cache(maxsize=1)
def vmlinux() -> VmlinuxIndex | None:
    """The running kernel's BTF index, or None where the kernel exposes no BTF."""
    try:
        with open(VMLINUX_BTF, "rb") as f:
            return VmlinuxIndex(f.read())
    except (OSError, btfmod.BtfError):
        return None


# --- probing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelOps:
    """Where the kernel's BTF puts things: the ids and offsets a struct_ops attach needs."""

    ops_id: int                      # struct io_uring_bpf_ops: attach_btf_id of the programs
    ops: btfmod.Struct
    value_id: int                    # struct bpf_struct_ops_io_uring_bpf_ops: the map's value
    value_size: int
    data_offset: int                 # where the ops sit inside the map value
    func_members: frozenset[str]     # members that are function pointers (programs go there)
    kfunc_ids: Mapping[str, int]
    numbers: Mapping[str, int]       # KERNEL_ENUMS keys → values


@dataclass(frozen=True)
class Support:
    """What `probe()` found.  `missing` is empty when loop_step programs can run here."""

    release: str
    missing: tuple[str, ...]
    ring_flags: int                  # the optional ring setup flags this kernel accepts
    kernel_ops: KernelOps | None = None

    @property
    def ok(self) -> bool:
        return not self.missing

    def require(self) -> KernelOps:
        """The kernel's layout, or MainlineUnsupportedError naming everything missing."""
        if self.missing or self.kernel_ops is None:
            raise MainlineUnsupportedError(
                [Diagnostic(None, f"this kernel ({self.release}) cannot run io_uring loop_step "
                            f"programs: it lacks {'; '.join(self.missing)}",
                            "io_uring_bpf_ops needs Linux 7.1 or later built with "
                            "CONFIG_IO_URING_BPF_OPS=y and BTF (Debian's 7.2 kernels have it; "
                            "this project's tests boot one under QEMU with tools/vm/vmrun)")],
                "", "loop_step", tuple(self.missing))
        return self.kernel_ops


def probe(refresh: bool = False) -> Support:
    """What the running kernel offers for io_uring_bpf_ops, from its BTF and from trying the ring
    flags (cached: the kernel does not change under a process).  Never raises."""
    if refresh:
        _probe.cache_clear()
        vmlinux.cache_clear()
    return _probe()


@functools.lru_cache(maxsize=1)
def _probe() -> Support:
    release = os.uname().release
    missing: list[str] = []
    flags = _probe_ring_flags(missing)
    index = vmlinux()
    if index is None:
        missing.insert(0, f"kernel BTF ({VMLINUX_BTF}, CONFIG_DEBUG_INFO_BTF=y)")
        return Support(release, tuple(missing), flags)
    ops = _probe_btf(index, missing)
    return Support(release, tuple(missing), flags, ops if not missing else None)


def _probe_btf(index: VmlinuxIndex, missing: list[str]) -> KernelOps | None:
    ops_id, value_id = index.find(OPS_TYPE, "struct"), index.find(VALUE_TYPE, "struct")
    ops = index.type(ops_id) if ops_id else None
    if ops is None:
        missing.append(f"BTF type `struct {OPS_TYPE}` (CONFIG_IO_URING_BPF_OPS)")
    funcs = frozenset(m.name for m in ops.members if index.is_func_pointer(m.type)) if ops else frozenset()
    if ops is not None:
        for member in ("loop_step", "ring_fd"):
            if ops.member(member) is None:
                missing.append(f"member `{member}` of the kernel's `struct {OPS_TYPE}`")
    value = index.type(value_id) if value_id else None
    data = value.member("data") if value is not None else None
    if data is None:
        missing.append(f"BTF type `struct {VALUE_TYPE}` with a `data` member (the struct_ops "
                       "value type the kernel registers along with the ops)")
    kfunc_ids = {}
    for name in KFUNCS:
        found = index.find(name, "func")
        if found is None:
            missing.append(f"kfunc `{name}` in BTF")
        else:
            kfunc_ids[name] = found
    numbers = {}
    for key, (enum, value_name) in KERNEL_ENUMS.items():
        number = index.enum_value(enum, value_name)
        if number is None:
            missing.append(f"`{value_name}` in BTF `enum {enum}`")
        else:
            numbers[key] = number
    if ops is None or data is None:
        return None
    return KernelOps(ops_id, ops, value_id, value.size, data.offset, funcs, kfunc_ids, numbers)


def _probe_ring_flags(missing: list[str]) -> int:
    """Sets up (and closes) one-entry rings: the required flags together, then each optional flag
    with them.  Returns the optional flags the kernel accepted."""
    fd, err = _ring_setup(1, REQUIRED_RING_FLAGS)
    if fd < 0:
        names = " | ".join(RING_FLAG_NAMES[f] for f in sorted(RING_FLAG_NAMES) if f & REQUIRED_RING_FLAGS)
        missing.append(f"io_uring rings with {names} (io_uring_setup: {_errno.errorcode.get(err, err)})")
        return 0
    os.close(fd)
    accepted = 0
    for flag in (IORING_SETUP_SQ_REWIND, IORING_SETUP_CQSIZE):
        fd, _ = _ring_setup(1, REQUIRED_RING_FLAGS | flag, 2 if flag == IORING_SETUP_CQSIZE else 0)
        if fd >= 0:
            os.close(fd)
            accepted |= flag
    return accepted


# --- io_uring from ctypes ------------------------------------------------------------------------
class _SqOffsets(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("head", "tail", "ring_mask", "ring_entries", "flags",
                                               "dropped", "array", "resv1")] + [("user_addr", ctypes.c_uint64)]


class _CqOffsets(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("head", "tail", "ring_mask", "ring_entries", "overflow",
                                               "cqes", "flags", "resv1")] + [("user_addr", ctypes.c_uint64)]


class _Params(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("sq_entries", "cq_entries", "flags", "sq_thread_cpu",
                                               "sq_thread_idle", "features", "wq_fd")] + [
        ("resv", ctypes.c_uint32 * 3), ("sq_off", _SqOffsets), ("cq_off", _CqOffsets)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_munmap = _libc.munmap
_munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_view_of = ctypes.pythonapi.PyMemoryView_FromMemory
_view_of.restype = ctypes.py_object
_view_of.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int)


def _ring_setup(entries: int, flags: int, cq_entries: int = 0, params: _Params | None = None) -> tuple[int, int]:
    """io_uring_setup(); (fd, 0) or (-1, errno)."""
    p = params if params is not None else _Params()
    p.flags = flags
    if flags & IORING_SETUP_CQSIZE:
        p.cq_entries = cq_entries
    fd = _syscall(_NR_IO_URING_SETUP, ctypes.c_uint(entries), ctypes.byref(p))
    return (fd, 0) if fd >= 0 else (-1, ctypes.get_errno())


def _enter(fd: int, to_submit: int, min_complete: int, flags: int) -> int:
    """io_uring_enter() with no sigmask (arg and argsz passed as 0: the kernel reads them)."""
    ret = _syscall(_NR_IO_URING_ENTER, fd, to_submit, min_complete, flags, ctypes.c_void_p(0),
                   ctypes.c_size_t(0))
    return ret if ret >= 0 else -ctypes.get_errno()


class LoopRing:
    """A ring a loop_step program can drive, and the plain userspace calls on the same ring.

    `flags` are what io_uring_setup accepted: REQUIRED_RING_FLAGS, plus IORING_SETUP_SQ_REWIND
    and IORING_SETUP_CQSIZE where the kernel has them (`sq_rewind` says which).  With SQ_REWIND
    the kernel takes SQEs from index 0 on every submission and ignores the SQ head and tail:
    that is what `bpf_io_uring_submit_sqes` programs rely on, and what `submit` does here too.
    """

    def __init__(self, sq_entries: int = 8, cq_entries: int | None = None, *,
                 flags: int | None = None) -> None:
        self.fd = -1
        self._maps: list[tuple[int, int]] = []
        self._views: list[memoryview] = []
        self.attachments: list[LoopAttachment] = []
        self.enter_calls = 0       # io_uring_enter() calls made through this object
        params = _Params()
        if flags is None:
            flags = REQUIRED_RING_FLAGS | (probe().ring_flags & IORING_SETUP_SQ_REWIND)
            if cq_entries is not None:
                flags |= IORING_SETUP_CQSIZE
        fd, err = _ring_setup(sq_entries, flags, cq_entries or 0, params)
        if fd < 0:
            what = (f"io_uring_setup({sq_entries}, cq_entries={cq_entries}, flags={_flag_names(flags)}) "
                    f"failed: {_errno.errorcode.get(err, err)}")
            sqpoll_with = flags & (IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SQ_REWIND)
            if err == _errno.EINVAL and flags & IORING_SETUP_SQPOLL and sqpoll_with:
                raise UnsuitableRingError([Diagnostic(
                    None, f"{what}: the kernel takes no IORING_SETUP_SQPOLL with "
                    f"{_flag_names(sqpoll_with)}", LOOP_RING_RULE)], err)
            raise OSError(err, f"{what} ({os.strerror(err)})")
        self.fd, self.flags = fd, flags
        self._finalizer = weakref.finalize(self, _close_ring, self._views, self._maps, [fd])
        try:
            self._map(params)
        except BaseException:
            self.close()
            raise
        self.sq_entries, self.cq_entries = params.sq_entries, params.cq_entries
        self.sq_off, self.cq_off = params.sq_off, params.cq_off
        self.features = params.features

    @classmethod
    def fitting(cls, obj: Any) -> "LoopRing":
        """A ring sized for `obj`'s constant-size region views (check_region_views): as many CQ
        entries as its CQ view holds CQEs, at least as many SQ entries as its SQ view holds
        SQEs -- what `pybpf-uring run` gives a module."""
        ring = cls()
        cq, sq = ring.cq_entries, ring.sq_entries
        for view in region_views(obj):
            if view.region == IOU_REGION_CQ and view.size > ring.cq_off.cqes:
                cq = (view.size - ring.cq_off.cqes) // CQE_SIZE
            elif view.region == IOU_REGION_SQ:
                sq = max(sq, -(-view.size // SQE_SIZE))
        if (cq, sq) == (ring.cq_entries, ring.sq_entries):
            return ring
        ring.close()
        return cls(sq, cq)

    @property
    def sq_rewind(self) -> bool:
        return bool(self.flags & IORING_SETUP_SQ_REWIND)

    def _map(self, p: _Params) -> None:
        rings_size = max(p.cq_off.cqes + p.cq_entries * CQE_SIZE, p.sq_off.flags + 4)
        if not p.features & _IORING_FEAT_SINGLE_MMAP:   # 5.4+ has it; a loop kernel always does
            raise OSError(_errno.ENOTSUP, "io_uring lacks IORING_FEAT_SINGLE_MMAP")
        self.rings = self._map_region(rings_size, _IORING_OFF_SQ_RING)
        self.sqes = self._map_region(p.sq_entries * SQE_SIZE, _IORING_OFF_SQES)
        self.rings_u32 = self.rings.cast("I")
        self._views.append(self.rings_u32)

    def _map_region(self, size: int, offset: int) -> memoryview:
        # libc's mmap, not mmap.mmap: that one dup()s the ring fd, and a stray fd keeps the ring
        # (and any ops attached to it) alive after close()
        address = _mmap(None, size, _mmapmod.PROT_READ | _mmapmod.PROT_WRITE,
                        _mmapmod.MAP_SHARED | _mmapmod.MAP_POPULATE, self.fd, offset)
        if address in (None, ctypes.c_void_p(-1).value):
            err = ctypes.get_errno()
            raise OSError(err, f"mmap of io_uring region {offset:#x} failed: {os.strerror(err)}")
        self._maps.append((address, size))
        view = _view_of(address, size, 0x200)   # PyBUF_WRITE
        self._views.append(view)
        return view

    # --- the ring's layout, as a loop_step program needs it -----------------------------------
    def layout(self) -> dict[str, int]:
        """Values of RING_LAYOUT_GLOBALS for this ring."""
        return {"sq_entries": self.sq_entries, "cq_entries": self.cq_entries,
                "cq_mask": self.cq_entries - 1,
                "cq_head_offset": self.cq_off.head, "cq_tail_offset": self.cq_off.tail,
                "cqes_offset": self.cq_off.cqes, "sq_head_offset": self.sq_off.head,
                "sq_tail_offset": self.sq_off.tail}

    @property
    def cq_head(self) -> int:
        return self.rings_u32[self.cq_off.head // 4]

    @property
    def cq_tail(self) -> int:
        return self.rings_u32[self.cq_off.tail // 4]

    # --- loop_step programs -------------------------------------------------------------------
    def attach(self, obj: Any, ops: str | None = None, globals: Mapping[str, Any] | None = None,
               log_level: int = 0) -> "LoopAttachment":
        """Load the loop_step program(s) of `obj` (a BpfObject, a `@loop_step` function, a path,
        or ELF bytes: `as_object`) and attach
        its ops variable `ops` (the only one, by default) to this ring; see the module docstring.
        `globals` sets data-section variables before loading (the only way to set `.rodata`);
        ring-layout globals the caller leaves out are filled from this ring.  Each attach loads
        the object anew, so two rings running one object keep separate globals."""
        return attach(self, obj, ops, globals, log_level)

    def run(self, timeout: float | None = None) -> int:
        """Run the attached loop: one io_uring_enter(GETEVENTS) that returns when the program
        says STOP.  Returns the kernel's result (0); raises LoopError on failure.

        A loop that never says STOP keeps the call in the kernel until a signal arrives; the
        loop ignores io_uring_enter's own timeout (IORING_ENTER_EXT_ARG: checked on 7.2), so
        `timeout` (seconds, main thread only) arms a SIGALRM timer instead, and a loop still
        running when it fires raises LoopError(ETIME).  The previous SIGALRM handler and timer
        are put back afterwards."""
        if timeout is None:
            return self._checked_enter(0, 0, IORING_ENTER_GETEVENTS, "running the loop")
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("run(timeout=...) uses SIGALRM, which only the main thread can handle")
        fired = []
        old_handler = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
        old_timer = signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return self._checked_enter(0, 0, IORING_ENTER_GETEVENTS, "running the loop")
        except LoopError as exc:
            if exc.errno == _errno.EINTR and fired:
                raise LoopError(_errno.ETIME, f"the loop did not stop within {timeout} s (its "
                                "program kept returning IOU_LOOP_CONTINUE)") from None
            raise
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
            if old_timer[0]:
                signal.setitimer(signal.ITIMER_REAL, *old_timer)

    # --- the same ring from userspace (the benchmark's baseline) ------------------------------
    def prep_nop(self, index: int, user_data: int) -> None:
        """A NOP SQE at SQ slot `index` (slot `index` is what SQ_REWIND submits `index`-th)."""
        sqe = _NOP_SQE_PREFIX + user_data.to_bytes(8, "little") + bytes(24)
        self.sqes[index * SQE_SIZE:(index + 1) * SQE_SIZE] = sqe

    def submit(self, n: int, wait: int = 0) -> int:
        """Submit the SQEs written at slots [0, n) and wait for `wait` completions; the number
        submitted.  Without SQ_REWIND the tail is advanced over the same slots first."""
        if not self.sq_rewind:
            tail = self.sq_off.tail // 4
            self.rings_u32[tail] = (self.rings_u32[tail] + n) & 0xFFFFFFFF
        flags = IORING_ENTER_GETEVENTS if wait else 0
        return self._checked_enter(n, wait, flags, "submitting")

    def reap(self, limit: int = 1 << 30) -> list[tuple[int, int, int]]:
        """(user_data, res, flags) of the CQEs between head and tail; advances the head."""
        head_i, tail_i = self.cq_off.head // 4, self.cq_off.tail // 4
        u32, mask, base = self.rings_u32, self.cq_entries - 1, self.cq_off.cqes
        head, tail = u32[head_i], u32[tail_i]
        out = []
        while head != tail and len(out) < limit:
            at = base + (head & mask) * CQE_SIZE
            out.append(_CQE.unpack_from(self.rings, at))
            head = (head + 1) & 0xFFFFFFFF
        u32[head_i] = head
        return out

    def _checked_enter(self, to_submit: int, wait: int, flags: int, what: str) -> int:
        if self.fd < 0:
            raise ValueError("the ring is closed")
        self.enter_calls += 1
        ret = _enter(self.fd, to_submit, wait, flags)
        if ret < 0:
            raise LoopError(-ret, f"io_uring_enter ({what}) failed: {_errno.errorcode.get(-ret, -ret)}"
                            f" ({_ENTER_MEANINGS.get(-ret) or os.strerror(-ret)})")
        return ret

    # --- lifetime -----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        """Detach every attachment (the ops hold the ring), unmap, close the fd; idempotent."""
        for att in list(self.attachments):
            att.close()
        self._finalizer()
        self.fd = -1

    def __enter__(self) -> "LoopRing":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.fd < 0:
            return "<LoopRing closed>"
        names = "|".join(RING_FLAG_NAMES.get(f, hex(f)).removeprefix("IORING_SETUP_") for f in _bits(self.flags))
        return f"<LoopRing fd {self.fd} sq {self.sq_entries} cq {self.cq_entries} {names}>"


_CQE = struct.Struct("<QiI")
_NOP_SQE_PREFIX = bytes([IORING_OP_NOP]) + bytes(31)   # opcode, then zeros up to user_data at 32
_ENTER_MEANINGS = {
    _errno.EINVAL: "the loop_step program returned a value other than IOU_LOOP_CONTINUE (0) or "
                   "IOU_LOOP_STOP (1), or the call's arguments are invalid for this ring",
    _errno.EINTR: "a signal interrupted the loop while it slept waiting for CQEs",
    _errno.EEXIST: "the ring was created by another task (IORING_SETUP_SINGLE_ISSUER)",
}


def _close_ring(views: list, maps: list, fds: list) -> None:
    for v in views:
        v.release()
    views.clear()
    for address, size in maps:
        _munmap(address, size)
    maps.clear()
    while fds:
        os.close(fds.pop())


def _bits(flags: int) -> list[int]:
    return [1 << i for i in range(32) if flags >> i & 1]


def _flag_names(flags: int) -> str:
    return " | ".join(RING_FLAG_NAMES.get(f, hex(f)) for f in _bits(flags))


# --- the object side: ops variables (pure data) ---------------------------------------------
@dataclass(frozen=True)
class OpsSpec:
    """An ops variable of an object (`SEC(".struct_ops.link") struct io_uring_bpf_ops x = {...}`):
    its name, its struct's name, the bytes it was initialised with, and for each function-pointer
    member the program it points at."""

    name: str
    section: str
    type_name: str
    members: tuple[btfmod.Member, ...]
    sizes: Mapping[str, int]
    data: bytes
    programs: Mapping[str, str]      # member name → program name

    @property
    def link(self) -> bool:
        return self.section == ".struct_ops.link"


def ops_specs(obj: Any) -> list[OpsSpec]:
    """The struct_ops variables of `obj`, read from its BTF DATASECs and the relocations of
    their section (each function-pointer member is an R_BPF_64_ABS64 against the program)."""
    btf = obj.btf
    if btf is None:
        return []
    sections = {s.name: s for s in obj.sections}
    out = []
    for t in btf.types:
        if not isinstance(t, btfmod.Datasec) or t.name not in OPS_SECTIONS or t.name not in sections:
            continue
        sec = sections[t.name]
        relocs = {off: obj.symbols[sym] for off, sym, _type in obj.relocation_records.get(sec.index, [])}
        by_name = {s.name: s for s in obj.symbols if s.section == sec.index and s.type == "object"}
        for v in t.vars:
            var = btf[v.type]
            st = btf[btf.resolve(var.type)]
            if not isinstance(st, btfmod.Struct):
                raise _error(f"struct_ops variable {var.name!r} is a {st.kind}, not a struct")
            start = by_name[var.name].value if var.name in by_name else v.offset
            progs = {}
            for m in st.members:
                sym = relocs.get(start + m.offset)
                if sym is not None:
                    progs[m.name] = sym.name
            sizes = {m.name: btf.size_of(m.type) for m in st.members}
            out.append(OpsSpec(var.name, t.name, st.name, st.members, sizes,
                               sec.data[start:start + st.size], progs))
    return out


# --- attaching -----------------------------------------------------------------------------------
class LoopAttachment:
    """Loop_step programs attached to a ring: the object's maps and BTF (a `load.LoadedObject`),
    the programs, the struct_ops map and the link.  `close()` (or `detach()`) closes the link
    first, which unregisters the ops from the ring, then everything else."""

    def __init__(self, ring: LoopRing, spec: OpsSpec, loaded: Any) -> None:
        self.ring, self.spec, self.loaded = ring, spec, loaded
        self.programs: dict[str, Any] = {}        # name → load.KernelProgram
        self.map_fd = self.link_fd = -1
        self._fds: list[int] = []                 # closed last-opened first: link, map, programs
        # .data/.bss/.rodata by name (`globals_view`); .rodata is set through attach's globals
        self.globals = Globals(global_vars(loaded.spec),
                               KernelSections(loaded.maps, "LoopRing.attach(obj, globals={...})"))
        self._finalizer = weakref.finalize(self, _close_fds, self._fds, loaded)

    def _own(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    @property
    def attached(self) -> bool:
        return self.link_fd >= 0

    @property
    def maps(self) -> dict:
        return self.loaded.maps

    def close(self) -> None:
        self._finalizer()
        self.link_fd = self.map_fd = -1
        for prog in self.programs.values():
            prog._fd = -1
        if self in self.ring.attachments:
            self.ring.attachments.remove(self)

    detach = close

    def __enter__(self) -> "LoopAttachment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"link fd {self.link_fd}" if self.attached else "detached"
        return f"<LoopAttachment {self.spec.name} ({', '.join(self.programs)}) {state}>"


def _close_fds(fds: list[int], loaded: Any) -> None:
    while fds:
        kernel.close(fds.pop())
    loaded.close()


def attach(ring: LoopRing, obj: Any, ops: str | None = None, globals: Mapping[str, Any] | None = None,
           log_level: int = 0) -> LoopAttachment:
    """`LoopRing.attach`: see there and the module docstring."""
    from . import load as loadmod
    if ring.closed:
        raise ValueError("the ring is closed")
    obj = as_object(obj)
    spec = _choose_ops(obj, ops)
    kops = probe().require()
    needed = sorted({r.symbol for p in obj.programs for r in p.relocations if r.kind == "kfunc"})
    _require_kfuncs(needed)
    check_region_views(obj, ring, set(spec.programs.values()))
    values = {k: v for k, v in ring.layout().items()
              if k in global_vars(obj) and k not in (globals or {})}
    values.update(globals or {})
    loaded = loadmod.load(obj, only=set(), globals=values)   # BTF and data maps only
    att = LoopAttachment(ring, spec, loaded)
    try:
        if loaded.btf is None:
            raise _error(f"the kernel refused the object's BTF, which a struct_ops map needs: "
                         f"{loaded.btf_error or 'the object has no BTF (compile with -g)'}")
        value = bytearray(kops.value_size)
        data = memoryview(value)[kops.data_offset:kops.data_offset + kops.ops.size]
        for member in spec.members:
            _fill_member(att, obj, spec, member, kops, data, log_level)
        ring_fd = kops.ops.member("ring_fd")
        data[ring_fd.offset:ring_fd.offset + 4] = ring.fd.to_bytes(4, "little")
        att.map_fd = att._own(_struct_ops_map(spec, kops, loaded.btf.fd, bytes(value)))
        att.link_fd = att._own(_link_create(att.map_fd, kops.numbers["attach_type"], ring))
    except BaseException:
        att.close()
        raise
    ring.attachments.append(att)
    return att


def as_object(obj: Any) -> Any:
    """A BpfObject from what a user has at hand: the object itself, a `@loop_step` function
    (compiled here), a path to an ELF file, or its bytes."""
    from .objfile import BpfObject
    if isinstance(obj, BpfObject):
        return obj
    if callable(getattr(obj, "compile", None)):
        return obj.compile()
    return BpfObject.read(obj)


def _choose_ops(obj: Any, name: str | None) -> OpsSpec:
    found = ops_specs(obj)
    mine = [s for s in found if s.type_name == OPS_TYPE]
    if name is not None:
        chosen = [s for s in found if s.name == name]
        if not chosen:
            raise _error(f"the object has no struct_ops variable {name!r}",
                         f"its ops variables: {', '.join(s.name for s in found) or 'none'}")
        if chosen[0].type_name != OPS_TYPE:
            raise _error(f"struct_ops variable {name!r} is a `struct {chosen[0].type_name}`, not "
                         f"`struct {OPS_TYPE}`")
        return chosen[0]
    if len(mine) != 1:
        what = "no" if not mine else f"{len(mine)}"
        raise _error(f"the object has {what} `struct {OPS_TYPE}` variables in "
                     f"{' or '.join(OPS_SECTIONS)}" + ("; name one with ops=..." if mine else ""),
                     "a loop_step object defines SEC(\".struct_ops.link\") struct "
                     f"{OPS_TYPE} NAME = {{ .loop_step = (void *)PROGRAM }}")
    return mine[0]


# --- the program's views of the ring's regions ------------------------------------------------------
@dataclass(frozen=True)
class RegionView:
    """A `bpf_io_uring_get_region(ctx, region, size)` call whose region and size are constants
    in the code: a Python `get_region(ctx, IOU_REGION_CQ, View)` passes sizeof(View), fixed when
    the program was compiled.  (A C program that sizes its view from `.rodata` globals has no
    such call: the loader fills those from the ring, so they fit it by construction.)"""

    program: str
    region: int
    size: int
    slot: int


_REGION_NAMES = {IOU_REGION_MEM: "MEM", IOU_REGION_CQ: "CQ", IOU_REGION_SQ: "SQ"}


def region_views(obj: Any, programs: set[str] | None = None) -> list[RegionView]:
    """The constant-size region views of `obj`'s struct_ops programs (of `programs`, if given).

    For each get_region call, r2 and r3 are traced back through the straight-line code before
    it: a `mov` of an immediate (or a lddw) is a constant; anything else, a jump or a call in
    between, or a jump into that stretch from elsewhere, leaves the call out."""
    from . import isa
    out = []
    for prog in obj.programs:
        if prog.kind != "struct_ops" or (programs is not None and prog.name not in programs):
            continue
        linked = prog.linked()
        slots = list(isa.with_slots(linked.instructions))
        targets = {_jump_target(at, ins) for at, ins in slots} - {None}
        for rel in linked.relocations:
            if rel.kind == "kfunc" and rel.symbol == "bpf_io_uring_get_region":
                args = _constant_args(slots, targets, rel.insn_index, (2, 3))
                if None not in args:
                    out.append(RegionView(prog.name, args[0], args[1], rel.insn_index))
    return out


def _jump_target(at: int, ins: Any) -> int | None:
    from . import isa
    if ins.cls not in (isa.JMP, isa.JMP32) or ins.op in (isa.CALL, isa.EXIT):
        return None
    return at + 1 + (ins.imm if ins.cls == isa.JMP32 and ins.op == isa.JA else ins.off)


def _constant_args(slots: list, targets: set[int], call: int, regs: tuple[int, ...]) -> list[int | None]:
    from . import isa
    found: dict[int, int | None] = {}
    before = [(at, ins) for at, ins in slots if at < call]
    boundary = call
    for at, ins in reversed(before):
        if boundary in targets or ins.cls in (isa.JMP, isa.JMP32) or len(found) == len(regs):
            break
        boundary = at
        written = _written_register(ins)
        if written not in regs or written in found:
            continue
        if ins.cls in (isa.ALU, isa.ALU64) and ins.op == isa.MOV and ins.source == isa.K and not ins.off:
            found[written] = ins.imm & isa.M32 if ins.cls == isa.ALU else ins.imm & ((1 << 64) - 1)
        elif ins.cls == isa.LD and ins.mode == isa.IMM and ins.src == 0:
            found[written] = (ins.imm & isa.M32) | (ins.imm_hi & isa.M32) << 32
        else:
            found[written] = None
    return [found.get(r) for r in regs]


def _written_register(ins: Any) -> int | None:
    from . import isa
    if ins.cls in (isa.ALU, isa.ALU64, isa.LD, isa.LDX):
        return ins.dst
    if ins.cls == isa.STX and ins.mode == isa.ATOMIC and ins.imm & isa.FETCH:
        return 0 if ins.imm == isa.CMPXCHG else ins.src
    return None


def check_region_views(obj: Any, ring: "LoopRing", programs: set[str] | None = None) -> None:
    """Refuse (UnsuitableRingError, errno 0) a program whose constant-size view of the CQ or SQ
    region does not fit `ring`, before anything is loaded.

    The kfunc only returns NULL when a view is larger than the whole region (page-rounded), so
    a mismatch would otherwise run: a CQ view with fewer CQEs than the ring makes cq_reap fail
    with -EINVAL once the head passes its last CQE; one with more, indexed with its own mask,
    reads slots that are not CQEs.  So a CQ view that reaches into the CQEs must hold exactly
    the ring's `cq_entries` (a view of the header alone fits any ring), and an SQ view at most
    the ring's `sq_entries` SQEs."""
    problems = [d for v in region_views(obj, programs) if (d := _view_problem(v, ring)) is not None]
    if problems:
        raise UnsuitableRingError(problems, 0)


def _view_problem(view: RegionView, ring: "LoopRing") -> Diagnostic | None:
    where = f"program {view.program!r} views the {_REGION_NAMES[view.region]} region as {view.size} bytes"
    if view.region == IOU_REGION_CQ:
        header, entries = ring.cq_off.cqes, ring.cq_entries
        if view.size <= header or view.size == header + entries * CQE_SIZE:
            return None
        cqes, odd = divmod(view.size - header, CQE_SIZE)
        declared = f"{cqes} CQEs after the {header}-byte header" + (f" and {odd} bytes more" if odd else "")
        fix = f"create the ring with LoopRing(..., cq_entries={cqes}) or " if not odd and cqes & (cqes - 1) == 0 else ""
        return Diagnostic(None, f"{where} ({declared}), but this ring's CQ holds {entries} CQEs "
                          f"({header + entries * CQE_SIZE} bytes)",
                          f"a CQ view's size is fixed when the program is compiled: {fix}declare the "
                          f"view's `cqes: Cqe[{entries}]`")
    if view.region == IOU_REGION_SQ and view.size > ring.sq_entries * SQE_SIZE:
        sqes = -(-view.size // SQE_SIZE)
        return Diagnostic(None, f"{where} ({sqes} SQEs), but this ring has {ring.sq_entries} SQ entries "
                          f"({ring.sq_entries * SQE_SIZE} bytes)",
                          f"create the ring with LoopRing({sqes}, ...) or view at most Sqe[{ring.sq_entries}]")
    return None


def _require_kfuncs(names: list[str]) -> None:
    index = vmlinux()
    absent = [n for n in names if index is None or index.find(n, "func") is None]
    if absent:
        raise MainlineUnsupportedError(
            [Diagnostic(None, f"the program calls kernel functions this kernel "
                        f"({os.uname().release}) does not have: {', '.join(absent)}")],
            "", "loop_step", tuple(f"kfunc `{n}`" for n in absent))


def _fill_member(att: LoopAttachment, obj: Any, spec: OpsSpec, member: btfmod.Member,
                 kops: KernelOps, data: memoryview, log_level: int) -> None:
    """One member of the kernel's ops value: a program fd for a function pointer, the object's
    initial bytes for anything else (as libbpf does), matched to the kernel's member by name."""
    theirs = kops.ops.member(member.name)
    if theirs is None:
        raise _error(f"`struct {OPS_TYPE}` in this kernel has no member {member.name!r}",
                     f"its members: {', '.join(m.name for m in kops.ops.members)}")
    if member.name in spec.programs:
        if member.name not in kops.func_members:
            raise _error(f"ops variable {spec.name!r} puts program {spec.programs[member.name]!r} in "
                         f"{member.name!r}, which is not a function pointer in this kernel")
        prog = _load_program(att, obj, spec.programs[member.name], member.name, kops, log_level)
        data[theirs.offset:theirs.offset + 8] = prog.fd.to_bytes(8, "little")
        return
    size = spec.sizes[member.name]
    raw = spec.data[member.offset:member.offset + size]
    if any(raw) and member.name != "ring_fd":
        data[theirs.offset:theirs.offset + size] = raw


def _load_program(att: LoopAttachment, obj: Any, name: str, member: str, kops: KernelOps,
                  log_level: int) -> Any:
    from . import load as loadmod
    prog = obj.program(name)
    if prog.kind != "struct_ops":
        raise _error(f"ops member {member!r} points at {name!r}, a {prog.kind} program in section "
                     f"{prog.section!r}", "loop_step programs live in SEC(\"struct_ops.s/NAME\")")
    linked = prog.linked()
    kfuncs = [r for r in linked.relocations if r.kind == "kfunc"]
    code = bytearray(loadmod.relocate(dataclasses.replace(
        linked, relocations=tuple(r for r in linked.relocations if r.kind != "kfunc")), att.loaded.maps))
    for rel in kfuncs:   # ids from our index: load.kfunc_id would decode the whole vmlinux BTF
        off = rel.insn_index * kernel.INSN_SIZE
        code[off + 1] = (code[off + 1] & 0x0F) | (kernel.BPF_PSEUDO_KFUNC_CALL << 4)
        code[off + 2:off + 8] = bytes(2) + vmlinux().find(rel.symbol, "func").to_bytes(4, "little")
    flags = kernel.BPF_F_SLEEPABLE if prog.sleepable else 0
    index = [m.name for m in kops.ops.members].index(member)
    records = att.loaded.btf.records(linked)
    extra = records.attrs() if records else {}

    def attempt(level: int) -> kernel.ProgLoadResult:
        return kernel.prog_load(kops.numbers["prog_type"], bytes(code), obj.license or "GPL", name,
                                flags, level, log_size=(loadmod.DEFAULT_LOG_SIZE if level else 0),
                                expected_attach_type=index, attach_btf_id=kops.ops_id, **extra)
    res = attempt(log_level)
    if res.fd < 0 and not res.log:
        res = attempt(max(log_level, 1))
    if res.fd < 0:
        raise loadmod.verifier_error(name, res.errno, res.log, loadmod.line_info_of(linked))
    fd = att._own(res.fd)
    kp = loadmod.KernelProgram(name, fd, "loop_step", kops.numbers["prog_type"], res.log, prog, att)
    att.programs[name] = kp
    return kp


def _struct_ops_map(spec: OpsSpec, kops: KernelOps, btf_fd: int, value: bytes) -> int:
    attr = kernel.MapCreateAttr(map_type=kops.numbers["map_type"], key_size=4,
                                value_size=kops.value_size, max_entries=1,
                                map_flags=BPF_F_LINK if spec.link else 0,
                                map_name=_object_name(spec.name), btf_fd=btf_fd,
                                btf_vmlinux_value_type_id=kops.value_id)
    try:
        fd = kernel.sys_bpf(kernel.BPF_MAP_CREATE, attr)
    except OSError as exc:
        raise OSError(exc.errno, f"creating the struct_ops map {spec.name!r} failed: "
                      f"{kernel.errno_meaning(exc.errno)}") from None
    try:
        kernel.map_update_elem(fd, bytes(4), value)
    except OSError as exc:
        kernel.close(fd)
        hint = {_errno.EBADF: "ring_fd is not an io_uring fd",
                _errno.EINVAL: "the kernel refused a member of the ops value"}.get(exc.errno, "")
        raise OSError(exc.errno, f"filling the struct_ops map {spec.name!r} failed: "
                      f"{kernel.errno_meaning(exc.errno)}" + (f" ({hint})" if hint else "")) from None
    return fd


def _object_name(text: str) -> bytes:
    """Kernel object names: at most 15 characters of [A-Za-z0-9_.] (else EINVAL)."""
    clean = "".join(c if c.isalnum() or c in "_." else "_" for c in text)
    return clean[:kernel.BPF_OBJ_NAME_LEN - 1].encode()


class _LinkCreateAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("target_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


def _ring_refusal(flags: int) -> str:
    """What io_install_bpf() (io_uring/bpf-ops.c) holds against a ring with these setup flags."""
    parts = []
    if flags & REFUSED_RING_FLAGS:
        parts.append(f"with {_flag_names(flags & REFUSED_RING_FLAGS)}")
    if not flags & IORING_SETUP_DEFER_TASKRUN:
        parts.append("without IORING_SETUP_DEFER_TASKRUN")
    return " and ".join(parts)


_LINK_MEANINGS = {
    _errno.EBUSY: "the ring already has io_uring_bpf_ops attached (one per ring)",
    # a ring whose flags explain it is an UnsuitableRingError (_ring_refusal); this is the rest
    _errno.EOPNOTSUPP: "ring_fd is not an io_uring, or the kernel refuses a BPF loop on this ring",
    _errno.EBADF: "ring_fd is not an open io_uring",
}


def _link_create(map_fd: int, attach_type: int, ring: LoopRing) -> int:
    attr = _LinkCreateAttr(map_fd=map_fd, attach_type=attach_type)
    try:
        return kernel.sys_bpf(probe().kernel_ops.numbers["link_create"], attr)
    except OSError as exc:
        err = exc.errno
        why = _ring_refusal(ring.flags) if err == _errno.EOPNOTSUPP else ""
        if why:
            raise UnsuitableRingError([Diagnostic(
                None, f"the kernel refused to attach the loop to ring fd {ring.fd} (BPF_LINK_CREATE: "
                f"EOPNOTSUPP): the ring was set up {why}", LOOP_RING_RULE)], err) from None
        raise OSError(err, f"BPF_LINK_CREATE (attaching the ops to ring fd {ring.fd}) failed: "
                      f"{kernel.errno_name(err)} ({_LINK_MEANINGS.get(err) or os.strerror(err)})") from None
