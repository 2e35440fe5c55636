"""Ring benchmark: a one-at-a-time chain of N NOPs through pybpf_uring's `Ring` against C liburing.

Each op submits one NOP and waits for its CQE before the next (the shape of a BPF request that
queues an SQE and parks on its CQ), so the figure is per-op overhead, not kernel throughput.
Printed, as ratios against a C loop on liburing (gcc + Debian's liburing-dev) run in the same
invocation:

- `Ring` driven by a Python loop (`ring.queue(sqe)` + `ring.wait_cqe()`): ops/s and
  io_uring_enter calls per op (the ring counts its own calls; the C side is counted with
  `strace -c` when strace is installed);
- for reference, the `liburing` PyPI package's Python binding, if it is installed (the ring
  layer was chosen against it: see the `pybpf_uring.ring` docstring);
- the BPF-driven chain: a program that queues the next NOP on CQ 1 and parks on it.  Measured with
  a Python stand-in program (the runtime's own overhead), and with the compiled program on each
  engine (ENGINES): the interpreter, the JIT with the rounds driven by the Python ring, and the
  JIT with native waits (engine/native_ring.py: the whole round in native code; target >= 0.5x C).

Run: python3 bench/ring.py [-n N] [--repeat R]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

C_CHAIN = r"""
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
    long n = atol(argv[1]);
    struct io_uring ring;
    struct io_uring_params p = { .flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN };
    if (io_uring_queue_init_params(64, &ring, &p) < 0) { perror("io_uring_queue_init"); return 2; }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_nop(sqe);
        sqe->user_data = i;
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        if (io_uring_peek_cqe(&ring, &cqe) || cqe->user_data != (unsigned long)i) return 3;
        io_uring_cqe_seen(&ring, cqe);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.1f\n", n / ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9));
    io_uring_queue_exit(&ring);
    return 0;
}
"""

# The BPF-driven chain as users would write it (SPEC.md): compiled and run by the engine once it
# lands.  N arrives in ctx.user_data; the count lives in a map between runs.
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


def python_chain(n: int) -> tuple[float, float]:
    """`Ring` from a Python loop: (ops/s, io_uring_enter calls per op)."""
    from pybpf_uring.ring import Ring
    from pybpf_uring.uring import prep_nop
    with Ring(entries=64) as ring:
        sqe = ring.sqe()
        prep_nop(sqe)
        queue, wait = ring.queue, ring.wait_cqe
        t0 = time.perf_counter()
        for i in range(n):
            sqe.user_data = i
            queue(sqe)
            if wait().user_data != i:
                raise AssertionError("CQE out of order")
        dt = time.perf_counter() - t0
        return n / dt, ring.enter_calls / n


def pypi_liburing_chain(n: int) -> float | None:
    """The `liburing` PyPI binding's ops/s, or None if it is not installed."""
    try:
        import liburing as L
    except ImportError:
        return None
    ring, cqe = L.Ring(), L.Cqe()
    L.io_uring_queue_init(64, ring, 0)
    try:
        t0 = time.perf_counter()
        for i in range(n):
            sqe = L.io_uring_get_sqe(ring)
            L.io_uring_prep_nop(sqe)
            sqe.user_data = i
            L.io_uring_submit_and_wait(ring, 1)
            L.io_uring_peek_cqe(ring, cqe)
            L.io_uring_cqe_seen(ring, cqe[0])
        return n / (time.perf_counter() - t0)
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
    from pybpf_uring.ring import Ring
    obj = SimpleNamespace(programs=[SimpleNamespace(kind="iouring", name="chain",
                                                    section="iouring.s/chain")], maps={})
    with Ring(entries=64, cq_sizes=(64,)) as ring:
        ring.register(obj, engine=engine)
        t0 = time.perf_counter()
        ring.submit_bpf("chain", user_data=n)
        ring.wait_cqe(0)
        dt = time.perf_counter() - t0
        return n / dt, ring.enter_calls / n


def bench_bpf_chain_standin(n: int) -> tuple[float, float]:
    return bpf_chain(n, lambda obj: SimpleNamespace(maps={}, runner=lambda p: _StandInChain()))


ENGINES = {
    # label: instantiate() options
    "interpreter": dict(backend="interpreter"),
    "JIT, Python ring": dict(backend="jit", native_waits=False),
    "JIT, native waits": dict(backend="jit"),
}


def bench_bpf_chain_engine(n: int, **options) -> tuple[float, float]:
    """The same chain with BPF_CHAIN_SOURCE compiled and run by the userspace engine;
    `options` go to `instantiate` (ENGINES)."""
    from pybpf_uring import compile_source
    from pybpf_uring.engine import instantiate
    from pybpf_uring.ring import Ring
    obj = compile_source(BPF_CHAIN_SOURCE)
    with Ring(entries=64, cq_sizes=(64,)) as ring:
        ring.register(obj, engine=lambda o: instantiate(o, **options))
        t0 = time.perf_counter()
        ring.submit_bpf("chain", user_data=n)
        if ring.wait_cqe(0).res != 0 or ring.maps["count"][0] != n:
            raise AssertionError("the chain did not run to its end")
        dt = time.perf_counter() - t0
        return n / dt, ring.enter_calls / n


def build_c(tmp: str) -> str | None:
    if shutil.which("gcc") is None or not os.path.exists("/usr/include/liburing.h"):
        return None
    src, exe = os.path.join(tmp, "chain.c"), os.path.join(tmp, "chain")
    with open(src, "w") as f:
        f.write(C_CHAIN)
    subprocess.run(["gcc", "-O2", "-o", exe, src, "-luring"], check=True)
    return exe


def c_chain(exe: str, n: int) -> float:
    return float(subprocess.run([exe, str(n)], check=True, capture_output=True, text=True).stdout)


def c_enters_per_op(exe: str, n: int) -> float | None:
    if shutil.which("strace") is None:
        return None
    out = subprocess.run(["strace", "-f", "-c", "-e", "trace=io_uring_enter", exe, str(n)],
                         capture_output=True, text=True).stderr
    m = re.search(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)(?:\s+\d+)?\s+io_uring_enter", out, re.M)
    return int(m.group(1)) / n if m else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000, help="NOPs per chain")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    ap.add_argument("--interval-ms", type=int, default=20, help="keep-alive interval")
    args = ap.parse_args()
    n, rep = args.n, args.repeat

    def best(fn):
        runs = [fn() for _ in range(rep)]
        return max(runs, key=lambda r: r[0] if isinstance(r, tuple) else r)

    tmp = tempfile.mkdtemp()
    exe = build_c(tmp)
    if exe is None:
        print("gcc and liburing-dev are needed for the baseline (apt-get install -y gcc liburing-dev)",
              file=sys.stderr)
        return 2
    c_ops = statistics.median(c_chain(exe, n) for _ in range(rep))
    c_enters = c_enters_per_op(exe, min(n, 20_000))
    py_ops, py_enters = best(lambda: python_chain(n))
    print(f"NOP chain, {n} ops, one at a time (best of {rep}; C: median)")
    print(f"  {'C liburing':29} {c_ops:12,.0f} ops/s   enter/op "
          f"{'n/a' if c_enters is None else f'{c_enters:.2f}'}")
    print(f"  {'Ring, Python loop':29} {py_ops:12,.0f} ops/s   enter/op {py_enters:.2f}"
          f"   ratio to C {py_ops / c_ops:.3f}")
    pypi = pypi_liburing_chain(n)
    if pypi is not None:
        print(f"  {'liburing PyPI (ref.)':29} {pypi:12,.0f} ops/s   enter/op 1.00   ratio to C {pypi / c_ops:.3f}")
    sb_ops, sb_enters = best(lambda: bench_bpf_chain_standin(n))
    print(f"  {'BPF chain, stand-in':29} {sb_ops:12,.0f} ops/s   enter/op {sb_enters:.2f}"
          f"   ratio to C {sb_ops / c_ops:.3f}")
    for label, options in ENGINES.items():
        # the interpreter's chain is ~100x slower: fewer NOPs, same per-op figure
        count = n if options.get("backend") != "interpreter" else max(1000, n // 20)
        ops, enters = best(lambda: bench_bpf_chain_engine(count, **options))
        print(f"  {'BPF chain, ' + label:29} {ops:12,.0f} ops/s   enter/op {enters:.2f}"
              f"   ratio to C {ops / c_ops:.3f}")
    shutil.rmtree(tmp, ignore_errors=True)
    keepalive(args.connections, args.interval_ms)
    return 0


def keepalive(connections: int, interval_ms: int) -> None:
    """samples/udp_keepalive.py as a user runs it: CPU time and application wakeups per 1000
    keep-alives (a PING sent and its PONG absorbed), against what the application would pay
    doing them itself (a wakeup for each PING timer and each PONG)."""
    import resource
    sample = os.path.join(os.path.dirname(HERE), "samples", "udp_keepalive.py")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, sample, str(connections), str(interval_ms)],
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    pongs = int(re.search(r"PONGs absorbed (\d+)", run.stdout).group(1))
    wakeups = int(re.search(r"application wakeups (\d+)", run.stdout).group(1))
    runs = int(re.search(r"program runs (\d+)", run.stdout).group(1))
    per = 1000 / max(pongs, 1)
    print(f"keep-alive offload, {connections} connections every {interval_ms} ms: {pongs} keep-alives "
          f"in {wall:.2f} s (process CPU {cpu:.2f} s, startup and compile included)")
    print(f"  per 1000 keep-alives: application wakeups {wakeups * per:.1f} (doing it itself: "
          f"{2000:.0f}, ratio {wakeups * per / 2000:.4f}), program runs {runs * per:.1f}, "
          f"CPU {cpu * per * 1e3:.0f} ms")


if __name__ == "__main__":
    sys.exit(main())
