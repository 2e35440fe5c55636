"""What the RFC ring (`ring.Ring`) and the engines that run its programs agree on.

Both sides import this module and neither imports the other for it: the engine raises
`ProgramFault` and implements `ProgramRunner`/`EngineInstance`; the engine's native ring
(`engine.native_ring`) takes a wait over from the Python ring through `NativeHost` and moves
`RingState` across.  Keeping the contract here is what lets the dependency point one way
(ring -> engine, never back).  `RingSnapshot` is the ring's other outward view: a copy of its
queues for a display (display.ring_html), which must not run anything to show them.
"""
from __future__ import annotations

import errno as _errno
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from ..errors import RingError
from ..types import sizeof
from ..uring import IoUringCtx

__all__ = ["ProgramFault", "ProgramRunner", "EngineInstance", "BpfRequest", "CompletionQueue",
           "RingState", "NativeHost", "CTX_SIZE", "TAG_BASE", "MAX_COPY", "CqSnapshot", "ProgramSnapshot",
           "RequestSnapshot", "RingSnapshot"]

# The RFC's `struct io_uring_bpf_ctx` every run gets, {user_data, wait_nr, wait_idx}: 16 bytes.
CTX_SIZE = sizeof(IoUringCtx)

# The user_data the kernel sees for a request the ring tagged: TAG_BASE | its tag slot
# (`RingState.tags`); both sides route the kernel's CQEs by it.
TAG_BASE = 0xB9F5_0000_0000_0000
# The largest copy_from_user/copy_to_user size served: no program memory region is that large.
MAX_COPY = 1 << 24


class ProgramFault(RingError):
    """Raised by a `ProgramRunner` when the program faults; fails its request with -errno."""

    def __init__(self, message: str, errno: int = _errno.EFAULT) -> None:
        super().__init__(message)
        self.errno = errno


class ProgramRunner(Protocol):
    """How the runtime runs one registered io_uring program (implemented by the engine).

    `run` gets the 16-byte ctx and the request's helpers (a `ring.Helpers`), and returns the
    program's r0 and the ctx as the program left it (the runtime reads wait_nr and wait_idx from
    it).  A program fault is a `ProgramFault`, or an instance of one of the classes in the
    optional `fault_types` attribute; any other exception is a bug in the runner and propagates
    to the host caller.  A runner that can run inside a native wait also has `native()` (its
    `engine.native_ring.NativeProgram`, or None) and `native_fault()` (raise what its last
    native run ended with).
    """

    def run(self, ctx: bytes, helpers: Any) -> tuple[int, bytes]: ...


class EngineInstance(Protocol):
    """What `Ring.register(obj, engine)` gets from `engine(obj)`: a runner per program and maps."""

    maps: Mapping[str, Any]

    def runner(self, program: Any) -> ProgramRunner: ...


@dataclass(eq=False)
class BpfRequest:
    """One IORING_OP_BPF request: its program's table index, the SQE's user_data and cq_idx,
    the CQ condition it is parked on (wait_nr CQEs on CQ wait_idx; 0 when runnable) and how
    many times its program has run.  The native ring stores these fields in this order
    (`native_ring_ir.REQUEST_WORDS`)."""

    prog: int
    user_data: int
    cq_idx: int
    wait_nr: int = 0
    wait_idx: int = 0
    runs: int = 0


class CompletionQueue:
    """One bounded completion queue of (user_data, res, flags) tuples.

    `entries` holds at most `size` CQEs; completions that found it full wait in `backlog`, in
    order, and each counted one `overflow`."""

    __slots__ = ("index", "size", "entries", "backlog", "overflow")

    def __init__(self, index: int, size: int) -> None:
        self.index, self.size = index, size
        self.entries: deque[tuple[int, int, int]] = deque()
        self.backlog: deque[tuple[int, int, int]] = deque()
        self.overflow = 0

    def __len__(self) -> int:
        return len(self.entries) + len(self.backlog)

    def post(self, cqe: tuple[int, int, int]) -> None:
        """A completion that cannot be refused: queued, or kept in the backlog as an overflow."""
        if self.backlog or len(self.entries) >= self.size:
            self.overflow += 1
            self.backlog.append(cqe)
        else:
            self.entries.append(cqe)

    def pop(self) -> tuple[int, int, int]:
        cqe = self.entries.popleft()
        if self.backlog:
            self.entries.append(self.backlog.popleft())
        return cqe


@dataclass(eq=False)
class RingState:
    """The Python ring's mutable state that a native wait takes over and hands back.

    `NativeHost.native_state()` exports it before a wait (and before a helper's slow case
    returns to native code); `NativeHost.adopt_native_state()` imports it after.  `cqs` are the
    ring's own CompletionQueue objects: the native side rewrites their `entries` and `overflow`
    in place.  `tags[slot]` is (user_data, cq_idx) of a request in the kernel, or None for a
    free slot (`free` lists the free slots, newest last); `sq_tail` is the ring's local SQ tail;
    `version` counts changes to CQs and the SQ (progress); `parked` is None in a partial
    export (a helper's slow case: the parked list stays with the native side); `python_work`
    says requests are runnable, which only the Python ring starts."""

    sq_tail: int
    tags: list[tuple[int, int] | None]
    free: list[int]
    in_flight: int
    cqs: list[CompletionQueue]
    version: int
    enter_calls: int
    python_work: bool
    parked: list[BpfRequest] | None


class NativeHost(Protocol):
    """What the Python ring offers the native side (`engine.native_ring.NativeRing`)."""

    def native_state(self, full: bool) -> RingState:
        """The ring's state now; `parked` only when `full`."""
        ...

    def adopt_native_state(self, state: RingState) -> None:
        """Take the state back after native code changed it (`parked` kept when None)."""
        ...

    def session_helpers(self) -> Any:
        """The `ring.Helpers` a program's Python helper calls use inside a native wait."""
        ...


@dataclass(frozen=True)
class CqSnapshot:
    """One completion queue at a moment: CQEs it holds, completions backlogged behind them,
    and how many found it full (for CQ 0, the kernel's own overflow count included)."""

    index: int
    size: int
    held: int
    backlog: int
    overflows: int


@dataclass(frozen=True)
class ProgramSnapshot:
    """A registered program: its name, the backend its runner uses, and how often it ran
    (None when the runner does not count)."""

    name: str
    backend: str
    runs: int | None


@dataclass(frozen=True)
class RequestSnapshot:
    """A BPF request: its program's name, the SQE's user_data and cq_idx, what it is parked
    on (wait_nr CQEs on CQ wait_idx; 0 when runnable) and how often its program ran."""

    program: str
    user_data: int
    cq_idx: int
    wait_nr: int
    wait_idx: int
    runs: int


@dataclass(frozen=True)
class RingSnapshot:
    """What `Ring.snapshot()` copies out of a ring: the SQ and kernel CQ ring indices, the
    userspace CQs, the kernel requests in flight as (user_data, cq_idx), the registered
    programs and the BPF requests runnable and parked, all values (nothing of the ring's shared).
    Taking one reads memory only -- no io_uring_enter, no program run."""

    entries: int
    sq_head: int
    sq_tail: int
    sq_pending: int
    cq_head: int
    cq_tail: int
    enter_calls: int
    cqs: tuple[CqSnapshot, ...]
    in_flight: tuple[tuple[int, int], ...]
    programs: tuple[ProgramSnapshot, ...]
    runnable: tuple[RequestSnapshot, ...]
    parked: tuple[RequestSnapshot, ...]
