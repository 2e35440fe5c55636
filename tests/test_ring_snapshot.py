"""Ring.snapshot(): a copy of a real ring's queues that runs nothing (what Jupyter's view reads).

A ring with a BPF request parked on CQ 1, a timeout in the kernel and a NOP whose CQE sits in the
kernel's CQ ring: the snapshot reports the kernel's SQ and CQ indices, every CQ, both kernel
requests with their user_data, the program and the parked request; taking it enters no syscall
and runs no program, and it does not change when the ring moves on.
"""
from __future__ import annotations

import ctypes

import pytest

from pybpf_uring import compile_source
from pybpf_uring.runtime.ring import Ring
from pybpf_uring.runtime.ring_protocol import CqSnapshot, ProgramSnapshot, RequestSnapshot
from pybpf_uring.uring import prep_nop, prep_timeout

from test_display import ECHO   # one program for both views: parks on CQ 1, echoes to CQ 2


class Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_int64), ("nsec", ctypes.c_int64)]


@pytest.mark.uring
def test_a_snapshot_copies_the_queues_and_runs_nothing():
    obj = compile_source(ECHO, "<echo>")
    forever = Timespec(3600, 0)
    with Ring(entries=8, cq_sizes=(8, 4)) as ring:
        ring.register(obj)
        ring.submit_bpf("echo", user_data=5)          # runs once, parks on CQ 1
        sqe = ring.sqe()
        prep_timeout(sqe, ctypes.addressof(forever), 0, 0)
        sqe.user_data, sqe.cq_idx = 99, 2
        ring.queue(sqe)
        sqe = ring.sqe()
        prep_nop(sqe)
        sqe.user_data, sqe.cq_idx = 4, 1
        ring.queue(sqe)
        queued = ring.snapshot()                      # two SQEs written, none submitted yet
        assert (queued.sq_head, queued.sq_tail, queued.sq_pending) == (0, 2, 2)
        ring.flush()

        calls = ring.enter_calls
        snap = ring.snapshot()
        assert ring.enter_calls == calls and ring.parked == 1 and ring.snapshot() == snap
        assert (snap.entries, snap.sq_head, snap.sq_tail, snap.sq_pending) == (8, 2, 2, 0)
        assert (snap.cq_head, snap.cq_tail, snap.enter_calls) == (0, 1, calls)
        assert snap.cqs == (CqSnapshot(0, 16, 0, 0, 0), CqSnapshot(1, 8, 0, 0, 0),
                            CqSnapshot(2, 4, 0, 0, 0))
        assert snap.in_flight == ((99, 2), (4, 1))
        assert snap.programs == (ProgramSnapshot("echo", snap.programs[0].backend, 1),)
        assert snap.programs[0].backend in ("interpreter", "jit")
        assert snap.runnable == ()
        assert snap.parked == (RequestSnapshot("echo", 5, 0, wait_nr=1, wait_idx=1, runs=1),)

        got = ring.wait_cqe(2, timeout=5)             # the NOP's CQE wakes echo, which echoes it
        assert (got.user_data, got.res) == (40, 0)
        assert ring.wait_cqe(0, timeout=5).user_data == 5
        assert snap.parked[0].runs == 1 and snap.in_flight == ((99, 2), (4, 1))   # a copy
        later = ring.snapshot()
        assert later.parked == () and later.in_flight == ((99, 2),)
        assert later.programs[0].runs == 2 and later.cq_head == later.cq_tail
    with pytest.raises(ValueError, match="closed Ring"):
        ring.snapshot()
