"""The io_uring system calls and ring memory, thinly: setup, mmap, enter, and own-process memory.

This is the only module that talks to the kernel's io_uring.  It knows nothing about extra CQs,
BPF requests or user_data tags (that is `ring`); it creates a ring, maps its three regions and
gives `ring` byte-level access to them, and it turns a failing call into an `OSError` whose
message names the call and the errno.

Why ctypes and not the `liburing` PyPI package (the `ring` module docstring has the one-off
measurement behind the choice; `bench/ring.py` measures the ring today): the runtime must copy a program's raw 64-byte
SQE into an SQ slot and read raw 16-byte CQEs.  liburing's Python `SQE` exposes seven fields
(no `addr`, `off`, `buf_index` or raw bytes; `opcode` is read-only) and its preps take Python
`bytes`, not addresses, so a program's SQE cannot be reproduced through it at all.  Here the SQE
array, the SQ ring and the CQ ring are mapped once and seen through memoryviews: a slot is
written with one slice assignment and a head/tail word is read through a view cast to u32, which
costs a Python index, not a ctypes call.  Only `io_uring_enter` itself goes through ctypes, once
per submit-and-wait.

Syscall numbers 425-427 are the same on every Linux architecture (they were added after the
tables were unified).
"""
from __future__ import annotations

import ctypes
import errno as _errno
import mmap
import os
from dataclasses import dataclass

from ..limits import MAX_SQ_ENTRIES
from ..uapi import (CQE_SIZE, EACCES, EINVAL, ENOSYS, EPERM, IORING_ENTER_EXT_ARG,
                   IORING_ENTER_GETEVENTS, IORING_FEAT_EXT_ARG, IORING_FEAT_SINGLE_MMAP,
                   IORING_OFF_CQ_RING, IORING_OFF_SQ_RING, IORING_OFF_SQES, IORING_REGISTER_FILES,
                   IORING_REGISTER_RING_FDS, IORING_SETUP_COOP_TASKRUN, IORING_SETUP_CQSIZE, IORING_SETUP_NO_SQARRAY,
                   IORING_SETUP_SUBMIT_ALL, IORING_SETUP_TASKRUN_FLAG, IORING_UNREGISTER_FILES, IORING_UNREGISTER_RING_FDS,
                   NR_IO_URING_ENTER, NR_IO_URING_REGISTER, NR_IO_URING_SETUP, SQE_SIZE)

__all__ = ["RawRing", "SetupError", "io_uring_setup", "io_uring_enter", "io_uring_register",
           "read_user", "write_user", "libc", "syscall"]


class _SqOffsets(ctypes.Structure):
    _fields_ = [("head", ctypes.c_uint32), ("tail", ctypes.c_uint32), ("ring_mask", ctypes.c_uint32),
                ("ring_entries", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("dropped", ctypes.c_uint32), ("array", ctypes.c_uint32), ("resv1", ctypes.c_uint32),
                ("user_addr", ctypes.c_uint64)]


class _CqOffsets(ctypes.Structure):
    _fields_ = [("head", ctypes.c_uint32), ("tail", ctypes.c_uint32), ("ring_mask", ctypes.c_uint32),
                ("ring_entries", ctypes.c_uint32), ("overflow", ctypes.c_uint32),
                ("cqes", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("resv1", ctypes.c_uint32),
                ("user_addr", ctypes.c_uint64)]


class _Params(ctypes.Structure):
    _fields_ = [("sq_entries", ctypes.c_uint32), ("cq_entries", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("sq_thread_cpu", ctypes.c_uint32),
                ("sq_thread_idle", ctypes.c_uint32), ("features", ctypes.c_uint32),
                ("wq_fd", ctypes.c_uint32), ("resv", ctypes.c_uint32 * 3),
                ("sq_off", _SqOffsets), ("cq_off", _CqOffsets)]


class _GeteventsArg(ctypes.Structure):
    _fields_ = [("sigmask", ctypes.c_uint64), ("sigmask_sz", ctypes.c_uint32),
                ("min_wait_usec", ctypes.c_uint32), ("ts", ctypes.c_uint64)]


class _RsrcUpdate(ctypes.Structure):
    """struct io_uring_rsrc_update, as IORING_(UN)REGISTER_RING_FDS read it."""
    _fields_ = [("offset", ctypes.c_uint32), ("resv", ctypes.c_uint32), ("data", ctypes.c_uint64)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_int64)]


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


libc = ctypes.CDLL(None, use_errno=True)
"""The C library, whose functions the native ring calls by address (engine.native_ring)."""

# syscall() is variadic and reads every argument as a long.  Declaring `argtypes` would make that
# explicit but costs ~700 ns per call (1.04 us against 0.36 us, measured once in 2026-11), which
# is most of a NOP's round trip; instead small ints go as C ints (libffi sign-extends them to the
# full register on x86-64 and aarch64) and every pointer or size goes as an explicit
# c_void_p/c_size_t.
syscall = libc.syscall          # ring.py's hot paths call io_uring_enter through it directly
syscall.restype = ctypes.c_long

_process_vm_readv = libc.process_vm_readv
_process_vm_writev = libc.process_vm_writev
for _f in (_process_vm_readv, _process_vm_writev):
    _f.restype = ctypes.c_ssize_t
    _f.argtypes = (ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong,
                   ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.c_ulong)


_c_void_p, _c_size_t = ctypes.c_void_p, ctypes.c_size_t

# The regions are mapped with libc's mmap, not Python's `mmap.mmap`: that one dup()s the fd it
# maps (three fds per ring instead of one).  A memoryview over the raw mapping comes from
# PyMemoryView_FromMemory; every view is released before munmap, so no Python object can reach
# the unmapped pages afterwards (a released view raises ValueError instead).
_mmap = libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_munmap = libc.munmap
_munmap.restype = ctypes.c_int
_munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_MAP_FAILED = ctypes.c_void_p(-1).value
_view_of = ctypes.pythonapi.PyMemoryView_FromMemory
_view_of.restype = ctypes.py_object
_view_of.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int)
_PyBUF_WRITE = 0x200


@dataclass
class _Mapping:
    address: int
    size: int


class SetupError(OSError):
    """io_uring_setup refused the flags or sizes a caller asked for (`errno` says why), as
    opposed to a ring that was set up and then failed to map."""


def oserror(call: str, err: int) -> OSError:
    name = _errno.errorcode.get(err, str(err))
    return OSError(err, f"{call} failed: {name} ({os.strerror(err)})")


def io_uring_setup(entries: int, flags: int, cq_entries: int = 0) -> tuple[int, _Params]:
    """The raw call: (the ring's fd, or -errno; the parameters the kernel filled in).
    `cq_entries` counts only with IORING_SETUP_CQSIZE in `flags`."""
    params = _Params()
    params.flags, params.cq_entries = flags, cq_entries
    fd = syscall(NR_IO_URING_SETUP, entries, ctypes.byref(params))
    return (fd if fd >= 0 else -ctypes.get_errno()), params


def io_uring_enter(fd: int, to_submit: int, min_complete: int, flags: int, arg: int = 0,
                   argsz: int = 0) -> int:
    """The raw call: the kernel's result, or -errno (the caller decides which errnos are normal)."""
    # All six arguments always: without EXT_ARG the kernel reads arg/argsz as a sigmask and its
    # size, so stale register contents there would make the call fail with EINVAL.
    ret = syscall(NR_IO_URING_ENTER, fd, to_submit, min_complete, flags, _c_void_p(arg),
                   _c_size_t(argsz))
    return ret if ret >= 0 else -ctypes.get_errno()


def io_uring_register(fd: int, opcode: int, arg: int, nr: int, call: str) -> int:
    """io_uring_register(2); a failure is an OSError naming `call` and the errno."""
    ret = syscall(NR_IO_URING_REGISTER, fd, opcode, _c_void_p(arg), nr)
    if ret < 0:
        raise oserror(call, ctypes.get_errno())
    return ret


class RawRing:
    """One kernel ring: its fd, its mapped regions and the offsets of the words inside them.

    Attributes used by `ring` on its hot path are plain ints and memoryviews: `sq_u32` / `cq_u32`
    are the ring regions seen as u32 arrays (head/tail/mask words are indexed by byte offset // 4),
    `sqes` and `cq` are byte views for slot copies.  Nothing else here runs per operation.

    `flags` None sets up the ring `ring` wants (below); given flags (the mainline loop ring's)
    are used as they are, with IORING_SETUP_CQSIZE added when `cq_entries` is given, and a
    refusal is a SetupError carrying the errno.
    """

    def __init__(self, entries: int, cq_entries: int | None = None, flags: int | None = None) -> None:
        self.fd = -1
        self._maps: list[_Mapping] = []
        self._views: list[memoryview] = []
        # SUBMIT_ALL (5.18) keeps submitting past an SQE that fails, so one bad SQE does not hold
        # back the rest of a batch; COOP_TASKRUN (5.19) spares an IPI per completion, and
        # TASKRUN_FLAG makes the kernel say (IORING_SQ_TASKRUN) when completions wait for an
        # io_uring_enter to post them, so a non-blocking peek knows to make one.  Older
        # kernels refuse unknown flags with EINVAL: try again without them.
        tries = ((IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, 0)
                 if flags is None else (flags,))
        for setup_flags in tries:
            if cq_entries is not None:
                setup_flags |= IORING_SETUP_CQSIZE
            fd, params = io_uring_setup(entries, setup_flags, cq_entries or 0)
            if fd >= 0:
                break
            if flags is not None:
                raise SetupError(-fd, oserror("io_uring_setup", -fd).strerror)
            if -fd != EINVAL:
                raise oserror("io_uring_setup", -fd)
        else:
            raise ValueError(f"io_uring_setup refused entries={entries}, cq_entries={cq_entries}"
                             f" (EINVAL: at most {MAX_SQ_ENTRIES} SQ entries, CQ at least as large)")
        self.fd, self.flags = fd, setup_flags
        try:
            self._map(params)
        except BaseException:
            self.close()
            raise
        self.features = params.features
        self.sq_entries = params.sq_entries
        self.cq_entries = params.cq_entries
        so, co = params.sq_off, params.cq_off
        self.sq_off, self.cq_off = so, co     # the kernel's byte offsets, for a loop's layout
        self.sq_head, self.sq_tail, self.sq_mask = so.head // 4, so.tail // 4, so.ring_mask // 4
        self.sq_dropped = so.dropped // 4
        self.sq_flags = so.flags // 4
        self.cq_head, self.cq_tail, self.cq_mask = co.head // 4, co.tail // 4, co.ring_mask // 4
        self.cq_overflow = co.overflow // 4
        self.cqes_off = co.cqes
        # The SQ array indirection is never used: slot i always holds SQE i, set once here as
        # liburing does (a NO_SQARRAY ring has no array), so submitting is "write the SQE, bump
        # the tail".
        if not self.flags & IORING_SETUP_NO_SQARRAY:
            array = self.sq_u32
            base = so.array // 4
            for i in range(params.sq_entries):
                array[base + i] = i
        if not self.features & IORING_FEAT_EXT_ARG:
            self.close()
            raise OSError(ENOSYS, "this kernel's io_uring lacks IORING_FEAT_EXT_ARG (5.11+), "
                                  "which timed waits need")

    def _map(self, p: _Params) -> None:
        prot, flags = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | mmap.MAP_POPULATE
        sq_size = (p.sq_off.flags + 4 if p.flags & IORING_SETUP_NO_SQARRAY else
                   p.sq_off.array + p.sq_entries * 4)
        cq_size = p.cq_off.cqes + p.cq_entries * CQE_SIZE
        if p.features & IORING_FEAT_SINGLE_MMAP:
            sq = cq = self._map_region(max(sq_size, cq_size), IORING_OFF_SQ_RING, prot, flags)
        else:
            sq = self._map_region(sq_size, IORING_OFF_SQ_RING, prot, flags)
            cq = self._map_region(cq_size, IORING_OFF_CQ_RING, prot, flags)
        sqes = self._map_region(p.sq_entries * SQE_SIZE, IORING_OFF_SQES, prot, flags)
        # host addresses of the three regions, for the engine's native ring (engine/native_ring)
        self.sq_address, self.cq_address = self._maps[0].address, self._maps[-2].address
        self.sqes_address = self._maps[-1].address
        self.sq_u32 = sq.cast("I")
        self.cq_u32 = cq.cast("I")
        self.cq = cq
        self.sqes = sqes
        self._views += [self.sq_u32, self.cq_u32]

    def _map_region(self, size: int, offset: int, prot: int, flags: int) -> memoryview:
        address = _mmap(None, size, prot, flags, self.fd, offset)
        if address is None or address == _MAP_FAILED:
            raise oserror(f"mmap of io_uring region {offset:#x}", ctypes.get_errno())
        self._maps.append(_Mapping(address, size))
        view = _view_of(address, size, _PyBUF_WRITE)
        self._views.append(view)
        return view

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def enter(self, to_submit: int, min_complete: int, flags: int) -> int:
        return io_uring_enter(self.fd, to_submit, min_complete, flags)

    def enter_timeout(self, to_submit: int, min_complete: int, seconds: float) -> int:
        """Submit and wait for `min_complete` CQEs at most `seconds`; -ETIME when the time runs out."""
        ts = _Timespec(int(seconds), int((seconds - int(seconds)) * 1e9))
        arg = _GeteventsArg(0, 8, 0, ctypes.addressof(ts))
        return io_uring_enter(self.fd, to_submit, min_complete,
                              IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
                              ctypes.addressof(arg), ctypes.sizeof(arg))

    def register_files(self, fds: list[int]) -> None:
        arr = (ctypes.c_int32 * len(fds))(*fds)
        io_uring_register(self.fd, IORING_REGISTER_FILES, ctypes.addressof(arr), len(fds),
                          "io_uring_register(IORING_REGISTER_FILES)")

    def unregister_files(self) -> None:
        io_uring_register(self.fd, IORING_UNREGISTER_FILES, 0, 0,
                          "io_uring_register(IORING_UNREGISTER_FILES)")

    def register_ring_fd(self) -> int:
        """Register the ring's fd in the calling thread's table of rings: the index an
        io_uring_enter with IORING_ENTER_REGISTERED_RING takes instead of the fd, which spares
        the kernel looking the fd up on every call (~12 ns of a NOP's ~150, measured 2026-12).
        The table is the thread's own, and holds a reference to the ring until
        `unregister_ring_fd(index)` from the same thread: a caller registers for a stretch of
        enters and unregisters after it."""
        update = _RsrcUpdate(0xFFFF_FFFF, 0, self.fd)      # offset -1: any free index
        io_uring_register(self.fd, IORING_REGISTER_RING_FDS, ctypes.addressof(update), 1,
                          "io_uring_register(IORING_REGISTER_RING_FDS)")
        return update.offset

    def unregister_ring_fd(self, index: int) -> None:
        update = _RsrcUpdate(index, 0, 0)
        io_uring_register(self.fd, IORING_UNREGISTER_RING_FDS, ctypes.addressof(update), 1,
                          "io_uring_register(IORING_UNREGISTER_RING_FDS)")

    def close(self) -> None:
        """Unmap every region and close the fd; safe to call twice and after a failed setup."""
        for v in self._views:
            v.release()
        self._views = []
        for m in self._maps:
            _munmap(m.address, m.size)
        self._maps = []
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


# --- this process's own memory at addresses a program supplies -------------------------------
# process_vm_readv/writev on our own pid return EFAULT for an unmapped or protected address
# instead of delivering SIGSEGV, which is what the RFC's copy_{from,to}_user promise a program.

def _checked(n: int, call: str) -> int:
    """A fault is an answer (the caller returns -EFAULT); a call the sandbox forbids is not: a
    seccomp filter or a missing syscall must not pass for a bad pointer in a program."""
    if n < 0:
        err = ctypes.get_errno()
        if err in (EPERM, ENOSYS, EACCES):
            raise oserror(call, err)
    return n


def read_user(address: int, size: int) -> bytes | None:
    """`size` bytes at `address` of this process, or None if any of them cannot be read."""
    if size == 0:
        return b""
    buf = ctypes.create_string_buffer(size)
    local = _Iovec(ctypes.addressof(buf), size)
    remote = _Iovec(address, size)
    n = _checked(_process_vm_readv(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0),
                 "process_vm_readv")
    return buf.raw if n == size else None


def write_user(address: int, data: bytes) -> bool:
    """Write `data` at `address` of this process; False (nothing or part written) if it faults."""
    if not data:
        return True
    buf = ctypes.create_string_buffer(bytes(data), len(data))
    local = _Iovec(ctypes.addressof(buf), len(data))
    remote = _Iovec(address, len(data))
    n = _checked(_process_vm_writev(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0),
                 "process_vm_writev")
    return n == len(data)
