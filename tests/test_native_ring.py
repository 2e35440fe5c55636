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
import os
import signal
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from kernel_harness import clang_object
from hypothesis import example, given, settings, strategies as st

from pybpf_uring import Ring, compile_file, compile_source
from pybpf_uring.runtime.engine import instantiate
from pybpf_uring.runtime.engine import instance as instance_module
from pybpf_uring.runtime.engine import native_ring
from pybpf_uring.runtime.ring import DeadlockError
from pybpf_uring.uring import (IORING_OP_ASYNC_CANCEL, IORING_OP_BPF, IOSQE_CQE_SKIP_SUCCESS, Sqe,
                               prep_nop, prep_timeout)

ROOT = Path(__file__).parents[1]
READY, MORE, PYTHON, FAULTED, COMPLETE, BAD_WAIT, STALLED, TIMED_OUT = (
    native_ring.READY, native_ring.MORE, native_ring.PYTHON, native_ring.FAULTED,
    native_ring.COMPLETE, native_ring.BAD_WAIT, native_ring.STALLED, native_ring.TIMED_OUT)
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
    codes: list[int] = field(default_factory=list)    # NativeRing.wait's return codes in waits
    polls: list[int] = field(default_factory=list)    # ... in polls (submit_bpf, peek_cqe, ready)
    python_runs: int = 0                               # EngineProgram.run calls (Python-side runs)
    enter_calls: int = 0
    native: bool = False                               # the ring built a NativeRing


@contextlib.contextmanager
def probing():
    """Record NativeRing.wait's codes (a poll's apart) and count EngineProgram.run calls while
    the block runs."""
    probe = Probe()
    wait, run, poll = native_ring.NativeRing.wait, instance_module.EngineProgram.run, Ring._native_poll
    polling = []

    def counted_wait(self, *args, **kwargs):
        code = wait(self, *args, **kwargs)
        (probe.polls if polling else probe.codes).append(code)
        return code

    def counted_poll(self, *args, **kwargs):
        polling.append(True)
        try:
            return poll(self, *args, **kwargs)
        finally:
            polling.pop()

    def counted_run(self, ctx, helpers=None):
        probe.python_runs += 1
        return run(self, ctx, helpers)

    native_ring.NativeRing.wait = counted_wait
    instance_module.EngineProgram.run = counted_run
    Ring._native_poll = counted_poll
    try:
        yield probe
    finally:
        native_ring.NativeRing.wait = wait
        instance_module.EngineProgram.run = run
        Ring._native_poll = poll


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
    watchdog: float = WATCHDOG


def take(ring: Ring, cq: int) -> tuple:
    """One untimed wait_cqe: the CQE as a tuple, or the DeadlockError's message."""
    try:
        c = ring.wait_cqe(cq)
    except DeadlockError as exc:
        return ("DeadlockError", str(exc))
    return (c.user_data, c.res, c.flags)


def take_timed(ring: Ring, cq: int, timeout: float) -> tuple:
    """One wait_cqe with a timeout: the CQE as a tuple, or the TimeoutError's message."""
    try:
        c = ring.wait_cqe(cq, timeout=timeout)
    except TimeoutError as exc:
        return ("TimeoutError", str(exc))
    return (c.user_data, c.res, c.flags)


def leftovers(ring: Ring, cq: int) -> list:
    out = []
    while (c := ring.peek_cqe(cq)) is not None:
        out.append((c.user_data, c.res, c.flags))
    return out


def plain(value: Any) -> Any:
    """A map value as something == compares by content (ctypes structs compare by identity)."""
    return bytes(value) if isinstance(value, ctypes.Structure) else value


def run(scenario: Scenario, native: bool) -> tuple[Outcome, Probe]:
    options = {"native_waits": native, "backend": scenario.backend}
    if scenario.budget is not None:
        options["budget"] = scenario.budget
    with probing() as probe, watchdog(scenario.watchdog), \
            Ring(entries=scenario.entries, cq_sizes=scenario.cq_sizes) as ring:
        ring.register(scenario.obj, engine=lambda o: instantiate(o, **options))
        probe.native = ring._native is not None
        scenario.setup(ring)
        host = scenario.host(ring)
        probe.enter_calls = ring.enter_calls
        outcome = Outcome(
            host=host,
            maps={name: [(k, plain(v)) for k, v in m.items()] for name, m in ring.maps.items()},
            faults=list(ring.faults),
            overflows=ring.overflows,
            runs={name: p.runs for name, p in ring.engine.programs.items()},
            parked=ring.parked)
    return outcome, probe


def differential(scenario: Scenario) -> tuple[Outcome, Probe, Probe]:
    """Both modes; asserts they agree and that the native one used native waits."""
    reference, python_probe = run(scenario, native=False)
    native, native_probe = run(scenario, native=True)
    assert not python_probe.native and python_probe.codes == python_probe.polls == []
    assert native_probe.native, "the ring built no NativeRing for JIT-compiled programs"
    assert native_probe.codes or native_probe.polls, "nothing went through NativeRing.wait"
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

# A NOP chain of `nops` NOPs on CQ `chain` that emits every `every`-th reaped NOP's count to CQ
# `app` and keeps emit_cqe's return codes.  Small enough to compile at JIT tier 1 (native at once).
RELAY = """
    from pybpf_uring import iouring, ArrayMap, i32, i64, u16, u32, u64
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, emit_cqe, prep_nop

    count = ArrayMap(u64, 1)      # NOPs reaped
    rets = ArrayMap(i64, 256)     # emit_cqe's return for the n-th NOP reaped (when it emitted)

    @iouring
    def relay(ctx: IoUringCtx) -> i32:
        # ctx.user_data: nops | every << 16 | chain << 32 | app << 40
        ud = ctx.user_data
        chain = u32(ud >> 32) & 0xFF
        cqe = Cqe()
        n = count[0]
        if reap_cqe(ctx, chain, cqe) == 0:
            n += 1
            count[0] = n
            if n % ((ud >> 16) & 0xFFFF) == 0:
                rets[n % 256] = emit_cqe(ctx, u32(ud >> 40) & 0xFF, n, i32(cqe.user_data), 0)
        if n < ud & 0xFFFF:
            sqe = Sqe()
            prep_nop(sqe)
            sqe.user_data = n + 1000
            sqe.cq_idx = u16(chain)
            queue_sqe(ctx, sqe)
            ctx.wait_idx = chain
            ctx.wait_nr = 1
        return 0
"""


def relay_data(nops: int, every: int, chain: int, app: int) -> int:
    return nops | every << 16 | chain << 32 | app << 40


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

# `script` chains on CQ 1 whatever SQEs the host wrote in `plan`: in its round n it queues
# plan[2n] and, unless its opcode is 255, plan[2n + 1], and parks on CQ 1 until round ROUNDS.
# The host plans SQEs only the Python ring queues (an IORING_OP_BPF request for `child`, a
# CQE_SKIP_SUCCESS NOP, a cancel naming its own timeout, a bad cq_idx) among plain NOPs.
SCRIPT = """
    from pybpf_uring import iouring, ArrayMap, i32, i64, u32, u64
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, emit_cqe

    ROUNDS = 7
    plan = ArrayMap(Sqe, 2 * ROUNDS)
    log = ArrayMap(u64, 2 * ROUNDS + 2)    # [1]: rounds; round n's CQE: [2n] user_data, [2n + 1] res
    rets = ArrayMap(i64, 2 * ROUNDS)       # queue_sqe's return per plan entry

    @iouring
    def script(ctx: IoUringCtx) -> i32:
        cqe = Cqe()
        n = log[1]
        if reap_cqe(ctx, 1, cqe) == 0:
            n += 1
            log[1] = n
            log[2 * n] = cqe.user_data
            log[2 * n + 1] = u64(cqe.res)
        if n >= ROUNDS:
            return 0
        first = plan.lookup(2 * n)
        if first is not None:
            rets[2 * n] = queue_sqe(ctx, first)
        second = plan.lookup(2 * n + 1)
        if second is not None:
            if second.opcode != 255:
                rets[2 * n + 1] = queue_sqe(ctx, second)
        ctx.wait_idx = 1
        ctx.wait_nr = 1
        return 0

    @iouring
    def child(ctx: IoUringCtx) -> i32:
        emit_cqe(ctx, 3, ctx.user_data + 1, 5, 0)
        return 0
"""

# Two requests (user_data side | limit << 8, side 1 or 2) bouncing a ball between CQ 1 and CQ 2
# until its count reaches the limit; limit 0 bounces for ever.
RALLY = """
    from pybpf_uring import iouring, ArrayMap, i32, u32, u64
    from pybpf_uring.uring import IoUringCtx, Cqe, emit_cqe, reap_cqe

    hits = ArrayMap(u64, 3)

    @iouring
    def rally(ctx: IoUringCtx) -> i32:
        mine = u32(ctx.user_data) & 3
        limit = ctx.user_data >> 8
        cqe = Cqe()
        if reap_cqe(ctx, mine, cqe) == 0:
            hits[mine] += 1
            n = cqe.user_data + 1
            if limit != 0 and n > limit:
                return 0
            emit_cqe(ctx, 3 - mine, n, 0, 0)
            if n == limit:
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

# A chain whose IR is past jit.TIER_LINES: it starts at codegen tier 0, runs natively at once,
# and is recompiled at tier 1 once hot (jit.HOT_INSTRUCTIONS, ~200 runs of its loop).
BIG = """
    from pybpf_uring import iouring, ArrayMap, i32, u64
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, prep_nop

    count = ArrayMap(u64, 4)

    @iouring
    def big(ctx: IoUringCtx) -> i32:
        cqe = Cqe()
        reap_cqe(ctx, 1, cqe)
        n = count[0]
        if n >= ctx.user_data:
            return 0
        count[0] = n + 1
        acc: u64 = count[1]
        for i in range(2000):
            acc = acc * 31 + i
        count[1] = acc
        for j in range(4):
            count[2] += cqe.user_data + j
            count[3] ^= count[2] * 7 + j
        sqe = Sqe()
        prep_nop(sqe)
        sqe.user_data = n
        sqe.cq_idx = 1
        queue_sqe(ctx, sqe)
        ctx.wait_idx = 1
        ctx.wait_nr = 1
        return 0
"""

# The chain with a hash map beside it: values created, updated and deleted (a deleted value is
# freed when the run that deleted it ends, in a native wait as after a Python run).
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
            if cqe.user_data % 7 == 6:
                del seen[cqe.user_data % 4]
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

@pytest.mark.uring
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
    # submit_bpf's poll made the first run natively (a poll's deadline has passed: TIMED_OUT
    # is its normal end), one native wait ran the rest: Python ran none
    assert probe.polls == [TIMED_OUT] and probe.codes == [READY]
    assert probe.python_runs == 0 and ref.python_runs == n + 1
    # one io_uring_enter per NOP, as the Python ring
    assert probe.enter_calls == ref.enter_calls == n


@pytest.mark.uring
def test_submitting_more_chains_runs_the_due_ones_natively():
    """Each submit_bpf runs the new request and the parked ones it finds due natively, in the
    Python ring's order: 32 chains submitted one after the other make no Python run (run by
    Python, they made 32 * 33 / 2)."""
    depth, n = 32, 3000
    source = importlib.util.spec_from_file_location("bench_ring_depth", ROOT / "bench" / "ring.py")
    module = importlib.util.module_from_spec(source)
    source.loader.exec_module(module)

    def host(ring):
        for i in range(1, depth + 1):
            ring.submit_bpf("chains", user_data=n | i << 48)
        return sorted(take(ring, 0) for _ in range(depth))

    obj = compiled(module.DEPTH_CHAIN_SOURCE, "chains.py")
    out, probe, ref = differential(Scenario(obj, host, entries=64, cq_sizes=(64,) + (4,) * depth))
    assert out.host == sorted((n | i << 48, 0, 0) for i in range(1, depth + 1))
    assert out.maps["count"] == [(0, n)] and out.runs == {"chains": n + depth}
    assert probe.python_runs == 0 and ref.python_runs == n + depth


@pytest.mark.uring
def test_emit_to_an_application_cq_that_the_host_waits_on():
    nops, every, rounds = 60, 3, 20
    ud = relay_data(nops, every, 1, 2)

    def host(ring):
        ring.submit_bpf("relay", user_data=ud)
        got = [take(ring, 2) for _ in range(rounds)]
        return got + [take(ring, 0), leftovers(ring, 2)]

    obj = compiled(RELAY, "relay.py")
    out, probe, _ = differential(Scenario(obj, host))
    # the k-th CQE on CQ 2 carries the count 3k and, as res, the user_data of the NOP reaped
    assert out.host[:rounds] == [(3 * k, 1000 + 3 * k - 1, 0) for k in range(1, rounds + 1)]
    assert out.host[rounds:] == [(ud, 0, 0), []]
    assert out.maps["count"] == [(0, nops)]
    assert [(n, r) for n, r in out.maps["rets"][1:nops + 1] if n % every == 0] == \
        [(n, 0) for n in range(every, nops + 1, every)]
    assert out.runs == {"relay": nops + 1} and out.overflows == (0, 0, 0, 0)
    assert probe.codes == [READY] * rounds       # the last run completed it: CQ 0 needed no wait
    assert probe.python_runs == 0


# --- FAULTED -----------------------------------------------------------------------------------

@pytest.mark.uring
def test_a_runaway_loop_faults_inside_a_native_wait():
    def host(ring):
        ring.submit_bpf("heavy", user_data=3)
        return [take(ring, 0), take(ring, 0)]

    obj = compiled(HEAVY, "heavy.py")
    out, probe, _ = differential(Scenario(obj, host, budget=3000, cq_sizes=(8,)))
    rounds = out.maps["count"][0][1]
    assert 3 <= rounds < 40                        # some rounds ran before the fault
    assert out.runs == {"heavy": rounds + 1}
    assert out.host[0] == (3, -errno.EFAULT, 0)
    assert out.host[1][0] == "DeadlockError"      # nothing is left to post to CQ 0
    [fault] = out.faults
    assert (fault.user_data, fault.program, fault.res) == (3, "heavy", -errno.EFAULT)
    assert fault.message.startswith("program 'heavy': instruction ")
    assert "instruction budget of 3000 exhausted" in fault.message and "heavy.py:" in fault.message
    assert FAULTED in probe.codes and probe.python_runs == 0
    assert out.parked == 0


WILD_C = r"""
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
#define SEC(n) __attribute__((section(n), used))
struct io_uring_bpf_ctx { __u64 user_data; __u32 wait_nr; __u32 wait_idx; };
struct sqe { unsigned char opcode, flags; __u16 ioprio; __s32 fd; __u64 off, addr; __u32 len, rw_flags;
             __u64 user_data; __u16 buf_index, personality; __s32 splice_fd_in; __u16 cq_idx, pad0;
             __u32 pad1; __u64 pad2; };
struct cqe { __u64 user_data; __s32 res; __u32 flags; };
static long (*queue_sqe)(void *ctx, void *sqe, __u32 len) = (void *)164;
static long (*reap_cqe)(void *ctx, __u32 cq, void *out, __u32 len) = (void *)166;
__u64 rounds;

SEC("iouring.s/wild")
int wild(struct io_uring_bpf_ctx *ctx)
{
    struct cqe cqe;
    struct sqe sqe = {};
    reap_cqe(ctx, 1, &cqe, sizeof(cqe));
    if (++rounds == 6)
        return *(volatile __u64 *)ctx->user_data;   /* a user pointer is not program memory */
    sqe.user_data = rounds;
    sqe.cq_idx = 1;
    queue_sqe(ctx, &sqe, sizeof(sqe));
    *(volatile __u32 *)&ctx->wait_idx = 1;     /* volatile: two 4-byte stores, not one */
    *(volatile __u32 *)&ctx->wait_nr = 1;
    return 0;
}
char _license[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def wild_object(tmp_path_factory):
    return clang_object(tmp_path_factory.mktemp("wild"), "wild", WILD_C)


@pytest.mark.uring
def test_a_bad_pointer_faults_inside_a_native_wait(wild_object):
    """A fault raised in Python (Memory's slow path) from inside a natively run program."""
    target = ctypes.c_uint64(1)

    def host(ring):
        ring.submit_bpf("wild", user_data=ctypes.addressof(target))
        return [take(ring, 0), leftovers(ring, 1)]

    out, probe, _ = differential(Scenario(wild_object, host, cq_sizes=(8,)))
    assert out.host == [(ctypes.addressof(target), -errno.EFAULT, 0), []]
    assert out.runs == {"wild": 6}
    [fault] = out.faults
    assert fault.program == "wild" and fault.res == -errno.EFAULT
    assert "no region is mapped there" in fault.message and "wild.c:" in fault.message
    assert "ctx->user_data" in fault.message
    assert probe.codes == [FAULTED] and probe.python_runs == 0


STALE_C = WILD_C.split("__u64 rounds;")[0] + r"""
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
static void *(*map_lookup)(void *map, const void *key) = (void *)1;
static long (*map_update)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*map_delete)(void *map, const void *key) = (void *)3;
struct { __uint(type, 1); __type(key, __u32); __type(value, __u64); __uint(max_entries, 4); } h SEC(".maps");
__u64 rounds, stash;

SEC("iouring.s/stale")
int stale(struct io_uring_bpf_ctx *ctx)
{
    struct cqe cqe;
    struct sqe sqe = {};
    __u32 k = 0;
    __u64 one = 1, *v;
    reap_cqe(ctx, 1, &cqe, sizeof(cqe));
    if (++rounds == 2) {                   /* a native wait's run (after submit_bpf's) */
        map_update(&h, &k, &one, 0);
        v = map_lookup(&h, &k);
        if (!v)
            return 0;
        stash = (__u64)v;
        map_delete(&h, &k);
        *(volatile __u64 *)stash = 2;      /* the run that deleted it may still use it */
    } else if (rounds == 4) {
        return *(volatile __u64 *)stash;   /* a later run may not: it was freed */
    }
    sqe.user_data = rounds;
    sqe.cq_idx = 1;
    queue_sqe(ctx, &sqe, sizeof(sqe));
    *(volatile __u32 *)&ctx->wait_idx = 1;
    *(volatile __u32 *)&ctx->wait_nr = 1;
    return 0;
}
char _license[] SEC("license") = "GPL";
"""


@pytest.mark.tools("clang")
@pytest.mark.uring
def test_a_hash_value_deleted_by_a_native_run_is_freed_when_that_run_ends(tmp_path):
    obj = clang_object(tmp_path, "stale", STALE_C)

    def host(ring):
        ring.submit_bpf("stale", user_data=5)
        return [take(ring, 0)]

    out, probe, _ = differential(Scenario(obj, host, cq_sizes=(8,)))
    assert out.host == [(5, -errno.EFAULT, 0)] and out.runs == {"stale": 4}
    [fault] = out.faults
    assert "stale.c:" in fault.message and "return *(volatile __u64 *)stash" in fault.message
    assert probe.codes == [FAULTED] and probe.python_runs == 0


# --- BAD_WAIT ----------------------------------------------------------------------------------

@pytest.mark.uring
def test_a_wait_idx_naming_no_cq_fails_the_request_inside_a_native_wait():
    def setup(ring):
        ring.maps["cfg"][0], ring.maps["cfg"][1] = 6, 9

    def host(ring):
        ring.submit_bpf("wanderer", user_data=11)
        return [take(ring, 0)]

    obj = compiled(WANDERER, "wanderer.py")
    out, probe, _ = differential(Scenario(obj, host, setup=setup, cq_sizes=(8,)))
    assert out.host == [(11, -errno.EINVAL, 0)]
    assert out.maps["count"] == [(0, 6)] and out.runs == {"wanderer": 6}
    [fault] = out.faults
    assert (fault.user_data, fault.program, fault.res) == (11, "wanderer", -errno.EINVAL)
    assert fault.message == "ctx.wait_idx = 9 names no CQ (the ring has 2)"
    assert probe.codes == [BAD_WAIT] and probe.python_runs == 0


# --- overflow: emit_cqe into a full CQ ---------------------------------------------------------

@pytest.mark.uring
def test_emit_into_a_full_cq_is_enomem_and_counted_the_same():
    nops = 12
    ud = relay_data(nops, 1, 1, 2)

    def host(ring):
        ring.submit_bpf("relay", user_data=ud)
        return [take(ring, 0), leftovers(ring, 2)]

    obj = compiled(RELAY, "relay.py")
    out, probe, _ = differential(Scenario(obj, host, cq_sizes=(16, 2)))
    assert out.host == [(ud, 0, 0), [(1, 1000, 0), (2, 1001, 0)]]
    assert out.maps["count"] == [(0, nops)]
    assert [v for _, v in out.maps["rets"][1:nops + 1]] == [0, 0] + [-errno.ENOMEM] * (nops - 2)
    assert out.overflows == (0, 0, nops - 2)
    assert probe.codes == [READY] and probe.python_runs == 0


# --- COMPLETE: the request's own CQ is full ----------------------------------------------------

@pytest.mark.kernel
def test_completion_into_a_full_cq_is_handed_to_the_python_ring():
    nops = 10
    ud = relay_data(nops, nops, 1, 3)            # emits its last count to CQ 3, then completes

    def host(ring):
        ring.submit(nop(1, 2))
        ring.submit(nop(2, 2))                       # CQ 2 (2 entries) is now full
        ring.submit(bpf_sqe(0, ud, 2))               # the request completes on CQ 2
        return [take(ring, 3), take(ring, 2), take(ring, 2), take(ring, 2)]

    obj = compiled(RELAY, "relay.py")
    out, probe, _ = differential(Scenario(obj, host, cq_sizes=(16, 2, 4)))
    assert out.host == [(nops, 1000 + nops - 1, 0), (1, 0, 0), (2, 0, 0), (ud, 0, 0)]
    assert out.overflows == (0, 0, 1, 0)
    assert out.runs == {"relay": nops + 1} and out.parked == 0
    assert COMPLETE in probe.codes and probe.python_runs == 1   # (an SQE's request starts in Python)


# --- PYTHON: SQEs only the Python ring queues (the _slow callback) -----------------------------

def plain_nop(user_data: int) -> Sqe:
    return nop(user_data, 1)


def no_sqe() -> Sqe:
    sqe = Sqe()
    sqe.opcode = 255
    return sqe


@pytest.mark.uring
def test_sqes_only_python_queues_go_through_the_slow_callback():
    ts = Timespec(10, 0)
    skip = nop(88, 0)
    skip.flags = IOSQE_CQE_SKIP_SUCCESS
    cancel = Sqe()
    cancel.opcode, cancel.addr, cancel.user_data, cancel.cq_idx = IORING_OP_ASYNC_CANCEL, 555, 4444, 1
    plan = [plain_nop(0), no_sqe(),
            plain_nop(1), bpf_sqe(1, 77, 3),          # round 1: a request for `child`
            plain_nop(2), skip,                        # round 2: CQE_SKIP_SUCCESS on CQ 0
            cancel, no_sqe(),                          # round 3: cancel the host's timeout
            plain_nop(4), nop(5, 9),                   # round 4: no CQ 9 (-EINVAL)
            plain_nop(5), no_sqe(),
            plain_nop(6), no_sqe()]

    def setup(ring):
        for i, sqe in enumerate(plan):
            ring.maps["plan"][i] = bytes(sqe)

    def host(ring):
        ring.submit(timeout_sqe(ts, 555, 2))
        ring.submit_bpf("script", user_data=1)
        return [take(ring, 0), take(ring, 2), take(ring, 3), take(ring, 3), leftovers(ring, 0),
                leftovers(ring, 1)]

    obj = compiled(SCRIPT, "script.py")
    out, probe, _ = differential(Scenario(obj, host, setup=setup))
    assert out.host == [(1, 0, 0), (555, -errno.ECANCELED, 0), (78, 5, 0), (77, 0, 0), [], []]
    log = [v for _, v in out.maps["log"]]
    assert log[1] == 7
    # per round, the CQE script reaped: its NOPs', and in round 4 its cancel's
    assert [(log[2 * n], log[2 * n + 1]) for n in range(1, 8)] == \
        [(0, 0), (1, 0), (2, 0), (4444, 0), (4, 0), (5, 0), (6, 0)]
    assert [v for _, v in out.maps["rets"]] == [0, 0, 0, 0, 0, 0, 0, 0, 0, -errno.EINVAL,
                                                 0, 0, 0, 0]
    assert out.runs == {"script": 8, "child": 1}
    assert out.faults == [] and out.parked == 0
    assert PYTHON in probe.codes
    assert probe.python_runs <= 3          # script's first run, child's run, at most one more


# --- two parked requests -----------------------------------------------------------------------

@pytest.mark.uring
def test_pingpong_sample_with_untimed_waits():
    obj = compile_file(str(ROOT / "samples" / "pingpong.py"))

    def host(ring):
        ring.submit_bpf("pingpong", user_data=1)
        ring.submit_bpf("pingpong", user_data=2)
        ring.submit(nop(0, 1))
        return [take(ring, 0), take(ring, 0), leftovers(ring, 1), leftovers(ring, 2)]

    out, probe, _ = differential(Scenario(obj, host, cq_sizes=(128, 128)))
    assert sorted(out.host[:2]) == [(1, 0, 0), (2, 0, 0)] and out.host[2:] == [[], []]
    assert out.maps["hits"] == [(0, 0), (1, 11), (2, 10)] and out.maps["last"] == [(0, 20)]
    assert out.runs == {"pingpong": 23}
    assert READY in probe.codes and probe.python_runs == 0


# --- MORE: more runs than one native wait's budget ---------------------------------------------

@pytest.mark.uring
def test_a_rally_longer_than_the_run_budget_stays_in_one_native_wait():
    """A spent run budget (MORE) returns to NativeRing.wait's own loop, which lets Python see
    signals and goes on without handing the ring back: one wait, no import and export."""
    limit = 10_000
    calls = []
    original = native_ring.NativeRing._cq_count

    def counted(self, cq):          # called once per MORE inside NativeRing.wait
        calls.append(cq)
        return original(self, cq)

    def host(ring):
        ring.submit_bpf("rally", user_data=1 | limit << 8)
        ring.submit_bpf("rally", user_data=2 | limit << 8)
        ring.submit(nop(0, 1))
        return [take(ring, 0), take(ring, 0)]

    obj = compiled(RALLY, "rally.py")
    out, probe, _ = differential(Scenario(obj, host, cq_sizes=(4, 4)))
    assert sorted(out.host) == [(1 | limit << 8, 0, 0), (2 | limit << 8, 0, 0)]
    assert out.maps["hits"] == [(0, 0), (1, limit // 2 + 1), (2, limit // 2)]
    assert out.runs == {"rally": limit + 3}
    assert probe.python_runs == 0 and MORE not in probe.codes
    native_ring.NativeRing._cq_count = counted
    try:
        again, probe, _ = differential(Scenario(obj, host, cq_sizes=(4, 4)))
    finally:
        native_ring.NativeRing._cq_count = original
    assert again == out and len(calls) == limit // native_ring._RUN_BUDGET


@pytest.mark.uring
def test_a_signal_interrupts_an_endless_native_chain_and_the_ring_stays_whole():
    """A chain with no end (the count is never reached) runs in one native wait; a signal
    handler's exception comes out of wait_cqe (as Ctrl-C's KeyboardInterrupt would), with the
    Python ring up to date: the map holds the runs made, the request is parked, the ring works."""
    class Stop(Exception):
        pass

    def fire(*_):
        raise Stop

    obj = compiled(bench_chain_source(), "chain.py")
    previous = signal.signal(signal.SIGALRM, fire)
    try:
        with Ring(entries=64, cq_sizes=(64,)) as ring:
            ring.register(obj, engine=lambda o: instantiate(o, backend="jit"))
            assert ring._native is not None
            ring.submit_bpf("chain", user_data=1 << 62)
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(Stop):
                ring.wait_cqe(0)
            done = ring.maps["count"][0]
            assert done > native_ring._RUN_BUDGET and ring.parked == 1
            assert ring.engine.programs["chain"].runs == done
            ring.submit(nop(7, 0))
            assert (ring.wait_cqe(0).user_data, ring.parked) == (7, 1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.uring
def test_a_tier_0_program_runs_natively_and_tiers_up_when_hot():
    n = 400

    def host(ring):
        assert ring.engine.programs["big"].vm.tier == 0
        ring.submit_bpf("big", user_data=n)
        got = [take(ring, 0)]
        assert ring.engine.programs["big"].vm.tier == 1
        return got

    obj = compiled(BIG, "big.py")
    out, probe, _ = differential(Scenario(obj, host, cq_sizes=(4,)))
    assert out.host == [(n, 0, 0)]
    assert out.maps["count"][0] == (0, n) and out.runs == {"big": n + 1}
    # no run is Python's: submit_bpf's poll and one native wait run them all at tier 0,
    # and the instructions it ran make the program hot
    assert probe.codes == [READY] and probe.python_runs == 0


@pytest.mark.uring
def test_hash_map_values_created_updated_and_deleted_in_native_waits():
    n = 40

    def host(ring):
        ring.submit_bpf("chain", user_data=n)
        return [take(ring, 0)]

    obj = compiled(HASHED, "chain.py")
    out, probe, _ = differential(Scenario(obj, host, cq_sizes=(8,)))
    assert out.host == [(n, 0, 0)] and out.runs == {"chain": n + 1}
    # NOP k lands in slot k % 4 and deletes it when k % 7 == 6: count what survives in Python
    survivors: dict[int, int] = {}
    for k in range(n):
        survivors[k % 4] = survivors.get(k % 4, 0) + 1
        if k % 7 == 6:
            del survivors[k % 4]
    assert dict(out.maps["seen"]) == survivors
    assert probe.codes == [READY] and probe.python_runs == 0


# --- the Python ring only: the interpreter -----------------------------------------------------

@pytest.mark.uring
@pytest.mark.parametrize("source, backend", [(bench_chain_source(), "interpreter")],
                         ids=["interpreter"])
def test_objects_that_cannot_run_natively_still_work(source, backend):
    n = 20

    def host(ring):
        ring.submit_bpf("chain", user_data=n)
        return [take(ring, 0)]

    obj = compiled(source, "chain.py")
    scenario = Scenario(obj, host, cq_sizes=(8,), backend=backend)
    native, native_probe = run(scenario, native=True)
    reference, _ = run(scenario, native=False)
    assert native == reference
    assert native.host == [(n, 0, 0)] and native.runs == {"chain": n + 1}
    assert native.maps["count"] == [(0, n)]
    assert not native_probe.native and native_probe.codes == []
    assert native_probe.python_runs == n + 1


# --- STALLED: deadlocks ------------------------------------------------------------------------

@pytest.mark.uring
def test_a_deadlock_is_reported_the_same():
    def host(ring):
        ring.submit_bpf("sleeper", user_data=4)
        return [take(ring, 0)]

    obj = compiled(IDLE, "idle.py")
    out, probe, _ = differential(Scenario(obj, host, cq_sizes=(4, 4)))
    assert out.host == [("DeadlockError", "wait_cqe(cq=0) would wait for ever: CQ 0 is empty, no "
                         "kernel request is in flight and no BPF request can run (parked: sleeper "
                         "on CQ 2 for 1)")]
    assert out.parked == 1 and out.runs == {"sleeper": 1, "lazy": 0}
    assert probe.codes == [STALLED]


@pytest.mark.uring
def test_a_program_reparking_on_a_true_condition_does_not_spin():
    ts = Timespec(0, 20_000_000)

    def host(ring):
        ring.submit_bpf("lazy", user_data=6)
        ring.submit(timeout_sqe(ts, 1, 2))
        return [take(ring, 2)]

    obj = compiled(IDLE, "idle.py")
    out, probe, _ = differential(Scenario(obj, host, cq_sizes=(4, 4)))
    assert out.host == [(1, -errno.ETIME, 0)]
    # once per pass that changed something: 3 in submit_bpf, 1 in submit, 2 in the wait (before
    # and after the timeout's CQE) -- not a spin while the timeout ran
    assert out.runs["lazy"] == out.maps["seen"][1][1] == 6
    assert out.parked == 1
    # submit_bpf ran the request natively (a poll: STALLED is its normal end when nothing is
    # in flight)
    assert probe.polls == [STALLED] and probe.codes == [READY]


@pytest.mark.uring
def test_a_deadlock_with_a_request_reparking_on_a_true_condition_runs_it_as_often():
    def host(ring):
        ring.submit_bpf("lazy", user_data=6)
        return [take(ring, 0)]

    obj = compiled(IDLE, "idle.py")
    reference, _ = run(Scenario(obj, host, cq_sizes=(4, 4)), native=False)
    assert reference.host[0][0] == "DeadlockError" and reference.runs["lazy"] == 4
    out, probe, _ = differential(Scenario(obj, host, cq_sizes=(4, 4)))
    assert probe.polls == [STALLED] and probe.codes == [STALLED]  # submit_bpf's poll, the wait


# `sleeper` parks on CQ 2 before `waker` does; when the NOP wakes `waker`, it emits onto CQ 2
# after the pass has checked `sleeper`, and parks where nothing comes: only a second pass runs
# `sleeper`, whose completion the host waits for.
WAKE = """
    from pybpf_uring import iouring, ArrayMap, i32, u64
    from pybpf_uring.uring import IoUringCtx, Cqe, emit_cqe, reap_cqe

    runs = ArrayMap(u64, 2)

    @iouring
    def sleeper(ctx: IoUringCtx) -> i32:
        n = runs[0]
        runs[0] = n + 1
        if n == 0:
            ctx.wait_idx = 2
            ctx.wait_nr = 1
            return 0
        cqe = Cqe()
        reap_cqe(ctx, 2, cqe)
        return 0

    @iouring
    def waker(ctx: IoUringCtx) -> i32:
        n = runs[1]
        runs[1] = n + 1
        if n == 0:
            ctx.wait_idx = 1
            ctx.wait_nr = 1
            return 0
        cqe = Cqe()
        reap_cqe(ctx, 1, cqe)
        emit_cqe(ctx, 2, 7, 0, 0)
        ctx.wait_idx = 3
        ctx.wait_nr = 1
        return 0
"""


@pytest.mark.uring
def test_a_cqe_emitted_behind_the_scan_wakes_an_earlier_request_in_the_same_wait():
    # (the settling pass a native wait skips when nothing woke; an emit is a wake)
    def host(ring):
        ring.submit_bpf("sleeper", user_data=1)
        ring.submit_bpf("waker", user_data=2)
        ring.submit(nop(5, 1))
        return [take(ring, 0)]

    obj = compiled(WAKE, "wake.py")
    out, probe, _ = differential(Scenario(obj, host, cq_sizes=(4, 4, 4, 4)))
    assert out.host == [(1, 0, 0)]
    assert out.runs == {"sleeper": 2, "waker": 2} and out.parked == 1
    assert probe.codes == [READY] and probe.python_runs == 0


# Each run logs its request's user_data, reaps a CQE from the CQ of that number and finishes,
# or parks there for one.
ORDER = """
    from pybpf_uring import iouring, ArrayMap, i32, u64
    from pybpf_uring.uring import IoUringCtx, Cqe, reap_cqe

    log = ArrayMap(u64, 8)

    @iouring
    def logged(ctx: IoUringCtx) -> i32:
        n = log[0]
        log[n + 1] = ctx.user_data
        log[0] = n + 1
        cqe = Cqe()
        if reap_cqe(ctx, ctx.user_data, cqe) != 0:
            ctx.wait_idx = ctx.user_data
            ctx.wait_nr = 1
        return 0
"""


@pytest.mark.uring
def test_a_request_submit_bpf_ran_natively_parks_behind_the_parked_ones():
    # as Ring._progress: the runnable request runs first and parks at the end of the list, so
    # when both CQs get their CQE in one round, request 1 runs before request 2
    def host(ring):
        ring.submit_bpf("logged", user_data=1)
        ring.submit_bpf("logged", user_data=2)
        ring.queue(nop(5, 1))
        ring.queue(nop(6, 2))
        return [take(ring, 0), take(ring, 0)]     # one enter submits both; one round runs both

    obj = compiled(ORDER, "order.py")
    out, probe, _ = differential(Scenario(obj, host, cq_sizes=(4, 4, 4)))
    assert out.maps["log"][:5] == [(0, 4), (1, 1), (2, 2), (3, 1), (4, 2)]
    assert out.host == [(1, 0, 0), (2, 0, 0)] and out.parked == 0
    assert probe.python_runs == 0 and probe.codes == [READY]


# --- the run budget must not hold a wait whose CQ has a CQE --------------------------------------

@pytest.mark.uring
def test_endless_rally_still_lets_an_untimed_wait_return():
    ts = Timespec(0, 50_000_000)

    def host(ring):
        ring.submit_bpf("rally", user_data=1)
        ring.submit_bpf("rally", user_data=2)
        ring.submit(nop(0, 1))
        ring.submit(timeout_sqe(ts, 99, 3))
        return [take(ring, 3)]

    obj = compiled(RALLY, "rally.py")
    scenario = Scenario(obj, host, cq_sizes=(4, 4, 4), watchdog=1.0)
    reference, _ = run(scenario, native=False)
    assert reference.host == [(99, -errno.ETIME, 0)] and reference.runs["rally"] > 4096
    native, probe = run(scenario, native=True)
    assert native.host == reference.host and MORE in probe.codes


# --- timed waits --------------------------------------------------------------------------------

@pytest.mark.uring
def test_timed_waits_see_what_untimed_ones_see():
    nops, every = 30, 5
    ud = relay_data(nops, every, 1, 2)

    def host(ring):
        ring.submit_bpf("relay", user_data=ud)
        got = [take_timed(ring, 2, 5.0) for _ in range(3)]
        got.append(take(ring, 2))
        got += [take_timed(ring, 2, 5.0) for _ in range(2)]
        return got + [take_timed(ring, 0, 5.0), take_timed(ring, 0, 0.01)]

    obj = compiled(RELAY, "relay.py")
    scenario = Scenario(obj, host)
    native, probe = run(scenario, native=True)
    reference, _ = run(scenario, native=False)
    assert native == reference
    assert native.host == [(5 * k, 1000 + 5 * k - 1, 0) for k in range(1, 7)] + [
        (ud, 0, 0), ("TimeoutError", "no CQE on CQ 0 within 0.01 s")]
    assert native.runs == {"relay": nops + 1}
    assert READY in probe.codes                   # the untimed wait, at least


@pytest.mark.uring
def test_endless_rally_lets_a_timed_wait_time_out():
    """A timed wait on a CQ nothing posts to, while two requests bounce for ever, must time out
    (tests/test_ring.py checks it with Python stand-ins; here with JIT-compiled programs)."""
    def host(ring):
        ring.submit_bpf("rally", user_data=1)
        ring.submit_bpf("rally", user_data=2)
        ring.submit(nop(0, 1))
        return [take_timed(ring, 3, 0.3)]

    obj = compiled(RALLY, "rally.py")
    scenario = Scenario(obj, host, cq_sizes=(4, 4, 4), watchdog=5.0)
    for native in (False, True):     # (0.3 s: > 4096 Python runs even on a loaded machine)
        out, _ = run(scenario, native=native)
        assert out.host == [("TimeoutError", "no CQE on CQ 3 within 0.3 s")]
        assert out.runs["rally"] > 4096 and out.parked == 2


# --- random scenarios ----------------------------------------------------------------------------

@st.composite
def relay_scenarios(draw):
    """One or two relays (shared counter) with random lengths, CQs and sizes, and the host
    waiting on random CQs (a wait that cannot end is a DeadlockError, compared too)."""
    relays = [relay_data(draw(st.integers(0, 30)), draw(st.integers(1, 6)),
                         draw(st.integers(1, 2)), draw(st.integers(0, 3)))
              for _ in range(draw(st.integers(1, 2)))]
    sizes = tuple(draw(st.integers(1, 8)) for _ in range(3))
    waits = draw(st.lists(st.integers(0, 3), max_size=8))
    entries = draw(st.sampled_from([2, 4, 8]))
    return relays, sizes, waits, entries


@pytest.mark.kernel
@settings(max_examples=int(os.environ.get("NATIVE_RING_EXAMPLES", 25)), deadline=None, database=None)
@given(relay_scenarios())
# found by this test: an overflow counted natively on a CQ that was empty at both ends of the
# wait was not brought back; a peek whose native poll found nothing to do raised DeadlockError
@example(([1_108_101_693_442, 4_295_032_833], (1, 1, 1), [], 2))
@example(([8_590_000_129, 8_590_000_128], (1, 1, 1), [], 2))
def test_random_relays_agree_with_the_python_ring(params):
    check_relays(params)


@pytest.mark.kernel
@settings(max_examples=int(os.environ.get("NATIVE_RING_EXAMPLES", 25)), deadline=None, database=None)
@given(relay_scenarios())
def test_random_relays_agree_when_cqs_outgrow_their_native_buffers(params):
    saved = native_ring._NATIVE_CQ
    native_ring._NATIVE_CQ = 2
    try:
        check_relays(params)
    finally:
        native_ring._NATIVE_CQ = saved


def check_relays(params):
    relays, sizes, waits, entries = params

    def host(ring):
        for i, ud in enumerate(relays):
            ring.submit_bpf("relay", user_data=ud | i << 48)
        got = [take(ring, cq) for cq in waits]
        return got + [leftovers(ring, cq) for cq in range(4)]

    scenario = Scenario(compiled(RELAY, "relay.py"), host, entries=entries, cq_sizes=sizes)
    native, native_probe = run(scenario, native=True)
    reference, _ = run(scenario, native=False)
    assert native == reference
    if native_probe.codes:
        assert native_probe.native


# --- hash maps: lookups and in-place updates through the native index --------------------------

HASH_OPS = """
    from pybpf_uring import iouring, ArrayMap, HashMap, i32, u64
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, prep_nop

    cmds = ArrayMap(u64, 64)       # one per run: op << 32 | key (0 lookup, 1 update, 2 delete)
    out = ArrayMap(u64, 64)        # a lookup's value (0: absent)
    table = HashMap(u64, u64, 8)
    step = ArrayMap(u64, 1)

    @iouring
    def ops(ctx: IoUringCtx) -> i32:
        cqe = Cqe()
        reap_cqe(ctx, 1, cqe)
        i = step[0]
        if i >= ctx.user_data:
            return 0
        step[0] = i + 1
        c = cmds[i]
        op = c >> 32
        key = c & 0xFFFF
        if op == 0:
            out[i] = table[key]
        elif op == 1:
            table[key] = i + 1
        else:
            del table[key]
        sqe = Sqe()
        prep_nop(sqe)
        sqe.cq_idx = 1
        queue_sqe(ctx, sqe)
        ctx.wait_idx = 1
        ctx.wait_nr = 1
        return 0
"""


def python_helper_calls(ring, first_arg: int | None = None) -> dict:
    """Count the helper calls that reach Python (whose r1 is `first_arg`, if given):
    {helper id: calls}."""
    counts: dict = {}
    for program in ring.engine.programs.values():
        jit = program.vm
        for pc, (fn, what) in list(jit._calls.items()):
            helper = jit.slots[pc].imm

            def counted(mem, r1, *rest, fn=fn, helper=helper):
                if first_arg is None or r1 == first_arg:
                    counts[helper] = counts.get(helper, 0) + 1
                return fn(mem, r1, *rest)
            jit._calls[pc] = (counted, what)
    return counts


def python_hash_calls(ring) -> dict:
    """Count the Python helper calls that name the hash map `table`: {helper id: calls}."""
    return python_helper_calls(ring, ring.maps["table"].handle.base)


@pytest.mark.uring
@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 0, 1, 1, 2]), st.integers(0, 11)), min_size=1,
                max_size=64))
def test_hash_map_operations_agree_with_the_python_ring(commands):
    calls: list = []

    def setup(ring):
        for i, (op, key) in enumerate(commands):
            ring.maps["cmds"][i] = op << 32 | key
        calls.append(python_hash_calls(ring))

    def host(ring):
        ring.submit_bpf("ops", user_data=len(commands))
        return [take(ring, 0)]

    out, probe, _ = differential(Scenario(compiled(HASH_OPS, "ops.py"), host, setup=setup,
                                          cq_sizes=(8,)))
    # the model: a dict of at most 8 keys; updates of a new key into a full table are refused
    model: dict = {}
    expect = {}
    for i, (op, key) in enumerate(commands):
        if op == 0:
            expect[i] = model.get(key, 0)
        elif op == 1 and (key in model or len(model) < 8):
            model[key] = i + 1
        elif op == 2:
            model.pop(key, None)
    assert dict(out.maps["table"]) == model
    assert all(dict(out.maps["out"])[i] == v for i, v in expect.items())
    # in the native run, only the updates that create a key (or are refused: a full table) and
    # deletes reach Python; lookups and in-place updates do not, the first run's included
    native_calls = calls[1]
    assert native_calls.get(1, 0) == 0
    assert native_calls.get(3, 0) == sum(op == 2 for op, _ in commands)
    assert native_calls.get(2, 0) <= sum(op == 1 for op, _ in commands)
    assert probe.python_runs == 0


@pytest.mark.uring
def test_the_hash_index_survives_tombstones_and_rebuilds(monkeypatch):
    """Keys inserted and deleted over and over: tombstones fill the 16-slot index, rebuilds
    clear them, and every lookup stays native and right."""
    commands = []
    for k in range(16):
        commands += [(1, k), (0, k), (2, k), (0, k)]
    rebuilds = []
    rebuild = native_ring.HashIndex.rebuild
    monkeypatch.setattr(native_ring.HashIndex, "rebuild",
                        lambda self: rebuilds.append(1) or rebuild(self))
    calls: list = []

    def setup(ring):
        for i, (op, key) in enumerate(commands):
            ring.maps["cmds"][i] = op << 32 | key
        calls.append(python_hash_calls(ring))

    def host(ring):
        ring.submit_bpf("ops", user_data=len(commands))
        return [take(ring, 0)]

    out, probe, _ = differential(Scenario(compiled(HASH_OPS, "ops.py"), host, setup=setup,
                                          cq_sizes=(8,)))
    assert calls[1].get(1, 0) == 0 and probe.codes == [READY]
    assert dict(out.maps["table"]) == {}
    assert [v for _, v in out.maps["out"]] == [v for k in range(16) for v in (0, 4 * k + 1, 0, 0)]
    assert len(rebuilds) >= 4          # 2 at creation, then when tombstones filled the index


# --- user memory and the clock, natively ---------------------------------------------------------

COPIER = """
    from pybpf_uring import iouring, ArrayMap, i32, i64, u64
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, prep_nop
    from pybpf_uring.uring import copy_from_user, copy_to_user
    from pybpf_uring import ktime_get_ns

    count = ArrayMap(u64, 1)
    rets = ArrayMap(i64, 64)       # per round: copy_from_user's return << 8 | copy_to_user's
    seen = ArrayMap(u64, 64)       # per round: what copy_from_user gave

    @iouring
    def copier(ctx: IoUringCtx) -> i32:
        cqe = Cqe()
        reap_cqe(ctx, 1, cqe)
        n = count[0]
        if n >= 12:
            return 0
        count[0] = n + 1
        now: u64 = ktime_get_ns()
        copy_to_user(ctx.user_data + 96 + n * 8, now)      # words[12 + n]: not compared
        where = ctx.user_data + n * 8
        if n == 5:
            where = 8              # not mapped: -EFAULT, and the value reads as 0
        v: u64 = 77
        got = copy_from_user(v, where)
        seen[n] = v
        v = v * 2 + n
        put = copy_to_user(where, v)
        rets[n] = got * 256 + put
        sqe = Sqe()
        prep_nop(sqe)
        sqe.cq_idx = 1
        queue_sqe(ctx, sqe)
        ctx.wait_idx = 1
        ctx.wait_nr = 1
        return 0
"""


@pytest.mark.uring
def test_user_memory_and_the_clock_in_native_waits():
    words = (ctypes.c_uint64 * 24)()          # 12 counters, then 12 clock readings
    starts: list = []
    stamps: list = []

    calls: list = []

    def host(ring):
        calls.append(python_helper_calls(ring))
        for i in range(12):
            words[i] = 100 + i
        starts.append(time.monotonic_ns())
        ring.submit_bpf("copier", user_data=ctypes.addressof(words))
        got = [take(ring, 0)]
        starts.append(time.monotonic_ns())
        stamps.append(list(words[12:]))
        return got + [list(words[:12])]

    out, probe, _ = differential(Scenario(compiled(COPIER, "copier.py"), host, cq_sizes=(8,)))
    assert out.host == [(ctypes.addressof(words), 0, 0),
                        [(100 + i) * 2 + i if i != 5 else 105 for i in range(12)]]
    assert [v for _, v in out.maps["seen"][:12]] == [100 + i if i != 5 else 0 for i in range(12)]
    efault = -errno.EFAULT
    assert [v for _, v in out.maps["rets"][:12]] == [0 if i != 5 else efault * 256 + efault
                                                     for i in range(12)]
    assert probe.codes == [READY] and probe.python_runs == 0
    # in the native run only the first lookup of an array element reaches Python: every copy
    # and clock reading is native, the first run's (submit_bpf's) too
    python, native = calls
    assert python[148] == python[167] - 12 == python[5] == 12
    assert native.get(148, 0) == native.get(167, 0) == native.get(5, 0) == 0 and native
    # the clock: CLOCK_MONOTONIC, read in each run (the native run is the second of the two)
    native = stamps[1]
    assert native == sorted(native) and starts[2] <= native[0] and native[-1] <= starts[3]


@pytest.mark.uring
def test_a_cq_deeper_than_its_native_buffer_is_left_to_python(monkeypatch):
    """A CQ holding more CQEs than its native buffer (native_ring._NATIVE_CQ, made 4 here) is
    served by the Python ring, and the waits around it stay right."""
    monkeypatch.setattr(native_ring, "_NATIVE_CQ", 4)
    nops = 20
    ud = relay_data(nops, 1, 1, 2)

    def host(ring):
        ring.submit_bpf("relay", user_data=ud)
        return [take(ring, 0), leftovers(ring, 2)]

    out, probe, _ = differential(Scenario(compiled(RELAY, "relay.py"), host, cq_sizes=(16, 64)))
    assert out.host == [(ud, 0, 0), [(n, 999 + n, 0) for n in range(1, nops + 1)]]
    assert [v for _, v in out.maps["rets"][1:nops + 1]] == [0] * nops
    # once CQ 2 outgrew its buffer, each emit went through Python, the rest stayed native
    assert probe.codes[-1] == READY and probe.python_runs == 0


SHARED = """
    from pybpf_uring import iouring, ArrayMap, HashMap, i32, u64
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, prep_nop

    table = HashMap(u64, u64, 8)
    stats = ArrayMap(u64, 2)       # [0] rounds, [1] the sum of what the lookups found

    @iouring
    def reader(ctx: IoUringCtx) -> i32:
        cqe = Cqe()
        reap_cqe(ctx, 1, cqe)
        n = stats[0]
        if n >= ctx.user_data:
            return 0
        stats[0] = n + 1
        for k in range(8):
            stats[1] += table[k]
        sqe = Sqe()
        prep_nop(sqe)
        sqe.cq_idx = 1
        queue_sqe(ctx, sqe)
        ctx.wait_idx = 1
        ctx.wait_nr = 1
        return 0
"""


@pytest.mark.uring
def test_another_thread_may_read_and_update_maps_during_a_native_wait():
    """A native wait releases the GIL: a host thread reading the maps and rewriting existing
    keys meanwhile sees and makes consistent values.  (Creating or deleting hash keys maps and
    unmaps engine memory, which is the ring thread's: docs/runtime.md.)"""
    import threading
    rounds = 20_000
    with Ring(entries=8, cq_sizes=(8,)) as ring:
        ring.register(compiled(SHARED, "shared.py"))
        table, stats = ring.maps["table"], ring.maps["stats"]
        for k in range(8):
            table[k] = 1
        stop, errors, seen = threading.Event(), [], []

        def churn():
            try:
                while not stop.is_set():
                    for k in range(8):
                        table[k] = 1                   # in place: the same value
                    seen.append(stats[0])
            except BaseException as exc:      # noqa: BLE001 -- reported by the test
                errors.append(exc)

        worker = threading.Thread(target=churn)
        worker.start()
        try:
            ring.submit_bpf("reader", user_data=rounds)
            done = ring.wait_cqe(0, timeout=60)
        finally:
            stop.set()
            worker.join()
        assert not errors and done.res == 0 and not ring.faults
        assert (stats[0], stats[1]) == (rounds, 8 * rounds)
        assert seen == sorted(seen) and len(seen) > 1     # it ran while the wait did
