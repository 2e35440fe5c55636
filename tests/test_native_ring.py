"""Native waits (engine/native_ring.py) against the Python ring, on real rings and real CQEs.

Every scenario runs twice, with `instantiate(obj, native_waits=True)` and with
`native_waits=False` (the Python ring, the reference), and must show the host the same thing:
the CQEs each `wait_cqe` returned (or the DeadlockError it raised), every map, `ring.faults`
(messages included), `ring.overflows`, each program's `runs` and `ring.parked`.  The native run
must also really have been native: `NativeRing.wait` is wrapped to record the codes it returned
and `EngineProgram.run` to count the runs Python made, so a change that silently stops using
native waits fails here.  Each scenario also checks concrete values, not only equality.

The hand-back paths each have a scenario: READY (a chain), MORE (a rally longer than the run
budget), PYTHON (an SQE only the Python ring queues, through the `_slow` callback), FAULTED (a
runaway loop), COMPLETE (a completion into a full CQ), BAD_WAIT, STALLED (a deadlock).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import importlib.util
import signal
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given, settings, strategies as st

pytest.importorskip("llvmlite")

from pybpf_uring import Ring, compile_file, compile_source  # noqa: E402
from pybpf_uring.engine import instantiate  # noqa: E402
from pybpf_uring.engine import instance as instance_module  # noqa: E402
from pybpf_uring.engine import native_ring  # noqa: E402
from pybpf_uring.ring import DeadlockError  # noqa: E402
from pybpf_uring.uring import IORING_OP_BPF, Sqe, prep_nop, prep_timeout  # noqa: E402

ROOT = Path(__file__).parents[1]
READY, MORE, PYTHON, FAULTED, COMPLETE, BAD_WAIT, STALLED = (
    native_ring.READY, native_ring.MORE, native_ring.PYTHON, native_ring.FAULTED,
    native_ring.COMPLETE, native_ring.BAD_WAIT, native_ring.STALLED)
WATCHDOG = 5.0          # seconds one run of a scenario may take before it counts as a hang


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_int64)]


def nop(user_data: int, cq_idx: int = 0) -> Sqe:
    sqe = Sqe()
    prep_nop(sqe)
    sqe.user_data, sqe.cq_idx = user_data, cq_idx
    return sqe


def timeout_sqe(ts: Timespec, user_data: int, cq_idx: int) -> Sqe:
    sqe = Sqe()
    prep_timeout(sqe, ctypes.addressof(ts), 0, 0)
    sqe.user_data, sqe.cq_idx = user_data, cq_idx
    return sqe


def bpf_sqe(program: int, user_data: int, cq_idx: int) -> Sqe:
    sqe = Sqe()
    sqe.opcode, sqe.off, sqe.user_data, sqe.cq_idx = IORING_OP_BPF, program, user_data, cq_idx
    return sqe


# --- the harness -------------------------------------------------------------------------------

class Hang(Exception):
    """The watchdog fired: a wait did not return."""


@contextlib.contextmanager
def watchdog(seconds: float):
    def fire(*_):
        raise Hang(f"no return within {seconds} s")
    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Probe:
    """What the native machinery did during one run (not part of the compared outcome)."""
    codes: list[int] = field(default_factory=list)    # NativeRing.wait's return codes
    python_runs: int = 0                               # EngineProgram.run calls (Python-side runs)
    enter_calls: int = 0
    native: bool = False                               # the ring built a NativeRing


@contextlib.contextmanager
def probing():
    """Record NativeRing.wait's codes and count EngineProgram.run calls while the block runs."""
    probe = Probe()
    wait, run = native_ring.NativeRing.wait, instance_module.EngineProgram.run

    def counted_wait(self, *args, **kwargs):
        code = wait(self, *args, **kwargs)
        probe.codes.append(code)
        return code

    def counted_run(self, ctx, helpers=None):
        probe.python_runs += 1
        return run(self, ctx, helpers)

    native_ring.NativeRing.wait = counted_wait
    instance_module.EngineProgram.run = counted_run
    try:
        yield probe
    finally:
        native_ring.NativeRing.wait = wait
        instance_module.EngineProgram.run = run


@dataclass
class Outcome:
    """Everything the host can observe; must be identical with and without native waits."""
    host: list
    maps: dict
    faults: list
    overflows: tuple
    runs: dict
    parked: int


@dataclass
class Scenario:
    obj: Any
    host: Callable[[Ring], list]          # drives the ring, returns what it observed
    entries: int = 8
    cq_sizes: tuple = (64, 64, 64)
    setup: Callable[[Ring], None] = lambda ring: None   # after register, before host
    budget: int | None = None
    backend: str = "auto"


def take(ring: Ring, cq: int) -> tuple:
    """One untimed wait_cqe: the CQE as a tuple, or the DeadlockError's message."""
    try:
        c = ring.wait_cqe(cq)
    except DeadlockError as exc:
        return ("DeadlockError", str(exc))
    return (c.user_data, c.res, c.flags)


def leftovers(ring: Ring, cq: int) -> list:
    out = []
    while (c := ring.peek_cqe(cq)) is not None:
        out.append((c.user_data, c.res, c.flags))
    return out


def run(scenario: Scenario, native: bool) -> tuple[Outcome, Probe]:
    options = {"native_waits": native, "backend": scenario.backend}
    if scenario.budget is not None:
        options["budget"] = scenario.budget
    with probing() as probe, watchdog(WATCHDOG), \
            Ring(entries=scenario.entries, cq_sizes=scenario.cq_sizes) as ring:
        ring.register(scenario.obj, engine=lambda o: instantiate(o, **options))
        probe.native = ring._native is not None
        scenario.setup(ring)
        host = scenario.host(ring)
        probe.enter_calls = ring.enter_calls
        outcome = Outcome(
            host=host,
            maps={name: list(m.items()) for name, m in ring.maps.items()},
            faults=list(ring.faults),
            overflows=ring.overflows,
            runs={name: p.runs for name, p in ring.engine.programs.items()},
            parked=ring.parked)
    return outcome, probe


def differential(scenario: Scenario) -> tuple[Outcome, Probe, Probe]:
    """Both modes; asserts they agree and that the native one used native waits."""
    reference, python_probe = run(scenario, native=False)
    native, native_probe = run(scenario, native=True)
    assert not python_probe.native and python_probe.codes == []
    assert native_probe.native, "the ring built no NativeRing for JIT-compiled programs"
    assert native_probe.codes, "no wait went through NativeRing.wait"
    assert native == reference
    return native, native_probe, python_probe


@functools.lru_cache(maxsize=None)
def compiled(source: str, name: str) -> Any:
    return compile_source(textwrap.dedent(source), name)


def bench_chain_source() -> str:
    spec = importlib.util.spec_from_file_location("bench_ring_for_tests", ROOT / "bench" / "ring.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BPF_CHAIN_SOURCE


# --- programs -----------------------------------------------------------------------------------

# A NOP chain on CQ cfg[2] of cfg[0] NOPs that emits every cfg[1]-th reaped NOP's count to CQ
# cfg[3] and keeps emit_cqe's return codes.
RELAY = """
    from pybpf_uring import iouring, ArrayMap, i32, i64, u16, u32, u64
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, emit_cqe, prep_nop

    cfg = ArrayMap(u64, 4)        # NOPs, emit every k-th, the chain's CQ, the application CQ
    stats = ArrayMap(u64, 3)      # NOPs reaped, emits taken, emits refused
    rets = ArrayMap(i64, 256)     # emit_cqe's return for the n-th NOP reaped

    @iouring
    def relay(ctx: IoUringCtx) -> i32:
        chain = u32(cfg[2])
        cqe = Cqe()
        if reap_cqe(ctx, chain, cqe) == 0:
            n = stats[0] + 1
            stats[0] = n
            if n % cfg[1] == 0:
                r = emit_cqe(ctx, u32(cfg[3]), n, i32(cqe.user_data), 0)
                rets[n % 256] = r
                if r == 0:
                    stats[1] += 1
                else:
                    stats[2] += 1
        if stats[0] < cfg[0]:
            sqe = Sqe()
            prep_nop(sqe)
            sqe.user_data = stats[0] + 1000
            sqe.cq_idx = u16(chain)
            queue_sqe(ctx, sqe)
            ctx.wait_idx = chain
            ctx.wait_nr = 1
        return 0
"""


def relay_config(nops: int, every: int, chain: int, app: int):
    def setup(ring: Ring) -> None:
        cfg = ring.maps["cfg"]
        cfg[0], cfg[1], cfg[2], cfg[3] = nops, every, chain, app
    return setup


# A chain that loops 40 * (its round) times per run: a small budget stops it a few rounds in.
HEAVY = """
    from pybpf_uring import iouring, ArrayMap, i32, u64
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, prep_nop

    count = ArrayMap(u64, 2)

    @iouring
    def heavy(ctx: IoUringCtx) -> i32:
        cqe = Cqe()
        reap_cqe(ctx, 1, cqe)
        n = count[0]
        acc: u64 = 0
        for i in range(4000):
            if i >= n * 40:
                break
            acc += i
        count[1] = acc
        count[0] = n + 1
        sqe = Sqe()
        prep_nop(sqe)
        sqe.cq_idx = 1
        queue_sqe(ctx, sqe)
        ctx.wait_idx = 1
        ctx.wait_nr = 1
        return 0
"""

# A chain that, in its round cfg[0], parks on CQ cfg[1] instead of its own.
WANDERER = """
    from pybpf_uring import iouring, ArrayMap, i32, u32, u64
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, prep_nop

    cfg = ArrayMap(u64, 2)
    count = ArrayMap(u64, 1)

    @iouring
    def wanderer(ctx: IoUringCtx) -> i32:
        cqe = Cqe()
        reap_cqe(ctx, 1, cqe)
        n = count[0] + 1
        count[0] = n
        sqe = Sqe()
        prep_nop(sqe)
        sqe.cq_idx = 1
        queue_sqe(ctx, sqe)
        ctx.wait_nr = 1
        if n == cfg[0]:
            ctx.wait_idx = u32(cfg[1])
        else:
            ctx.wait_idx = 1
        return 0
"""

# `boss` chains NOPs on CQ 1 and, on the way, queues SQEs only the Python ring queues: an
# IORING_OP_BPF request for `child`, a CQE_SKIP_SUCCESS NOP, a cancel of the host's timeout.
BOSS = """
    from pybpf_uring import iouring, ArrayMap, i32, i64, u64
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, emit_cqe, prep_nop

    ROUNDS = 8
    log = ArrayMap(u64, 2 * ROUNDS + 2)       # [0]: rounds; then per round: user_data, res
    rets = ArrayMap(i64, 4)                   # queue_sqe's returns: spawn, skip, cancel, bad cq

    @iouring
    def boss(ctx: IoUringCtx) -> i32:
        cqe = Cqe()
        if reap_cqe(ctx, 1, cqe) == 0:
            n = log[0] + 1
            log[0] = n
            log[2 * n] = cqe.user_data
            log[2 * n + 1] = u64(cqe.res)
        n = log[0]
        if n >= ROUNDS:
            return 0
        sqe = Sqe()
        if n == 2:
            sqe.opcode = 37
            sqe.off = 1
            sqe.user_data = 77
            sqe.cq_idx = 3
            rets[0] = queue_sqe(ctx, sqe)
        if n == 3:
            prep_nop(sqe)
            sqe.flags = 64
            sqe.user_data = 88
            rets[1] = queue_sqe(ctx, sqe)
        if n == 5:
            prep_nop(sqe)
            sqe.cq_idx = 9
            rets[3] = queue_sqe(ctx, sqe)
        sqe = Sqe()
        if n == 4:
            sqe.opcode = 14
            sqe.addr = 555
            sqe.user_data = 4444
            sqe.cq_idx = 1
            rets[2] = queue_sqe(ctx, sqe)
        else:
            prep_nop(sqe)
            sqe.user_data = n
            sqe.cq_idx = 1
            queue_sqe(ctx, sqe)
        ctx.wait_idx = 1
        ctx.wait_nr = 1
        return 0

    @iouring
    def child(ctx: IoUringCtx) -> i32:
        emit_cqe(ctx, 3, ctx.user_data + 1, 5, 0)
        return 0
"""

# Two requests bouncing a ball between CQ 1 and CQ 2 (user_data 1 and 2) until it reaches
# cfg[0]; cfg[0] = 0 bounces for ever.
RALLY = """
    from pybpf_uring import iouring, ArrayMap, i32, u32, u64
    from pybpf_uring.uring import IoUringCtx, Cqe, emit_cqe, reap_cqe

    cfg = ArrayMap(u64, 1)
    hits = ArrayMap(u64, 3)

    @iouring
    def rally(ctx: IoUringCtx) -> i32:
        mine = u32(ctx.user_data)
        cqe = Cqe()
        if reap_cqe(ctx, mine, cqe) == 0:
            hits[mine] += 1
            n = cqe.user_data
            if cfg[0] != 0 and n >= cfg[0]:
                return 0
            emit_cqe(ctx, 3 - mine, n + 1, 0, 0)
            if cfg[0] != 0 and n + 1 >= cfg[0]:
                return 0
        ctx.wait_idx = mine
        ctx.wait_nr = 1
        return 0
"""

# `sleeper` parks on CQ 2 and never queues anything; `lazy` puts a CQE on CQ 1 once and then
# re-parks on it for ever without reaping (its condition stays true, nothing changes).
IDLE = """
    from pybpf_uring import iouring, ArrayMap, i32, u64
    from pybpf_uring.uring import IoUringCtx, emit_cqe

    seen = ArrayMap(u64, 2)

    @iouring
    def sleeper(ctx: IoUringCtx) -> i32:
        seen[0] += 1
        ctx.wait_idx = 2
        ctx.wait_nr = 1
        return 0

    @iouring
    def lazy(ctx: IoUringCtx) -> i32:
        if seen[1] == 0:
            emit_cqe(ctx, 1, 9, 0, 0)
        seen[1] += 1
        ctx.wait_idx = 1
        ctx.wait_nr = 1
        return 0
"""

# The chain with a hash map beside it: its programs may not run natively.
HASHED = """
    from pybpf_uring import iouring, ArrayMap, HashMap, i32, u64
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, prep_nop

    count = ArrayMap(u64, 1)
    seen = HashMap(u64, u64, 8)

    @iouring
    def chain(ctx: IoUringCtx) -> i32:
        cqe = Cqe()
        if reap_cqe(ctx, 1, cqe) == 0:
            seen[cqe.user_data % 4] += 1
        n = count[0]
        if n < ctx.user_data:
            count[0] = n + 1
            sqe = Sqe()
            prep_nop(sqe)
            sqe.user_data = n
            sqe.cq_idx = 1
            queue_sqe(ctx, sqe)
            ctx.wait_idx = 1
            ctx.wait_nr = 1
        return 0
"""


# --- READY: the chain --------------------------------------------------------------------------

def test_bench_nop_chain_runs_natively_and_agrees():
    n = 1000

    def host(ring):
        ring.submit_bpf("chain", user_data=n)
        return [take(ring, 0)]

    obj = compiled(bench_chain_source(), "chain.py")
    out, probe, ref = differential(Scenario(obj, host, entries=64, cq_sizes=(128,)))
    assert out.host == [(n, 0, 0)]
    assert out.maps["count"] == [(0, n)]
    assert out.runs == {"chain": n + 1}
    assert (out.faults, out.overflows, out.parked) == ([], (0, 0), 0)
    # one native wait ran the whole chain; Python ran only submit_bpf's first run
    assert probe.codes == [READY]
    assert probe.python_runs == 1 and ref.python_runs == n + 1
    # one io_uring_enter per NOP, as the Python ring
    assert probe.enter_calls == ref.enter_calls == n
