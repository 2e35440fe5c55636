"""The ring a loop_step program drives, over `ring_sys` (setup, mapping and enter are there).

The kernel runs the loop from inside `io_uring_enter(GETEVENTS)`: each step writes SQEs into
the SQ region, submits them with the `bpf_io_uring_submit_sqes` kfunc, reads CQEs from the CQ
region and advances the CQ head itself, then says how long to sleep (`cq_wait_idx`) and whether
to go on; `run` returns when the program says STOP.  The ring is set up with
SINGLE_ISSUER | DEFER_TASKRUN | NO_SQARRAY (what the kernel attaches loops to), plus SQ_REWIND
(SQEs always taken from index 0, so a program writes `sqes[0..n)`) and CQSIZE when the kernel
has them.  The same ring is usable from userspace (`prep_nop`, `submit`, `reap`): the
benchmark's baseline.
"""
from __future__ import annotations

import errno as _errno
import os
import signal
import struct
import threading
import weakref
from typing import Any, Mapping

from ..diagnostics import Diagnostic
from ..errors import RingError
from ..runtime.ring_sys import RawRing, SetupError
from ..uapi import (CQE_SIZE, IORING_ENTER_GETEVENTS, IORING_OP_NOP, IORING_SETUP_CQSIZE,
                    IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_SQ_REWIND, IORING_SETUP_SQPOLL,
                    IOU_LOOP_CONTINUE, IOU_LOOP_STOP, IOU_REGION_CQ, IOU_REGION_SQ, SQE_SIZE)
from .regions import region_views
from .struct_ops import LoopAttachment, attach
from .support import (LOOP_RING_RULE, REQUIRED_RING_FLAGS, RING_FLAG_NAMES, UnsuitableRingError,
                      flag_bits, flag_names, probe)

# Names of globals the loader fills from the ring when an object declares them and the caller
# did not give a value: the program needs the ring's layout as constants (region sizes passed
# to bpf_io_uring_get_region must be known to the verifier), and only the host knows it.
RING_LAYOUT_GLOBALS = ("sq_entries", "cq_entries", "cq_mask", "cq_head_offset", "cq_tail_offset",
                       "cqes_offset", "sq_head_offset", "sq_tail_offset")


class LoopError(RingError, OSError):
    """io_uring_enter() failed while running the loop; the message says what the errno means
    here (EINVAL: the program returned something other than CONTINUE/STOP, EINTR: a signal
    woke the sleeping loop).  An OSError too, as it was before the error hierarchy."""


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
        self.attachments: list[LoopAttachment] = []
        self.enter_calls = 0       # io_uring_enter() calls made through this object
        if flags is None:
            flags = REQUIRED_RING_FLAGS | (probe().ring_flags & IORING_SETUP_SQ_REWIND)
            if cq_entries is not None:
                flags |= IORING_SETUP_CQSIZE
        try:
            # cq_entries counts only with CQSIZE, as io_uring_setup reads it
            raw = RawRing(sq_entries, cq_entries if flags & IORING_SETUP_CQSIZE else None, flags)
        except SetupError as exc:
            err = exc.errno
            what = (f"io_uring_setup({sq_entries}, cq_entries={cq_entries}, flags={flag_names(flags)}) "
                    f"failed: {_errno.errorcode.get(err, err)}")
            sqpoll_with = flags & (IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SQ_REWIND)
            if err == _errno.EINVAL and flags & IORING_SETUP_SQPOLL and sqpoll_with:
                raise UnsuitableRingError([Diagnostic(
                    None, f"{what}: the kernel takes no IORING_SETUP_SQPOLL with "
                    f"{flag_names(sqpoll_with)}", LOOP_RING_RULE)], err) from None
            raise OSError(err, f"{what} ({os.strerror(err)})") from None
        self._raw = raw
        self.fd, self.flags = raw.fd, flags
        self._finalizer = weakref.finalize(self, raw.close)
        self.sq_entries, self.cq_entries = raw.sq_entries, raw.cq_entries
        self.sq_off, self.cq_off = raw.sq_off, raw.cq_off
        self.features = raw.features

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
        return self._raw.cq_u32[self._raw.cq_head]

    @property
    def cq_tail(self) -> int:
        return self._raw.cq_u32[self._raw.cq_tail]

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
        self._raw.sqes[index * SQE_SIZE:(index + 1) * SQE_SIZE] = sqe

    def submit(self, n: int, wait: int = 0) -> int:
        """Submit the SQEs written at slots [0, n) and wait for `wait` completions; the number
        submitted.  Without SQ_REWIND the tail is advanced over the same slots first."""
        if not self.sq_rewind:
            sq_u32, tail = self._raw.sq_u32, self._raw.sq_tail
            sq_u32[tail] = (sq_u32[tail] + n) & 0xFFFFFFFF
        flags = IORING_ENTER_GETEVENTS if wait else 0
        return self._checked_enter(n, wait, flags, "submitting")

    def reap(self, limit: int = 1 << 30) -> list[tuple[int, int, int]]:
        """(user_data, res, flags) of the CQEs between head and tail; advances the head."""
        raw = self._raw
        head_i, tail_i = raw.cq_head, raw.cq_tail
        u32, mask, base = raw.cq_u32, self.cq_entries - 1, raw.cqes_off
        head, tail = u32[head_i], u32[tail_i]
        out = []
        while head != tail and len(out) < limit:
            at = base + (head & mask) * CQE_SIZE
            out.append(_CQE.unpack_from(raw.cq, at))
            head = (head + 1) & 0xFFFFFFFF
        u32[head_i] = head
        return out

    def _checked_enter(self, to_submit: int, wait: int, flags: int, what: str) -> int:
        if self.fd < 0:
            raise ValueError("the ring is closed")
        self.enter_calls += 1
        ret = self._raw.enter(to_submit, wait, flags)
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
        names = "|".join(RING_FLAG_NAMES.get(f, hex(f)).removeprefix("IORING_SETUP_")
                         for f in flag_bits(self.flags))
        return f"<LoopRing fd {self.fd} sq {self.sq_entries} cq {self.cq_entries} {names}>"


_CQE = struct.Struct("<QiI")
_NOP_SQE_PREFIX = bytes([IORING_OP_NOP]) + bytes(31)   # opcode, then zeros up to user_data at 32
_ENTER_MEANINGS = {
    _errno.EINVAL: "the loop_step program returned a value other than IOU_LOOP_CONTINUE (0) or "
                   "IOU_LOOP_STOP (1), or the call's arguments are invalid for this ring",
    _errno.EINTR: "a signal interrupted the loop while it slept waiting for CQEs",
    _errno.EEXIST: "the ring was created by another task (IORING_SETUP_SINGLE_ISSUER)",
}


_CQE = struct.Struct("<QiI")
_NOP_SQE_PREFIX = bytes([IORING_OP_NOP]) + bytes(31)   # opcode, then zeros up to user_data at 32
_ENTER_MEANINGS = {
    _errno.EINVAL: f"the loop_step program returned a value other than IOU_LOOP_CONTINUE "
                   f"({IOU_LOOP_CONTINUE}) or IOU_LOOP_STOP ({IOU_LOOP_STOP}), or the call's "
                   "arguments are invalid for this ring",
    _errno.EINTR: "a signal interrupted the loop while it slept waiting for CQEs",
    _errno.EEXIST: "the ring was created by another task (IORING_SETUP_SINGLE_ISSUER)",
}
