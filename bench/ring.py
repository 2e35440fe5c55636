"""Ring benchmark: a one-at-a-time chain of N NOPs through pybpf_uring's `Ring` against C liburing.

Each op submits one NOP and waits for its CQE before the next (the shape of a BPF request that
queues an SQE and parks on its CQ), so the figure is per-op overhead, not kernel throughput.
Every side runs the same N NOPs, interleaved in rounds with a C loop on liburing (gcc + Debian's
liburing-dev; a fresh process per round that times its own loop), each side in the thread CPU
time of its loop (bench/measure.py says why both), and is printed as its median ops/s, io_uring_enter calls per op (the ring counts its own calls; the C side is counted with
`strace -c` when strace is installed), its median's ratio to C's median over the same rounds,
and the min-max of the per-round ratios:

- `Ring` driven by a Python loop (`ring.queue(sqe)` + `ring.wait_cqe()`);
- for reference, the `liburing` PyPI package's Python binding, if it is installed (the ring
  layer was chosen against it: see the `pybpf_uring.runtime.ring` docstring);
- the BPF-driven chain: a program that queues the next NOP on CQ 1 and parks on it.  Measured with
  a Python stand-in program (the runtime's own overhead), and with the compiled program on each
  engine (ENGINES): the interpreter, the JIT with the rounds driven by the Python ring, and the
  JIT with native waits (engine/native_ring.py: the whole round in native code; target >= 0.5x C).

Then samples/udp_keepalive.py in fresh processes: wakeups, program runs and CPU per keep-alive.

Run: python3 bench/ring.py [-n N] [--rounds R]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
from types import SimpleNamespace
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(1, HERE)

from measure import CPU_CLOCK, child_cpu, compare, interleave, spread  # noqa: E402  (bench/measure.py)

C_LABEL = "C liburing"

C_CHAIN = r"""
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* n NOPs, `depth` in flight: every CQE reaped puts the next NOP in its place, and one
   io_uring_submit_and_wait submits them and waits; at depth 1, one NOP at a time. */
int main(int argc, char **argv)
{
    long n = atol(argv[1]), depth = argc > 2 ? atol(argv[2]) : 1, queued = 0, done = 0;
    struct io_uring ring;
    struct io_uring_params p = { .flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN };
    if (io_uring_queue_init_params(64, &ring, &p) < 0) { perror("io_uring_queue_init"); return 2; }
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (; queued < depth && queued < n; queued++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_nop(sqe);
        sqe->user_data = queued;
    }
    while (done < n) {
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            if (cqe->user_data != (unsigned long)(done + seen)) return 3;
            seen++;
            if (queued < n) {
                struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
                io_uring_prep_nop(sqe);
                sqe->user_data = queued++;
            }
        }
        io_uring_cq_advance(&ring, seen);
        done += seen;
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    printf("%.1f\n", n / ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9));
    io_uring_queue_exit(&ring);
    return 0;
}
"""

# The BPF-driven chain as users would write it.  N arrives in ctx.user_data; the count lives in a
# map between runs.
BPF_CHAIN_SOURCE = textwrap.dedent("""
    from pybpf_uring import iouring, ArrayMap, i32, u64
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, prep_nop

    count = ArrayMap(u64, 1)

    @iouring
    def chain(ctx: IoUringCtx) -> i32:
        cqe = Cqe()
        reap_cqe(ctx, 1, cqe)
        n = count[0]
        if n < ctx.user_data:
            count[0] = n + 1
            sqe = Sqe()
            prep_nop(sqe)
            sqe.cq_idx = 1
            queue_sqe(ctx, sqe)
            ctx.wait_idx = 1
            ctx.wait_nr = 1
        return 0
""")

# The chain `depth` deep: request i (1..depth, in the top 16 bits of ctx.user_data) keeps one NOP
# in flight on its own CQ i until the shared count reaches N (the low 48 bits), so `depth` NOPs are
# in flight as in the C loop at that depth, and every request ends with its own last CQE.
DEPTH_CHAIN_SOURCE = textwrap.dedent("""
    from pybpf_uring import iouring, ArrayMap, i32, u16, u64
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, prep_nop

    count = ArrayMap(u64, 1)

    @iouring
    def chains(ctx: IoUringCtx) -> i32:
        mine = u16(ctx.user_data >> 48)
        cqe = Cqe()
        reap_cqe(ctx, mine, cqe)
        n = count[0]
        if n < ctx.user_data & 0xFFFFFFFFFFFF:
            count[0] = n + 1
            sqe = Sqe()
            prep_nop(sqe)
            sqe.cq_idx = mine
            queue_sqe(ctx, sqe)
            ctx.wait_idx = mine
            ctx.wait_nr = 1
        return 0
""")


def python_chain(n: int) -> tuple[float, float]:
    """`Ring` from a Python loop: (ops/s, io_uring_enter calls per op)."""
    from pybpf_uring.runtime.ring import Ring
    from pybpf_uring.uring import prep_nop
    with Ring(entries=64) as ring:
        sqe = ring.sqe()
        prep_nop(sqe)
        queue, wait = ring.queue, ring.wait_cqe
        t0 = CPU_CLOCK()
        for i in range(n):
            sqe.user_data = i
            queue(sqe)
            if wait().user_data != i:
                raise AssertionError("CQE out of order")
        dt = CPU_CLOCK() - t0
        return n / dt, ring.enter_calls / n


def pypi_liburing_chain(n: int) -> tuple[float, float]:
    """The `liburing` PyPI binding's chain (for reference, when it is installed): (ops/s, 1 enter
    per op, as submit_and_wait makes)."""
    import liburing as L
    ring, cqe = L.Ring(), L.Cqe()
    L.io_uring_queue_init(64, ring, 0)
    try:
        t0 = CPU_CLOCK()
        for i in range(n):
            sqe = L.io_uring_get_sqe(ring)
            L.io_uring_prep_nop(sqe)
            sqe.user_data = i
            L.io_uring_submit_and_wait(ring, 1)
            L.io_uring_peek_cqe(ring, cqe)
            L.io_uring_cqe_seen(ring, cqe[0])
        return n / (CPU_CLOCK() - t0), 1.0
    finally:
        L.io_uring_queue_exit(ring)


class _StandInChain:
    """BPF_CHAIN_SOURCE's `chain`, played in Python: the runtime's cost without an interpreter."""

    def __init__(self) -> None:
        from pybpf_uring.uring import Sqe, prep_nop
        sqe = Sqe()
        prep_nop(sqe)
        sqe.cq_idx = 1
        self.sqe = bytes(sqe)
        self.count = 0

    def run(self, ctx: bytes, helpers) -> tuple[int, bytes]:
        user_data = struct.unpack_from("<Q", ctx)[0]
        helpers.reap_cqe(1)
        if self.count < user_data:
            self.count += 1
            helpers.queue_sqe(self.sqe)
            return 0, struct.pack("<QII", user_data, 1, 1)
        return 0, ctx


def bpf_chain(n: int, engine) -> tuple[float, float]:
    """A BPF request chaining n NOPs on CQ 1 (one run per NOP): (ops/s, enter calls per op)."""
    from pybpf_uring.runtime.ring import Ring
    obj = SimpleNamespace(programs=[SimpleNamespace(kind="iouring", name="chain",
                                                    section="iouring.s/chain")], maps={})
    with Ring(entries=64, cq_sizes=(64,)) as ring:
        ring.register(obj, engine=engine)
        t0 = CPU_CLOCK()
        ring.submit_bpf("chain", user_data=n)
        ring.wait_cqe(0)
        dt = CPU_CLOCK() - t0
        return n / dt, ring.enter_calls / n


def bench_bpf_chain_standin(n: int) -> tuple[float, float]:
    return bpf_chain(n, lambda obj: SimpleNamespace(maps={}, runner=lambda p: _StandInChain()))


NATIVE = "JIT, native waits"
ENGINES = {
    # label: instantiate() options
    "interpreter": dict(backend="interpreter"),
    "JIT, Python ring": dict(backend="jit", native_waits=False),
    NATIVE: dict(backend="jit"),
}


def bench_bpf_chain_engine(obj, n: int, **options) -> tuple[float, float]:
    """The same chain with BPF_CHAIN_SOURCE compiled (`obj`) and run by the userspace engine;
    `options` go to `instantiate` (ENGINES).  Timed from the submit: registering (instantiating,
    JIT-compiling) is not per-op overhead."""
    return _engine_chain(obj, n, 1, **options)


def bench_depth_chain(obj, n: int, depth: int, **options) -> tuple[float, float]:
    """DEPTH_CHAIN_SOURCE compiled (`obj`): `depth` requests, each with a NOP in flight."""
    return _engine_chain(obj, n, depth, **options)


def _engine_chain(obj, n: int, depth: int, **options) -> tuple[float, float]:
    from pybpf_uring.runtime.engine import instantiate
    from pybpf_uring.runtime.ring import Ring
    program = obj.programs[0].name
    cq_sizes = (64,) if depth == 1 else (4,) * depth
    with Ring(entries=64, cq_sizes=cq_sizes) as ring:
        ring.register(obj, engine=lambda o: instantiate(o, **options))
        t0 = CPU_CLOCK()
        for i in range(1, depth + 1):
            ring.submit_bpf(program, user_data=n | (i << 48 if depth > 1 else 0))
        for _ in range(depth):
            if ring.wait_cqe(0).res != 0:
                raise AssertionError("a request of the chain failed")
        dt = CPU_CLOCK() - t0
        if ring.maps["count"][0] != n:
            raise AssertionError("the chain did not run to its end")
        return n / dt, ring.enter_calls / n


def compile_chain(source: str = BPF_CHAIN_SOURCE):
    from pybpf_uring import compile_source
    return compile_source(source)


def engine_sides(n: int) -> dict[str, Callable[[], tuple[float, float]]]:
    """A NOP-chain side per engine (ENGINES), all compiled from BPF_CHAIN_SOURCE once."""
    obj = compile_chain()
    return {f"BPF chain, {label}": (lambda options=options: bench_bpf_chain_engine(obj, n, **options))
            for label, options in ENGINES.items()}


def chain_table(exe: str, n: int, sides: dict[str, Callable[[], tuple[float, float]]],
                rounds: int, depth: int = 1) -> dict[str, list[float]]:
    """Interleave the C chain at `depth` with `sides` (each returning (ops/s, enters/op)), all
    running n NOPs, and print each side's median ops/s, its ratio to C's median over the same
    rounds and the per-round spread.  Returns the ops/s samples by side, "C liburing" included."""
    enters: dict[str, float] = {}

    def rate_of(name, fn):
        def side() -> float:
            ops, enters[name] = fn()
            return ops
        return side

    samples = interleave({C_LABEL: lambda: c_chain(exe, n, depth),
                          **{name: rate_of(name, fn) for name, fn in sides.items()}},
                         rounds, warmup=1)
    c_samples = samples[C_LABEL]
    c_enters = c_enters_per_op(exe, min(n, 20_000), depth)
    shape = "one at a time" if depth == 1 else f"{depth} in flight"
    print(f"NOP chain, {n} ops, {shape}: median of {rounds} interleaved rounds (thread CPU time); "
          "ratio = median / C's median, spread = min-max of the per-round ratios")
    print(f"  {'':29} {'ops/s':>12}   {'enter/op':>8}   {'ratio to C':>10}   {'spread':>11}")
    print(f"  {C_LABEL:29} {statistics.median(c_samples):12,.0f}   "
          f"{'n/a' if c_enters is None else f'{c_enters:.2f}':>8}")
    for name in sides:
        cmp = compare(samples[name], c_samples)
        print(f"  {name:29} {cmp.median:12,.0f}   {enters[name]:8.2f}   {cmp.ratio:10.3f}   "
              f"{cmp.spread(3):>11}")
    return samples


def build_c(tmp: str) -> str | None:
    if shutil.which("gcc") is None or not os.path.exists("/usr/include/liburing.h"):
        return None
    src, exe = os.path.join(tmp, "chain.c"), os.path.join(tmp, "chain")
    with open(src, "w") as f:
        f.write(C_CHAIN)
    subprocess.run(["gcc", "-O2", "-o", exe, src, "-luring"], check=True)
    return exe


def c_chain(exe: str, n: int, depth: int = 1) -> float:
    return float(subprocess.run([exe, str(n), str(depth)], check=True, capture_output=True,
                                text=True).stdout)


def c_enters_per_op(exe: str, n: int, depth: int = 1) -> float | None:
    if shutil.which("strace") is None:
        return None
    out = subprocess.run(["strace", "-f", "-c", "-e", "trace=io_uring_enter", exe, str(n), str(depth)],
                         capture_output=True, text=True).stderr
    m = re.search(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)(?:\s+\d+)?\s+io_uring_enter", out, re.M)
    return int(m.group(1)) / n if m else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000, help="NOPs per chain")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds per figure")
    ap.add_argument("--depths", default="8,32", help="NOPs in flight for the deeper chains")
    ap.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    ap.add_argument("--interval-ms", type=int, default=20, help="keep-alive interval")
    args = ap.parse_args()
    n = args.n
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_c(tmp)
        if exe is None:
            print("gcc and liburing-dev are needed for the baseline "
                  "(apt-get install -y gcc liburing-dev)", file=sys.stderr)
            return 2
        sides = {"Ring, Python loop": lambda: python_chain(n)}
        if importlib.util.find_spec("liburing") is not None:
            sides["liburing PyPI (ref.)"] = lambda: pypi_liburing_chain(n)
        sides["BPF chain, stand-in"] = lambda: bench_bpf_chain_standin(n)
        sides.update(engine_sides(n))
        chain_table(exe, n, sides, args.rounds)
        obj = compile_chain(DEPTH_CHAIN_SOURCE)
        for depth in (int(d) for d in args.depths.split(",") if d):
            print()
            chain_table(exe, n, {f"BPF chains, {NATIVE}": lambda depth=depth: bench_depth_chain(
                obj, n, depth, **ENGINES[NATIVE])}, args.rounds, depth)
    keepalive(args.connections, args.interval_ms, max(3, args.rounds // 2))
    return 0


def keepalive(connections: int, interval_ms: int, runs: int) -> None:
    """samples/udp_keepalive.py as a user runs it, `runs` fresh processes: application wakeups,
    program runs and process CPU time per 1000 keep-alives (a PING sent and its PONG absorbed),
    against what the application would pay doing them itself (a wakeup for each PING timer and
    each PONG).  Medians, with each figure's min-max over the runs."""
    sample = os.path.join(os.path.dirname(HERE), "samples", "udp_keepalive.py")
    per_1000: dict[str, list[float]] = {"wakeups": [], "program runs": [], "CPU ms": []}
    for _ in range(runs):
        cpu, stdout = child_cpu([sys.executable, sample, str(connections), str(interval_ms)])
        count = {key: int(re.search(rf"{key} (\d+)", stdout).group(1))
                 for key in ("PONGs absorbed", "application wakeups", "program runs")}
        per = 1000 / max(count["PONGs absorbed"], 1)
        per_1000["wakeups"].append(count["application wakeups"] * per)
        per_1000["program runs"].append(count["program runs"] * per)
        per_1000["CPU ms"].append(cpu * per * 1e3)
    print(f"\nkeep-alive offload, {connections} connections every {interval_ms} ms, {runs} fresh "
          f"processes (median, min-max; CPU includes start-up and compile)")
    wakeups = statistics.median(per_1000["wakeups"])
    print(f"  per 1000 keep-alives: application wakeups {wakeups:.1f} "
          f"({spread(per_1000['wakeups'], digits=1)}; doing it itself: 2000, ratio "
          f"{wakeups / 2000:.4f}), program runs {statistics.median(per_1000['program runs']):.1f} "
          f"({spread(per_1000['program runs'], digits=1)}), CPU "
          f"{statistics.median(per_1000['CPU ms']):.0f} ms ({spread(per_1000['CPU ms'], digits=0)})")


if __name__ == "__main__":
    sys.exit(main())
