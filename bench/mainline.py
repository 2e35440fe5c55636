"""Mainline loop benchmark: NOPs driven by a loop_step program (io_uring_bpf_ops, Linux 7.1+)
against plain userspace loops on the same ring type.

All three run N NOPs, at most B in flight, on a ring created with SINGLE_ISSUER | DEFER_TASKRUN
| NO_SQARRAY | SQ_REWIND | CQSIZE (`pybpf_uring.mainline.LoopRing`; the C loop makes the same
io_uring_setup call), each round writing B NOP SQEs at slots 0..B, submitting them, waiting for
their B CQEs and advancing the CQ head:

- `bpf loop`: tests/data/mainline_nops.c (liburing's nops.bpf.c shape) attached to the ring;
  one io_uring_enter(GETEVENTS) runs every round inside the kernel;
- `C userspace`: the same rounds from C with raw syscalls (one io_uring_enter per round; no
  liburing, whose Debian version predates NO_SQARRAY);
- `Python userspace`: the same rounds through `LoopRing.prep_nop/submit/reap`;
- `bpf loop (Python)`: samples/mainline_nops.py compiled by pybpf_uring (BATCH = 8, so only in
  the 8-in-flight table), when it compiles and the kernel accepts it; otherwise the reason.

The loops take turns in rounds (bench/measure.py says why).  Printed per loop: the median NOPs/s,
io_uring_enter calls and loop steps per 1000 NOPs, and the median's ratio to the C loop's median
over the same rounds with the min-max of the per-round ratios.  A kernel without
io_uring_bpf_ops (6.18 here) makes the script boot Debian's 7.2 kernel with the project's
tools/vm/vmrun (TCG: software emulation) and run itself there with --here; compare ratios, not
absolute rates, which TCG slows down by 10-50x unevenly (guest user code and guest kernel code
are both emulated, system call entry more so).  Times are wall time: a guest's CPU clocks keep
running while the host deschedules its vCPU threads, so CPU time would be no steadier there.

Run: python3 bench/mainline.py [-n N] [--batch B[,B...]] [--rounds R] [--here]
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(1, HERE)

from measure import compare, interleave  # noqa: E402  (bench/measure.py)
from pybpf_uring import mainline  # noqa: E402
from pybpf_uring.diagnostics import CompileError  # noqa: E402

VMRUN = os.path.join(ROOT, "tools", "vm", "vmrun")
NOPS_C = os.path.join(ROOT, "tests", "data", "mainline_nops.c")
NOPS_PY = os.path.join(ROOT, "samples", "mainline_nops.py")
PY_BATCH, PY_CQ = 8, 64     # the sample's BATCH and CQ_SLOTS

C_LOOP = r"""
/* N NOPs in rounds of B on a ring set up like pybpf_uring.mainline.LoopRing; prints
 * "<ns> <io_uring_enter calls>".  Raw syscalls: bookworm's liburing predates NO_SQARRAY. */
#include <linux/io_uring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SETUP_SINGLE_ISSUER (1U << 12)
#define SETUP_DEFER_TASKRUN (1U << 13)
#define SETUP_NO_SQARRAY (1U << 16)
#define SETUP_SQ_REWIND (1U << 20)

int main(int argc, char **argv)
{
	long n = atol(argv[1]), b = atol(argv[2]), enters = 0, done = 0;
	unsigned flags = SETUP_SINGLE_ISSUER | SETUP_DEFER_TASKRUN | SETUP_NO_SQARRAY |
			 SETUP_SQ_REWIND | IORING_SETUP_CQSIZE;
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	p.flags = flags;
	unsigned sq = b < 8 ? 8 : b;
	p.cq_entries = 2 * sq;
	int fd = syscall(__NR_io_uring_setup, sq, &p);
	if (fd < 0) { perror("io_uring_setup"); return 2; }
	size_t rings_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	char *rings = mmap(0, rings_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
	struct io_uring_sqe *sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe),
					 PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
	if (rings == MAP_FAILED || sqes == MAP_FAILED) { perror("mmap"); return 2; }
	unsigned *head = (unsigned *)(rings + p.cq_off.head), *tail = (unsigned *)(rings + p.cq_off.tail);
	struct io_uring_cqe *cqes = (struct io_uring_cqe *)(rings + p.cq_off.cqes);
	unsigned mask = p.cq_entries - 1;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (done < n) {
		long k = n - done < b ? n - done : b;
		for (long i = 0; i < k; i++) {
			memset(&sqes[i], 0, sizeof(sqes[i]));
			sqes[i].opcode = IORING_OP_NOP;
			sqes[i].user_data = done + i;
		}
		enters++;
		if (syscall(__NR_io_uring_enter, fd, k, k, IORING_ENTER_GETEVENTS, NULL, 0) != k) {
			perror("io_uring_enter"); return 3;
		}
		unsigned h = *head, t = __atomic_load_n(tail, __ATOMIC_ACQUIRE);
		for (; h != t; h++) {
			if (cqes[h & mask].res != 0 || cqes[h & mask].user_data != (unsigned long)done) return 4;
			done++;
		}
		__atomic_store_n(head, h, __ATOMIC_RELEASE);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%ld %ld\n", (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec), enters);
	return 0;
}
"""


def build_python(workdir: str) -> str:
    """samples/mainline_nops.py compiled, or why not (the compiler's side is still growing)."""
    try:
        from pybpf_uring import compile_file
        path = os.path.join(workdir, "python_mainline_nops.o")
        compile_file(NOPS_PY).write(path)
        return path
    except Exception as exc:   # noqa: BLE001 - the table shows the reason instead of a row
        return f"not compiled: {type(exc).__name__}: {str(exc).splitlines()[0]}"


def build(workdir: str) -> tuple[str, str | None]:
    """The nops object (clang-22) and the C loop (cc, if there is one), built into `workdir`."""
    obj = os.path.join(workdir, "mainline_nops.o")
    subprocess.run(["clang-22", "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-c", NOPS_C, "-o", obj],
                   check=True)
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return obj, None
    src, exe = os.path.join(workdir, "loop.c"), os.path.join(workdir, "c_loop")
    with open(src, "w") as f:
        f.write(C_LOOP)
    subprocess.run([cc, "-O2", "-o", exe, src], check=True)
    return obj, exe


def ring_for(batch: int) -> mainline.LoopRing:
    sq = max(8, batch)      # the kernel wants cq_entries >= sq_entries
    return mainline.LoopRing(sq, 2 * sq)


def bench_bpf(obj: str, n: int, batch: int) -> dict:
    with ring_for(batch) as ring, ring.attach(obj, globals={"nops_wanted": n, "batch": batch}) as att:
        start = time.perf_counter_ns()
        ring.run()
        ns = time.perf_counter_ns() - start
        g = att.globals
        if (g["nops_done"], g["bad_cqes"], g["submit_error"]) != (n, 0, 0):
            raise RuntimeError(f"the loop did not complete its NOPs: {g!r}")
        return {"ns": ns, "enters": ring.enter_calls, "steps": g["steps"]}


def bench_python_program(obj: str, n: int) -> dict:
    with mainline.LoopRing(PY_BATCH, PY_CQ) as ring, ring.attach(obj, globals={"target": n}) as att:
        start = time.perf_counter_ns()
        ring.run()
        ns = time.perf_counter_ns() - start
        if att.globals["completed"] != n:
            raise RuntimeError(f"the Python loop did not complete its NOPs: {att.globals!r}")
        return {"ns": ns, "enters": ring.enter_calls, "steps": 0}


def bench_python(n: int, batch: int) -> dict:
    with ring_for(batch) as ring:
        done = 0
        start = time.perf_counter_ns()
        while done < n:
            k = min(batch, n - done)
            for i in range(k):
                ring.prep_nop(i, done + i)
            ring.submit(k, wait=k)
            done += len(ring.reap())
        ns = time.perf_counter_ns() - start
        return {"ns": ns, "enters": ring.enter_calls, "steps": 0}


def bench_c(exe: str, n: int, batch: int) -> dict:
    out = subprocess.run([exe, str(n), str(batch)], check=True, capture_output=True, text=True).stdout
    ns, enters = map(int, out.split())
    return {"ns": ns, "enters": enters, "steps": 0}


def report(sides: dict, n: int, batch: int, rounds: int) -> str:
    """Measure `sides` (name -> a run returning {"ns", "enters", "steps"}) in interleaved rounds
    and format the table: NOPs/s medians against the C loop's (or, without a C compiler, the
    Python loop's) in the same rounds."""
    last: dict[str, dict] = {}

    def rate(name, fn):
        def side() -> float:
            last[name] = fn()
            return n / (last[name]["ns"] / 1e9)
        return side

    samples = interleave({name: rate(name, fn) for name, fn in sides.items()}, rounds, warmup=1)
    base_name = "C userspace" if "C userspace" in sides else "Python userspace"
    lines = [f"{n} NOPs, {batch} in flight, median of {rounds} interleaved rounds, wall time "
             f"(kernel {os.uname().release})",
             f"{'loop':<18}{'NOPs/s':>12}{'enter/1000':>12}{'steps/1000':>12}"
             f"{'vs ' + base_name:>22}{'spread':>13}"]
    for name in sides:
        c = compare(samples[name], samples[base_name])
        steps = f"{1000 * last[name]['steps'] / n:.1f}" if last[name]["steps"] else "-"
        lines.append(f"{name:<18}{c.median:>12,.0f}{1000 * last[name]['enters'] / n:>12.2f}"
                     f"{steps:>12}{c.ratio:>21.2f}x{c.spread():>13}")
    if "bpf loop (Python)" in sides:      # the compiled sample against its C twin, same rounds
        c = compare(samples["bpf loop (Python)"], samples["bpf loop"])
        lines.append(f"bpf loop (Python) vs bpf loop (C): {c.ratio:.2f}x (spread {c.spread()})")
    return "\n".join(lines)


def run_here(args) -> int:
    support = mainline.probe()
    try:
        support.require()
    except CompileError as exc:
        print(exc, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        obj, exe = (args.object, args.c_loop) if args.object else build(tmp)
        py_obj = args.python_object or build_python(tmp)
        for batch in args.batch:
            sides = {"bpf loop": lambda: bench_bpf(obj, args.n, batch)}
            if exe:
                sides["C userspace"] = lambda: bench_c(exe, args.n, batch)
            sides["Python userspace"] = lambda: bench_python(args.n, batch)
            note = ""
            if batch == PY_BATCH:
                try:
                    if not os.path.exists(py_obj):
                        raise RuntimeError(py_obj)
                    bench_python_program(py_obj, args.n)        # runs at all, or the reason
                    sides["bpf loop (Python)"] = lambda: bench_python_program(py_obj, args.n)
                except (CompileError, RuntimeError, OSError) as exc:
                    note = f"bpf loop (Python): skipped, {str(exc).splitlines()[0]}"
            print(report(sides, args.n, batch, args.rounds) + (f"\n{note}" if note else ""),
                  end="\n\n", flush=True)
    return 0


def run_in_vm(args) -> int:
    """Build on the host (compilers under TCG are slow), then boot the 7.2 kernel once."""
    if not os.path.exists(VMRUN):
        print(f"this kernel lacks io_uring_bpf_ops and {VMRUN} is missing", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        obj, exe = build(tmp)
        py_obj = build_python(tmp)
        batches = ",".join(map(str, args.batch))
        command = (f"{sys.executable} bench/mainline.py --here -n {args.n} --batch {batches} "
                   f"--rounds {args.rounds} --object {obj} --python-object {shlex.quote(py_obj)}"
                   + (f" --c-loop {exe}" if exe else ""))
        return subprocess.run([VMRUN, command], cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=100_000, help="NOPs per run")
    ap.add_argument("--batch", default="1,8,32", type=lambda text: [int(b) for b in text.split(",")],
                    help="NOPs in flight, comma-separated for several runs (the program's max is 32)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per table")
    ap.add_argument("--here", action="store_true", help="run on this kernel, never boot the VM")
    ap.add_argument("--object", help=argparse.SUPPRESS)
    ap.add_argument("--c-loop", help=argparse.SUPPRESS)
    ap.add_argument("--python-object", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not all(1 <= b <= 32 for b in args.batch):
        ap.error("--batch must be 1..32 (MAX_BATCH of mainline_nops.c)")
    if args.here or mainline.probe().ok:
        return run_here(args)
    return run_in_vm(args)


if __name__ == "__main__":
    sys.exit(main())
