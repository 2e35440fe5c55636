"""The host side of the RFC io_uring runtime: a real kernel ring, extra CQs, and BPF requests.

What the kernel does and what this module emulates (docs/abi.md §A):

* SQEs other than IORING_OP_BPF go to the real kernel ring (`ring_sys.RawRing`).  The RFC's
  `cq_idx` (SQE offset 48) is unknown to a mainline kernel, so before an SQE reaches its slot the
  runtime clears offset 48 and replaces `user_data` with an internal *tag* (`TAG_BASE | slot`);
  the tag table remembers the original user_data and cq_idx.  Reaping looks the tag up, restores
  the user_data and routes the CQE to its CQ.  A tag lives until the request's last CQE (one
  without IORING_CQE_F_MORE), so multishot requests keep theirs.  Cancel-style SQEs, whose `addr`
  names another request's user_data, have that addr translated to the target's tag (the live
  request with that user_data in the lowest tag slot; so IORING_ASYNC_CANCEL_ALL by user_data
  reaches one request).  A poll update that changes the target's user_data changes it in the
  tag table instead.  An SQE with IOSQE_CQE_SKIP_SUCCESS keeps
  its own user_data (its tag could never be freed: success posts nothing), so it may only
  complete on CQ 0.  A CQE whose user_data is not a live tag (IORING_OP_MSG_RING
  from another ring) is delivered to CQ 0 unchanged.
* Every CQ, CQ 0 included, is a bounded userspace queue; the kernel's CQ ring is only a transport
  that is drained into them.  A CQE posted from userspace (a program's emit_cqe, a BPF request's
  completion) first drains the kernel ring, so CQ 0 shows kernel and userspace CQEs in the order
  they were posted.  CQ 0 holds as many CQEs as the kernel's CQ ring; CQ i > 0 holds cq_sizes[i-1].
* A full CQ never loses a CQE silently: a completion (kernel CQE or BPF request result) that finds
  it full waits in that CQ's backlog and moves in, in order, as the CQ is reaped; a program's
  emit_cqe is refused with -ENOMEM.  Both count one overflow on that CQ (`ring.overflows`).
* IORING_OP_BPF requests never reach the kernel.  The runtime runs the registered program through
  a `ProgramRunner` (the engine, or a Python stand-in in tests) with a fresh 16-byte
  `io_uring_bpf_ctx` {user_data, wait_nr=0, wait_idx=0} on every run.  If the program leaves
  wait_nr non-zero the request parks until CQ wait_idx holds at least wait_nr CQEs, then runs
  again; when it returns with wait_nr == 0 it completes with res 0 on its CQ (cq_idx of its SQE,
  0 for `submit_bpf`).  The program's return value is not part of the RFC's completion and is
  ignored.  A fault fails the request with a negative res (-EFAULT unless the fault says otherwise)
  and is recorded in `ring.faults`.
* Nothing runs behind the caller's back (no thread): parked requests are re-run whenever the host
  calls into the ring (`wait_cqe`, `peek_cqe`, `ready`, `flush`, `submit*`), and always before a
  CQE is handed to the host -- the RFC kernel runs them as task work before io_uring_enter
  returns, so a waiting program reaps its CQE before the host can.  Queued SQEs reach the kernel at
  the next such call; waiting merges that submission with the wait into one io_uring_enter, so a
  program that queues an SQE and parks on its CQ costs one io_uring_enter per round.  Before a BPF
  request's completion is posted, the SQEs queued so far are submitted (the RFC kernel submits
  inside queue_sqe), so an inline completion such as a NOP's lands ahead of it.

Native waits.  When requests are parked on programs the engine JIT-compiled, `wait_cqe` hands
the rounds to `engine.native_ring` (its `native()` runners): routing, queueing, the programs and
their helpers, and io_uring_enter run natively until the waited CQ has a CQE or something only
this module does is due, and the state moves back here when it returns -- this module stays the
reference, and the only code that runs otherwise.

How the engine plugs in: `ring.register(obj, engine)` calls `engine(obj)` once (default
`pybpf_uring.runtime.engine.instantiate`) and gets an `EngineInstance`: `.maps` (what `ring.maps` shows)
and `.runner(program_spec) -> ProgramRunner` for each io_uring program, in table order.  A run
is `runner.run(ctx16, helpers) -> (r0, ctx16)`; the engine maps the program's helper calls onto
`helpers` (a `Helpers`: one method per RFC helper, named by the registry's engine names in
`pybpf_uring/helpers.py`), reading and writing the program's own memory itself.

Results are the RFC's negative errnos as Python ints (the engine turns them into u64 r0).
Addresses inside an SQE (a buffer, a timespec) go to the kernel as they are: they must be
addresses of this process (e.g. derived from ctx.user_data), not engine region addresses.
A fault is a `ProgramFault` or one of the runner's `fault_types`.  `tests/test_ring.py`'s
`InterpreterRunner` is the smallest such adapter over the project's interpreter.

Why a ctypes ring layer and not a liburing binding: docs/runtime.md, "Choice of ring layer".

Not thread-safe: one thread drives a ring (as with liburing).
"""
from __future__ import annotations

import ctypes
import errno as _errno
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .. import display
from . import ring_sys
from ..errors import RingError
from ..bpf.globals_view import Globals, ViewSections, global_vars
from .ring_protocol import (CTX_SIZE, MAX_COPY, TAG_BASE, BpfRequest, CompletionQueue, CqSnapshot,
                            EngineInstance, ProgramFault, ProgramRunner, ProgramSnapshot,
                            RequestSnapshot, RingSnapshot, RingState)
from .ring_sys import RawRing, read_user, syscall, write_user
from ..limits import MAX_CQ_SIZE, MAX_EXTRA_CQS, MAX_PROGRAMS, MAX_SQ_ENTRIES
from ..uapi import (CQE_SIZE, IORING_ASYNC_CANCEL_ALL, IORING_ASYNC_CANCEL_ANY, IORING_ASYNC_CANCEL_FD,
                   IORING_CQE_F_MORE, IORING_ENTER_GETEVENTS, IORING_OP_ASYNC_CANCEL, IORING_OP_BPF,
                   IORING_OP_POLL_REMOVE, IORING_OP_TIMEOUT_REMOVE, IORING_POLL_UPDATE_USER_DATA,
                   IORING_SQ_CQ_OVERFLOW, IORING_SQ_TASKRUN, IOSQE_BUFFER_SELECT, IOSQE_CQE_SKIP_SUCCESS,
                   IOSQE_FIXED_FILE, NR_IO_URING_ENTER, SQE_SIZE)
from ..uring import Cqe, Sqe

__all__ = [
    "Ring", "ProgramRunner", "ProgramFault", "Helpers", "EngineInstance", "DeadlockError",
    "BpfFaultRecord", "MAX_PROGRAMS", "MAX_EXTRA_CQS",
]

# Opcodes whose `addr` is the user_data of the request they act on.
_TARGETS_BY_USER_DATA = frozenset((IORING_OP_POLL_REMOVE, IORING_OP_TIMEOUT_REMOVE,
                                   IORING_OP_ASYNC_CANCEL))

_NR_ENTER, _GETEVENTS = NR_IO_URING_ENTER, IORING_ENTER_GETEVENTS
_HELD_BACK = IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN
_RUN_BUDGET = 4096           # program runs per _progress call
_INF = float("inf")
_MAX_TIMEOUT = float(1 << 40)   # seconds: far beyond any wait, still a valid __kernel_timespec
_CLOSE_GRACE = 1.0           # seconds close() waits for cancelled kernel requests
_U32, _U64 = (1 << 32) - 1, (1 << 64) - 1

_CQE = struct.Struct("<QiI")
_UD = struct.Struct("<Q")
_CQ_IDX = struct.Struct("<H")
_SQE_HEAD = struct.Struct("<BBHiQQI4xQ8xH")   # opcode flags ioprio fd off addr len user_data cq_idx
_U32_AT = struct.Struct("<I")
_SQE_ROUTE = struct.Struct("<BB30xQ8xH")                # opcode flags user_data cq_idx
_CTX = struct.Struct("<QII")


class DeadlockError(RingError, RuntimeError):
    """A wait that nothing could ever end: no CQE queued, no kernel request in flight, and no BPF
    request that could run."""


@dataclass(frozen=True)
class BpfFaultRecord:
    """A BPF request that failed because its program faulted (kept in `ring.faults`)."""

    user_data: int
    program: str
    res: int
    message: str


class Helpers:
    """The RFC helpers as one BPF request sees them; the engine maps program arguments onto these.

    Byte buffers go in and out as `bytes`: the engine reads the program's SQE before `queue_sqe`
    and writes the CQE `reap_cqe` returns.  Return codes are the RFC's (0 or -errno).
    """

    __slots__ = ("_ring", "request")

    def __init__(self, ring: "Ring", request: BpfRequest) -> None:
        self._ring, self.request = ring, request

    def queue_sqe(self, sqe: bytes) -> int:
        """iouring_queue_sqe(ctx, sqe, len): -EINVAL unless len is 64 and cq_idx names a CQ."""
        if len(sqe) != SQE_SIZE:
            return -_errno.EINVAL
        return self._ring._queue_raw(bytes(sqe), from_program=True)

    def emit_cqe(self, cq_idx: int, user_data: int, res: int, flags: int) -> int:
        """iouring_emit_cqe: 0, -EINVAL for a bad CQ, -ENOMEM (one overflow counted) if it is full."""
        ring = self._ring
        if not 0 <= cq_idx < len(ring._cqs):
            return -_errno.EINVAL
        ring._drain()
        cq = ring._cqs[cq_idx]
        if cq.backlog or len(cq.entries) >= cq.size:
            cq.overflow += 1
            return -_errno.ENOMEM
        res &= _U32
        cq.entries.append((user_data & _U64, res - (1 << 32) if res >> 31 else res, flags & _U32))
        ring._version += 1
        return 0

    def reap_cqe(self, cq_idx: int, length: int = CQE_SIZE) -> tuple[int, bytes]:
        """iouring_reap_cqe: (0, cqe) or (-ENOENT / -EINVAL, zeroes of `length`)."""
        ring = self._ring
        if length != CQE_SIZE or not 0 <= cq_idx < len(ring._cqs):
            return -_errno.EINVAL, bytes(max(0, min(length, 1 << 16)))
        ring._drain()
        cq = ring._cqs[cq_idx]
        if not cq.entries:
            return -_errno.ENOENT, bytes(CQE_SIZE)
        ring._version += 1
        return 0, _CQE.pack(*cq.pop())

    def copy_to_user(self, uptr: int, data: bytes) -> int:
        """bpf_copy_to_user: 0, or -EFAULT when any byte at uptr is not writable by this process."""
        return 0 if write_user(uptr & _U64, data) else -_errno.EFAULT

    def copy_from_user(self, uptr: int, size: int) -> tuple[int, bytes]:
        """bpf_copy_from_user: (0, bytes), or (-EFAULT, zeroes) as the kernel zeroes dst on failure."""
        if not 0 <= size <= MAX_COPY:   # no program memory region is that large
            return -_errno.EINVAL, b""
        data = read_user(uptr & _U64, size)
        return (0, data) if data is not None else (-_errno.EFAULT, bytes(size))


class Ring:
    """A real kernel io_uring with RFC extra CQs and BPF requests; see the module docstring.

    `Ring(entries=64, cq_sizes=(128, 128))` has CQ 0 (the kernel's) and CQs 1 and 2::

        with Ring(entries=64, cq_sizes=(128,)) as ring:
            sqe = ring.sqe()
            prep_nop(sqe)
            sqe.user_data, sqe.cq_idx = 7, 1
            ring.submit(sqe)
            cqe = ring.wait_cqe(1, timeout=1.0)      # Cqe(user_data=7, res=0, flags=0)

            ring.register(obj)                      # a BpfObject with @iouring programs
            ring.submit_bpf("pingpong", user_data=1)
            ring.wait_cqe(0)                        # the request's completion, res 0
            ring.maps["hits"]
    """

    def __init__(self, entries: int = 64, cq_sizes: Sequence[int] = ()) -> None:
        self._raw: RawRing | None = None
        _check_int("entries", entries, 1, MAX_SQ_ENTRIES)
        try:
            sizes = tuple(cq_sizes)
        except TypeError:
            raise TypeError(f"cq_sizes must be a sequence of ints, not {type(cq_sizes).__name__}") from None
        if len(sizes) > MAX_EXTRA_CQS:
            raise ValueError(f"cq_sizes has {len(sizes)} extra CQs; the RFC allows at most {MAX_EXTRA_CQS}")
        for i, size in enumerate(sizes):
            _check_int(f"cq_sizes[{i}]", size, 1, MAX_CQ_SIZE)
        raw = RawRing(entries)
        try:
            self._setup(raw, sizes)
        except BaseException:
            raw.close()
            raise
        self._raw = raw

    def _setup(self, raw: RawRing, sizes: tuple[int, ...]) -> None:
        self._fd = raw.fd
        self.entries = raw.sq_entries
        self.cq_entries = raw.cq_entries       # CQ 0's capacity: the kernel's CQ ring
        self.cq_sizes = sizes                  # CQs 1..n, as asked for
        self._cqs = [CompletionQueue(0, raw.cq_entries)] + [CompletionQueue(i + 1, s) for i, s in enumerate(sizes)]
        # SQ state kept locally: only this object writes the tail.
        self._sq_u32, self._sqes = raw.sq_u32, raw.sqes
        self._sq_tail = raw.sq_u32[raw.sq_tail]
        self._sq_tail_i, self._sq_head_i, self._sq_flags_i = raw.sq_tail, raw.sq_head, raw.sq_flags
        self._sq_mask = raw.sq_u32[raw.sq_mask]
        self._cq_u32, self._cq_bytes = raw.cq_u32, raw.cq
        self._cq_head_i, self._cq_tail_i = raw.cq_head, raw.cq_tail
        self._cq_mask = raw.cq_u32[raw.cq_mask]
        self._cqes_off = raw.cqes_off
        # Tag table: slot -> (user_data, cq_idx); free slots reused, newest last.
        self._tags: list[tuple[int, int] | None] = []
        self._free: list[int] = []
        self._in_flight = 0
        # BPF side.
        self._programs: list[tuple[str, ProgramRunner]] = []
        self._runnable: deque[BpfRequest] = deque()
        self._parked: list[BpfRequest] = []
        self._version = 0
        self.maps: Mapping[str, Any] = {}
        self.engine: Any = None  # the registered object's EngineInstance (maps, trace)
        self._object: Any = None
        self._globals: Globals | None = None
        self.faults: deque[BpfFaultRecord] = deque(maxlen=100)
        self.enter_calls = 0
        self._native: Any = None          # engine.native_ring.NativeRing when programs are native
        self._session_helpers: Helpers | None = None

    # --- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the ring fd and every mapping; parked BPF requests are dropped.  Idempotent.

        SQEs queued but never submitted are dropped.  Kernel requests still in flight are
        cancelled and waited for (briefly) first: closing the fd alone lets the kernel cancel them
        later, from a workqueue, and a read could still land in a Python buffer the caller has
        freed by then.
        """
        if self._raw is None:
            return
        try:
            self._cancel_in_flight(_CLOSE_GRACE)
        except OSError:
            pass
        raw, self._raw = self._raw, None
        self._native = None
        self._sq_u32 = self._sqes = self._cq_u32 = self._cq_bytes = None
        self._parked.clear()
        self._runnable.clear()
        raw.close()

    def _discard_pending(self) -> None:
        """Take back SQEs queued but never submitted (as liburing's queue_exit drops them): closing
        must not start a write the caller never flushed."""
        head = self._sq_u32[self._sq_head_i]
        while self._sq_tail != head:
            self._sq_tail = (self._sq_tail - 1) & _U32
            slot = _UD.unpack_from(self._sqes, (self._sq_tail & self._sq_mask) * SQE_SIZE + 32)[0]
            slot -= TAG_BASE
            if 0 <= slot < len(self._tags) and self._tags[slot] is not None:
                self._tags[slot] = None
                self._free.append(slot)
                self._in_flight -= 1
        self._sq_u32[self._sq_tail_i] = self._sq_tail

    def _cancel_in_flight(self, grace: float) -> None:
        self._discard_pending()
        if not self._in_flight:
            return
        cancel = Sqe()
        cancel.opcode, cancel.fd = IORING_OP_ASYNC_CANCEL, -1
        cancel.rw_flags = IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL
        self._queue_raw(bytes(cancel), from_program=False)
        deadline = time.monotonic() + grace
        while self._in_flight:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            res = self._raw.enter_timeout(self._pending(), 1, left)
            self.enter_calls += 1
            if res < 0 and res not in (-_errno.ETIME, -_errno.EINTR, -_errno.EAGAIN, -_errno.EBUSY):
                return
            self._drain()

    @property
    def closed(self) -> bool:
        return self._raw is None

    def __enter__(self) -> "Ring":
        self._live()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_raw", None) is not None:
            try:
                self.close()
            except Exception:   # interpreter shutdown: modules may be half torn down
                pass

    def __repr__(self) -> str:
        state = "closed" if self._raw is None else f"fd={self._fd}"
        entries, sizes = getattr(self, "entries", "?"), getattr(self, "cq_sizes", ())
        return f"Ring(entries={entries}, cq_sizes={sizes}, {state})"

    def fileno(self) -> int:
        """The kernel ring's fd (for IORING_OP_MSG_RING from another ring, or for tracing)."""
        return self._live().fd

    def _live(self) -> RawRing:
        if self._raw is None:
            raise ValueError("operation on a closed Ring")
        return self._raw

    # --- host SQEs -----------------------------------------------------------------------------
    def sqe(self) -> Sqe:
        """A zeroed SQE to fill with the `uring.prep_*` functions; it is copied when submitted."""
        return Sqe()

    def queue(self, sqe: Sqe | bytes) -> None:
        """Put an SQE in the SQ; it reaches the kernel at the next flush/wait/peek/submit.

        The SQE is copied now, but memory it points to (a buffer, a timespec) is read by the kernel
        when it is submitted: keep it alive until then.
        """
        if self._raw is None:
            self._live()
        res = self._queue_raw(bytes(sqe) if type(sqe) is Sqe else _sqe_bytes(sqe), from_program=False)
        if res < 0:
            raise OSError(-res, f"queue: {_errno.errorcode.get(-res, -res)}: the SQ is full and the "
                                "kernel would not take more SQEs")

    def submit(self, sqe: Sqe | bytes | None = None) -> int:
        """Queue `sqe` (if given) and submit everything queued: one io_uring_enter.

        Returns how many SQEs the kernel took.  An IORING_OP_BPF SQE runs its program right away.
        """
        if sqe is not None:
            self.queue(sqe)
        return self.flush()

    def flush(self) -> int:
        """Submit queued SQEs without waiting; runs BPF requests that became runnable."""
        self._live()
        self._progress()
        return self._enter(0, 0)

    def register_files(self, fds: Sequence[int]) -> None:
        """Register a fixed-file table (IORING_REGISTER_FILES): SQEs with IOSQE_FIXED_FILE then
        name a file by its index here (the RFC's write_file example writes through one); -1
        leaves a slot empty."""
        raw = self._live()
        try:
            fds = list(fds)
        except TypeError:
            raise TypeError(f"register_files takes a sequence of fds, not {type(fds).__name__}") from None
        if not fds:
            raise ValueError("register_files: give at least one fd")
        for i, fd in enumerate(fds):
            _check_int(f"fds[{i}]", fd, -1, (1 << 31) - 1)
        raw.register_files(fds)

    def unregister_files(self) -> None:
        """Drop the fixed-file table (ENXIO if there is none)."""
        self._live().unregister_files()

    # --- BPF programs --------------------------------------------------------------------------
    def register(self, obj: Any, engine: Callable[[Any], EngineInstance] | None = None) -> None:
        """Attach `obj`'s io_uring programs (IORING_REGISTER_BPF): table index = their order.

        `engine(obj)` instantiates the object (maps, one runner per program); the default is
        `pybpf_uring.runtime.engine.instantiate`.  A ring takes one program table: a second register
        fails with EBUSY, as in the RFC, until `unregister()`.
        """
        self._live()
        if self._programs:
            raise OSError(_errno.EBUSY, "register: EBUSY: this ring already has BPF programs "
                                        "registered (call ring.unregister() first)")
        try:
            programs = [p for p in obj.programs if getattr(p, "kind", None) == "iouring"]
        except (AttributeError, TypeError):
            raise TypeError(f"register() takes a BpfObject, not {type(obj).__name__}") from None
        if not programs:
            raise ValueError("register: the object has no io_uring programs (sections iouring/NAME "
                             "or iouring.s/NAME)")
        if len(programs) > MAX_PROGRAMS:
            raise ValueError(f"register: the object has {len(programs)} io_uring programs; the RFC "
                             f"registers at most {MAX_PROGRAMS}")
        if engine is None:
            engine = _default_engine()
        instance = engine(obj)
        self._programs = [(p.name, instance.runner(p)) for p in programs]
        self.engine = instance  # its `trace` holds the lines programs printed
        self.maps = instance.maps
        self._object, self._globals = obj, None
        # Runners that can run inside a native wait (JIT-compiled engine programs) get one.
        natives = [getattr(runner, "native", lambda: None)() for _, runner in self._programs]
        if any(n is not None for n in natives):
            from .engine.native_ring import NativeRing
            self._native = NativeRing(self, self._raw, self._cqs, instance, natives)

    def unregister(self) -> None:
        """Detach the programs (IORING_UNREGISTER_BPF); parked requests complete with -ECANCELED."""
        self._live()
        if not self._programs:
            raise OSError(_errno.ENXIO, "unregister: ENXIO: no BPF programs are registered")
        for req in list(self._runnable) + self._parked:
            self._complete(req, -_errno.ECANCELED)
        self._runnable.clear()
        self._parked.clear()
        self._programs = []
        self._native = None
        self.engine = None
        self.maps = {}

    @property
    def globals(self) -> Globals:
        """The registered object's `.data`/`.bss`/`.rodata` variables by name, typed from its BTF
        and read and written in place in the engine's data maps: `ring.globals.count` (see
        `globals_view`).  A ring registers one object at a time; before that it has none."""
        if not self._programs:
            return Globals({}, ViewSections({}))
        if self._globals is None:
            self._globals = Globals(global_vars(self._object), ViewSections(self.maps))
        return self._globals

    @property
    def programs(self) -> tuple[str, ...]:
        """Names of the registered programs, in table order."""
        return tuple(name for name, _ in self._programs)

    @property
    def parked(self) -> int:
        """How many BPF requests are waiting on a CQ."""
        return len(self._parked)

    def submit_bpf(self, program: str | int, user_data: int = 0) -> None:
        """Queue an IORING_OP_BPF request for `program` (name or table index) and run it now."""
        self._live()
        index = self._program_index(program)
        _check_int("user_data", user_data, 0, _U64)
        req = BpfRequest(index, user_data, 0)
        native = self._native
        if native is not None and not self._runnable and native.programs[index] is not None:
            # The new request runs natively, first in the parked list as runnable (wait_nr 0),
            # then the parked ones it finds due: _progress's order (docs/runtime.md)
            self._parked.insert(0, req)
            if self._native_poll(self._cqs[0]):
                self._enter(0, 0)             # the rounds were _progress's, to its end
                return
        elif native is not None:
            self._runnable.append(req)
            self._drain()
            for _ in range(_RUN_BUDGET):
                if not self._runnable:
                    break
                self._run(self._runnable.popleft())
            cqs = self._cqs
            if any(len(cqs[r.wait_idx]) >= r.wait_nr for r in self._parked):
                self._native_poll(cqs[0])
        else:
            self._runnable.append(req)
        self._progress()
        self._enter(0, 0)

    def _program_index(self, program: str | int) -> int:
        if not self._programs:
            raise ValueError("submit_bpf: no BPF programs are registered on this ring (ring.register(obj))")
        if isinstance(program, bool) or not isinstance(program, (int, str)):
            raise TypeError(f"submit_bpf: program must be a name or an index, not {type(program).__name__}")
        if isinstance(program, int):
            if not 0 <= program < len(self._programs):
                raise ValueError(f"submit_bpf: no program at index {program} "
                                 f"(the table has {len(self._programs)})")
            return program
        for i, (name, _) in enumerate(self._programs):
            if name == program:
                return i
        raise ValueError(f"submit_bpf: no io_uring program named {program!r} "
                         f"(registered: {', '.join(self.programs)})")

    # --- completions ---------------------------------------------------------------------------
    def wait_cqe(self, cq: int = 0, timeout: float | None = None) -> Cqe:
        """The next CQE of CQ `cq`, waiting at most `timeout` seconds (TimeoutError, even when
        nothing could ever post one), or for ever (DeadlockError when nothing can)."""
        cqs = self._cqs
        if type(cq) is int and 0 <= cq < len(cqs) and self._raw is not None:
            q = cqs[cq]
        else:
            self._live()
            q = self._cq(cq)
        if q.entries and not (self._runnable or self._parked):
            return Cqe(*q.pop())
        if timeout is not None and timeout != _INF:
            return self._wait_timed(q, timeout)
        # The hot path of a one-at-a-time chain: one io_uring_enter submits what is queued and
        # waits; everything else here is a handful of memoryview reads.
        cq_u32, head_i, tail_i, sq_u32, sq_head_i = (self._cq_u32, self._cq_head_i, self._cq_tail_i,
                                                     self._sq_u32, self._sq_head_i)
        while True:
            # With requests parked on JIT-compiled programs, the rounds run natively until this CQ
            # has a CQE or something only this loop does is due (engine/native_ring.py).
            if self._native_due():
                if self._native_wait(q):
                    return Cqe(*q.pop())
            if cq_u32[head_i] != cq_u32[tail_i]:
                self._drain()
            # Programs whose CQ condition now holds run before the host is handed a CQE, as the
            # RFC kernel runs them (task work) before io_uring_enter returns to userspace.
            if self._runnable or self._parked:
                more = self._progress()
                if q.entries:
                    return Cqe(*q.pop())
                if more:
                    continue
            elif q.entries:
                return Cqe(*(q.pop() if q.backlog else q.entries.popleft()))
            to_submit = (self._sq_tail - sq_u32[sq_head_i]) & _U32
            if not to_submit and not self._in_flight:
                self._stalled(q)
            self.enter_calls += 1
            if syscall(_NR_ENTER, self._fd, to_submit, 1, _GETEVENTS, None, 0) < 0:
                self._enter_failed(ctypes.get_errno())

    def _wait_timed(self, q: CompletionQueue, timeout: float) -> Cqe:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout != timeout:
            raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds, not {timeout}")
        timeout = min(timeout, _MAX_TIMEOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self._native_due() and time.monotonic() < deadline:
                if self._native_wait(q, deadline):
                    return Cqe(*q.pop())
            self._drain()
            more = self._progress()
            if q.entries:
                return Cqe(*q.pop())
            left = deadline - time.monotonic()
            if more and left > 0:
                continue
            pending = self._pending()
            if left <= 0 and not pending:
                raise TimeoutError(f"no CQE on CQ {q.index} within {timeout} s")
            # Even with no time left, queued SQEs are submitted once (a zero timeout polls).
            res = self._raw.enter_timeout(pending, 1, max(left, 0.0))
            self.enter_calls += 1
            if res < 0 and res not in (-_errno.ETIME, -_errno.EINTR, -_errno.EAGAIN, -_errno.EBUSY):
                raise ring_sys.oserror("io_uring_enter", -res)

    def peek_cqe(self, cq: int = 0) -> Cqe | None:
        """The next CQE of CQ `cq` if one is ready, else None; never blocks."""
        self._live()
        q = self._cq(cq)
        self._native_poll(q)
        if not q.entries or self._runnable or self._parked:
            self._drain()
            self._progress()
            if not q.entries and self._pending():
                self._enter(0, 0)
                self._drain()
                self._progress()
        return Cqe(*q.pop()) if q.entries else None

    def ready(self, cq: int = 0) -> int:
        """How many CQEs CQ `cq` holds now (its backlog included)."""
        self._live()
        q = self._cq(cq)
        self._native_poll(q)
        self._drain()
        self._progress()
        return len(q)

    @property
    def overflows(self) -> tuple[int, ...]:
        """Per CQ, how many CQEs found it full (backlogged completions and refused emit_cqe)."""
        raw = self._raw
        kernel = raw.cq_u32[raw.cq_overflow] if raw is not None else 0
        return (self._cqs[0].overflow + kernel,) + tuple(cq.overflow for cq in self._cqs[1:])

    def _cq(self, cq: int) -> CompletionQueue:
        if isinstance(cq, bool) or not isinstance(cq, int):
            raise TypeError(f"cq must be an int CQ index, not {type(cq).__name__}")
        if not 0 <= cq < len(self._cqs):
            raise ValueError(f"no CQ {cq}: this ring has CQs 0..{len(self._cqs) - 1} "
                             f"(cq_sizes={self.cq_sizes})")
        return self._cqs[cq]

    def _native_due(self) -> bool:
        """Rounds a native wait can take: requests parked, none runnable (those start in Python)."""
        return self._native is not None and bool(self._parked) and not self._runnable

    def _native_wait(self, q: CompletionQueue, deadline: float | None = None, poll: bool = False) -> bool:
        """Native rounds until q has a CQE (True) or the Python loop must make one pass (False);
        `deadline` is a time.monotonic() value for timed waits; a `poll` never blocks nor
        reports a deadlock (nothing to do now is its normal end)."""
        from .engine import native_ring as nr
        native = self._native
        deadline_ns = 0 if deadline is None else max(1, int(deadline * 1e9))
        while True:
            code = native.wait(q.index, deadline_ns)
            if code == nr.READY:
                return True
            if code == nr.STALLED:
                if poll or deadline is not None:
                    return False                # a timed wait times out, as the Python loop's
                self._stalled(q)
            if code in (nr.PYTHON, nr.TIMED_OUT):
                return False
            if code == nr.MORE:                 # as after _progress spent its run budget:
                if q.entries:
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False                # the timed loop decides: poll once, time out
            else:                               # a request handed back: FAULTED, COMPLETE, BAD_WAIT
                req = BpfRequest(*native.handed_back)
                name, runner = self._programs[req.prog]
                if code == nr.FAULTED:
                    self._settle(req, name, runner, runner.native_fault)
                elif code == nr.COMPLETE:
                    self._complete(req, 0)
                else:
                    self._bad_wait(req, name)
            if not self._native_due():
                return False

    def _native_poll(self, q: CompletionQueue) -> bool:
        """The rounds that are due now, natively (a wait that may not block: its deadline has
        passed); the Python pass after it finds them done.  True when they ended as _progress
        ends (native code settled) rather than by handing a moment to the Python ring."""
        if not self._native_due():
            return False
        self._native_wait(q, time.monotonic(), poll=True)
        return self._native.settled

    def session_helpers(self) -> Helpers:
        """The Helpers a program's Python helper calls use inside a native wait."""
        if self._session_helpers is None:
            self._session_helpers = Helpers(self, None)
        return self._session_helpers

    def snapshot(self) -> RingSnapshot:
        """A copy of the ring's queues as they stand, for display.ring_html: reading it submits
        nothing and runs no program (ready() and peek_cqe() would run parked ones)."""
        raw, overflows = self._live(), self.overflows
        names = [name for name, _ in self._programs]
        requests = [tuple(RequestSnapshot(names[r.prog], r.user_data, r.cq_idx, r.wait_nr, r.wait_idx,
                                          r.runs) for r in queue) for queue in (self._runnable, self._parked)]
        return RingSnapshot(
            self.entries, raw.sq_u32[raw.sq_head], self._sq_tail, self._pending(),
            raw.cq_u32[raw.cq_head], raw.cq_u32[raw.cq_tail], self.enter_calls,
            tuple(CqSnapshot(q.index, q.size, len(q.entries), len(q.backlog), overflows[q.index])
                  for q in self._cqs), tuple(tag for tag in self._tags if tag is not None),
            tuple(ProgramSnapshot(name, getattr(runner, "backend", type(runner).__name__),
                                  getattr(runner, "runs", None)) for name, runner in self._programs),
            *requests)

    def native_state(self, full: bool) -> RingState:
        """What a native wait takes over (ring_protocol.NativeHost): the SQ tail, tags, CQs,
        counters, and with `full` the parked requests."""
        return RingState(self._sq_tail, self._tags, self._free, self._in_flight, self._cqs,
                         self._version, self.enter_calls, bool(self._runnable),
                         self._parked if full else None)

    def adopt_native_state(self, state: RingState) -> None:
        """The state a native wait hands back (the CQs were updated in place)."""
        self._sq_tail, self._tags, self._free, self._in_flight = (
            state.sq_tail, state.tags, state.free, state.in_flight)
        self._version, self.enter_calls = state.version, state.enter_calls
        if state.parked is not None:
            # a runnable one submit_bpf handed over (wait_nr 0) and native code did not run
            self._runnable.extendleft(reversed([r for r in state.parked if not r.wait_nr]))
            self._parked = [r for r in state.parked if r.wait_nr]

    def _stalled(self, q: CompletionQueue) -> None:
        waits = ", ".join(f"{self._programs[r.prog][0]} on CQ {r.wait_idx} for {r.wait_nr}"
                          for r in self._parked) or "none"
        raise DeadlockError(f"wait_cqe(cq={q.index}) would wait for ever: CQ {q.index} is empty, no "
                            f"kernel request is in flight and no BPF request can run "
                            f"(parked: {waits})")

    # --- the SQ --------------------------------------------------------------------------------
    def _pending(self) -> int:
        """SQEs written to the SQ that the kernel has not consumed yet."""
        return (self._sq_tail - self._sq_u32[self._sq_head_i]) & _U32

    def _queue_raw(self, raw: bytes, from_program: bool) -> int:
        opcode, flags, user_data, cq_idx = _SQE_ROUTE.unpack_from(raw)
        if cq_idx >= len(self._cqs):
            if from_program:
                return -_errno.EINVAL
            raise ValueError(f"SQE cq_idx {cq_idx} names no CQ: this ring has CQs 0..{len(self._cqs) - 1}")
        if opcode == IORING_OP_BPF:
            _, _, ioprio, _, off, addr, length, _, _ = _SQE_HEAD.unpack_from(raw)
            req = BpfRequest(off, user_data, cq_idx)
            if ioprio or length or addr or flags & (IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT) \
                    or not 0 <= off < len(self._programs):
                self._complete(req, -_errno.EINVAL)   # the RFC's prep rejects these
            else:
                self._runnable.append(req)
            self._version += 1
            return 0
        if (self._sq_tail - self._sq_u32[self._sq_head_i]) & _U32 >= self.entries:
            self._enter(0, 0)
            if self._pending() >= self.entries:
                return -_errno.EBUSY
        # Before this SQE takes a tag, so it can never name itself.
        patches = self._retarget(opcode, raw) if opcode in _TARGETS_BY_USER_DATA else ()
        if flags & IOSQE_CQE_SKIP_SUCCESS:
            if cq_idx:
                if from_program:
                    return -_errno.EINVAL
                raise ValueError("an SQE with IOSQE_CQE_SKIP_SUCCESS can only complete on CQ 0: "
                                 "its failure CQE carries its own user_data, which cannot be routed")
            tag = user_data
        elif self._free:   # _new_tag, inlined for the hot path
            slot = self._free.pop()
            self._tags[slot] = (user_data, cq_idx)
            self._in_flight += 1
            tag = TAG_BASE | slot
        else:
            tag = self._new_tag(user_data, cq_idx)
        slot = (self._sq_tail & self._sq_mask) * SQE_SIZE
        sqes = self._sqes
        sqes[slot:slot + SQE_SIZE] = raw
        _UD.pack_into(sqes, slot + 32, tag)
        _CQ_IDX.pack_into(sqes, slot + 48, 0)
        for offset, value in patches:
            _UD.pack_into(sqes, slot + offset, value)
        self._sq_tail = (self._sq_tail + 1) & _U32
        self._sq_u32[self._sq_tail_i] = self._sq_tail
        self._version += 1
        return 0

    def _new_tag(self, user_data: int, cq_idx: int) -> int:
        entry = (user_data, cq_idx)
        if self._free:
            slot = self._free.pop()
            self._tags[slot] = entry
        else:
            slot = len(self._tags)
            self._tags.append(entry)
        self._in_flight += 1
        return TAG_BASE | slot

    def _retarget(self, opcode: int, raw: bytes) -> tuple[tuple[int, int], ...]:
        """Patches (SQE offset, u64) that point a cancel/remove/update SQE at the target's tag."""
        if opcode == IORING_OP_ASYNC_CANCEL and _U32_AT.unpack_from(raw, 28)[0] & (
                IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ANY):
            return ()                                  # keyed by fd or matching all: no user_data
        target = self._tag_of(_UD.unpack_from(raw, 16)[0])
        poll_flags = _U32_AT.unpack_from(raw, 24)[0]
        if opcode == IORING_OP_POLL_REMOVE and poll_flags & IORING_POLL_UPDATE_USER_DATA:
            # The kernel would give the poll a new user_data (in `off`): keep its tag and give the
            # new user_data to the tag instead, so its later CQEs are still routed.
            slot = target - TAG_BASE
            if 0 <= slot < len(self._tags) and self._tags[slot] is not None:
                self._tags[slot] = (_UD.unpack_from(raw, 8)[0], self._tags[slot][1])
                return ((16, target), (8, target))
        return ((16, target),)

    def _tag_of(self, user_data: int) -> int:
        """The kernel-visible tag of a live request with `user_data` (the lowest tag slot), or
        user_data unchanged when none is in flight (the kernel then answers -ENOENT)."""
        for slot, entry in enumerate(self._tags):
            if entry is not None and entry[0] == user_data:
                return TAG_BASE | slot
        return user_data

    def _enter(self, min_complete: int, flags: int) -> int:
        """Submit everything queued (and wait for `min_complete` CQEs); retried on EINTR."""
        while True:
            to_submit = self._pending()
            if not to_submit and not min_complete:
                return 0
            self.enter_calls += 1
            # Six arguments always: a NULL sigmask pointer and size (see ring_sys.io_uring_enter).
            res = syscall(_NR_ENTER, self._fd, to_submit, min_complete, flags, None, 0)
            if res >= 0:
                return res
            self._enter_failed(ctypes.get_errno())
            if min_complete:
                return 0

    def _enter_failed(self, err: int) -> None:
        """EINTR and a full kernel CQ (EBUSY/EAGAIN: make room) are retried by the caller."""
        if err == _errno.EINTR:
            return
        if err in (_errno.EBUSY, _errno.EAGAIN):
            self._drain()
            return
        raise ring_sys.oserror("io_uring_enter", err)

    # --- the kernel CQ -------------------------------------------------------------------------
    def _drain(self) -> None:
        """Move every CQE from the kernel to its userspace CQ, restoring the user_data.

        CQEs the kernel holds back -- in its overflow list (more completions than its CQ ring
        holds), or waiting for task work (COOP_TASKRUN) -- are posted by an io_uring_enter with
        GETEVENTS, a CQ ring's worth at a time: make those (non-blocking) calls while the SQ ring's
        flags say so, as liburing's peek does.
        """
        sq_u32, flags_i, cq = self._sq_u32, self._sq_flags_i, self._cq_u32
        while True:
            held_back = sq_u32[flags_i] & _HELD_BACK
            if held_back:
                self.enter_calls += 1
                if syscall(_NR_ENTER, self._fd, 0, 0, _GETEVENTS, None, 0) < 0:
                    err = ctypes.get_errno()
                    if err not in (_errno.EINTR, _errno.EBUSY, _errno.EAGAIN):
                        raise ring_sys.oserror("io_uring_enter", err)
            head, tail = cq[self._cq_head_i], cq[self._cq_tail_i]
            if head == tail:    # (after an enter that posted nothing, too: never spin on a flag)
                return
            self._route(head, tail)
            if not held_back and not sq_u32[flags_i] & _HELD_BACK:
                return

    def _route(self, head: int, tail: int) -> None:
        """Route the kernel CQ ring's entries head..tail and give the slots back to the kernel."""
        tags, cqs, unpack, buf, mask, base = self._tags, self._cqs, _CQE.unpack_from, self._cq_bytes, \
            self._cq_mask, self._cqes_off
        while head != tail:
            user_data, res, flags = unpack(buf, base + (head & mask) * CQE_SIZE)
            head = (head + 1) & _U32
            slot = user_data - TAG_BASE
            entry = tags[slot] if 0 <= slot < len(tags) else None
            if entry is None:
                cqs[0].post((user_data, res, flags))   # not ours: MSG_RING from another ring
                continue
            if not flags & IORING_CQE_F_MORE:
                tags[slot] = None
                self._free.append(slot)
                self._in_flight -= 1
            q = cqs[entry[1]]
            if q.backlog or len(q.entries) >= q.size:
                q.post((entry[0], res, flags))
            else:
                q.entries.append((entry[0], res, flags))
        self._cq_u32[self._cq_head_i] = head
        self._version += 1

    # --- BPF requests --------------------------------------------------------------------------
    def _progress(self) -> bool:
        """Run runnable requests and parked ones whose CQ condition holds, until nothing changes.

        A program that re-parks on a condition that is already true without changing any CQ or
        the SQ is not re-run in the same call (that would spin).  At most `_RUN_BUDGET` runs per
        call, so programs that keep each other busy for ever (two requests bouncing CQEs with no
        end) cannot keep a timed wait from timing out: returns True when it stopped on the budget
        and more runs are due at once.
        """
        if not self._runnable and not self._parked:
            return False
        budget = _RUN_BUDGET
        while True:
            before = self._version
            self._drain()
            while self._runnable:
                if budget <= 0:
                    return True
                budget -= 1
                self._run(self._runnable.popleft())
            if self._parked:
                parked, self._parked = self._parked, []
                cqs = self._cqs
                for i, req in enumerate(parked):
                    if len(cqs[req.wait_idx]) < req.wait_nr:
                        self._parked.append(req)
                        continue
                    if budget <= 0:
                        self._parked.extend(parked[i:])
                        return True
                    budget -= 1
                    try:
                        self._run(req)
                    except BaseException:
                        self._parked.extend(parked[i + 1:])   # a runner bug loses no other request
                        raise
            if self._version == before and not self._runnable:
                return False

    def _run(self, req: BpfRequest) -> None:
        name, runner = self._programs[req.prog]
        req.runs += 1
        helpers = Helpers(self, req)
        ctx = self._settle(req, name, runner,
                           lambda: runner.run(_CTX.pack(req.user_data, 0, 0), helpers)[1])
        if ctx is None:
            return
        if len(ctx) != CTX_SIZE:
            self._complete(req, -_errno.ECANCELED)
            raise TypeError(f"runner for {name!r} returned a {len(ctx)}-byte ctx; it must be {CTX_SIZE}")
        _, wait_nr, wait_idx = _CTX.unpack(ctx)
        # No version bump for the run itself: only changes to CQs and the SQ count as progress.
        if not wait_nr:
            self._complete(req, 0)
        elif wait_idx >= len(self._cqs):
            req.wait_idx = wait_idx
            self._bad_wait(req, name)
        else:
            req.wait_nr, req.wait_idx = wait_nr, wait_idx
            self._parked.append(req)

    def _settle(self, req: BpfRequest, name: str, runner: ProgramRunner, run: Callable[[], Any]) -> Any:
        """`run()`'s result, or None after failing the request on a fault; a broken runner
        cancels the request (waiters must not hang) and raises."""
        try:
            return run()
        except ProgramFault as exc:
            self._fault(req, name, -abs(exc.errno or _errno.EFAULT), str(exc))
        except Exception as exc:
            if isinstance(exc, tuple(getattr(runner, "fault_types", ()))):
                self._fault(req, name, -_errno.EFAULT, str(exc))
                return None
            self._complete(req, -_errno.ECANCELED)
            raise
        return None

    def _bad_wait(self, req: BpfRequest, name: str) -> None:
        self._fault(req, name, -_errno.EINVAL,
                    f"ctx.wait_idx = {req.wait_idx} names no CQ (the ring has {len(self._cqs)})")

    def _fault(self, req: BpfRequest, name: str, res: int, message: str) -> None:
        self.faults.append(BpfFaultRecord(req.user_data, name, res, message))
        self._complete(req, res)

    def _complete(self, req: BpfRequest, res: int) -> None:
        # The RFC kernel submits a queued SQE inside queue_sqe, so whatever completes inline (a
        # NOP) is posted before the request's own CQE: submit what is queued first, then drain,
        # so kernel CQEs posted before this completion stay ahead of it.
        if self._raw is not None and self._pending():
            self._enter(0, 0)
        self._drain()
        self._cqs[req.cq_idx].post((req.user_data, res, 0))
        self._version += 1

    _repr_html_ = display.ring_html   # Jupyter's view: CQs, requests, programs; runs nothing


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} = {value} is out of range ({lo}..{hi})")


def _sqe_bytes(sqe: Any) -> bytes:
    if isinstance(sqe, Sqe):
        return bytes(sqe)
    if isinstance(sqe, (bytes, bytearray, memoryview)):
        raw = bytes(sqe)
        if len(raw) != SQE_SIZE:
            raise ValueError(f"a raw SQE is {SQE_SIZE} bytes, not {len(raw)}")
        return raw
    raise TypeError(f"expected an Sqe (ring.sqe()) or 64 bytes, not {type(sqe).__name__}")


def _default_engine() -> Callable[[Any], EngineInstance]:
    try:
        from .engine import instantiate  # type: ignore[attr-defined]
    except ImportError:
        raise RuntimeError("the userspace BPF engine does not provide pybpf_uring.runtime.engine.instantiate "
                           "yet; pass register(obj, engine=...) with a ProgramRunner factory") from None
    return instantiate
