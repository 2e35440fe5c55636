"""Engine benchmark: the JIT (checked and unchecked) against the interpreter.

Prints, as ratios against the interpreter measured in the same run (medians of --repeat runs,
in this thread's CPU time):
- instructions/s on loops whose inputs (trip count, seeds, factors) are read from memory at run
  time, so LLVM cannot fold them to a closed form (NOTES: it will if it can see them):
    mul/add      three interleaved multiply-add recurrences (a = a*k + i, b = b*k + c,
                 c = c*m + a): no closed form exists, so every multiply runs
    mul/add lcg  one multiply-add chain (x = x * a + c; latency-bound: ~4 cycles per iteration
                 whatever the engine, so it shows the ceiling of a dependent chain)
    memory       an indexed load, a multiply-add and a store back to a 512-byte region per
                 iteration (the checked JIT looks each address up in the region table)
  (target: JIT >= 5 G insn/s on mul/add);
- the fixed cost of one run of a tiny program on a field-exact io_uring ctx;
- compile time per program: every program of the conformance suite, this benchmark's loops and
  a program this project compiles, each compiled anew, against the interpreter's construction
  time for the same program (target: <= 20 ms).  That is the time before the first run: a
  program with large IR starts at codegen tier 0 and is recompiled at tier 1 once hot (jit.py,
  TIER_LINES); the bench prints what that later recompile costs;
- the NOP chain of bench/ring.py (a BPF request that queues a NOP, parks on its CQE and goes
  again) on each engine: the interpreter, the JIT with the rounds driven by the Python ring, and
  the JIT with native waits (engine/native_ring.py), as ratios against the interpreter and a C
  liburing loop run in the same invocation (target: native waits >= 0.5x C).

Run: python3 bench/engine.py [--repeat N]   (2 shared cores here: compare medians, not maxima)
"""
from __future__ import annotations

import argparse
import statistics
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE))

from pybpf_uring.conformance import assemble, default_helpers, read_case  # noqa: E402
from pybpf_uring.engine import Interpreter, Memory  # noqa: E402
from pybpf_uring.engine.jit import Jit, jit_available  # noqa: E402

SUITE = HERE.parent.parent / "shared" / "conformance" / "tests"

# This thread's CPU time: the engines run (and compile) on the calling thread, and on two cores
# shared with other work, wall time mostly measures the neighbours.  (Cache and frequency effects
# of a busy machine remain: compare medians, and ratios taken in the same run.)
CLOCK = time.thread_time

# r1 = the input block: [0] trip count, [8] a seed, [16] a factor, [24] another seed.
LOOPS = {
    "mul/add": [
        "ldxdw %r2, [%r1+0]", "ldxdw %r3, [%r1+8]", "ldxdw %r4, [%r1+16]", "ldxdw %r5, [%r1+24]",
        "mov %r7, %r3", "mov %r8, %r4", "xor %r8, 0x55", "mov %r6, 0",
        "loop:",
        "mul %r3, %r4", "add %r3, %r6",                      # a = a * k + i
        "mul %r5, %r4", "add %r5, %r7",                      # b = b * k + c
        "mul %r7, %r8", "add %r7, %r3",                      # c = c * m + a
        "add %r6, 1", "jlt %r6, %r2, loop",
        "mov %r0, %r3", "xor %r0, %r5", "xor %r0, %r7", "exit",
    ],
    "mul/add lcg": [
        "ldxdw %r2, [%r1+0]", "ldxdw %r3, [%r1+8]", "ldxdw %r4, [%r1+16]", "mov %r0, 0",
        "mov %r6, 0",
        "loop:",
        "mul %r3, %r4", "add %r3, 12345", "xor %r0, %r3",
        "add %r6, 1", "jlt %r6, %r2, loop",
        "exit",
    ],
    "memory": [
        "ldxdw %r2, [%r1+0]", "ldxdw %r4, [%r1+16]", "mov %r0, 0", "mov %r6, 0",
        "mov %r7, %r1", "add %r7, 32",
        "loop:",
        "mov %r3, %r6", "and %r3, 63", "lsh %r3, 3", "add %r3, %r7",
        "ldxdw %r5, [%r3+0]", "mul %r5, %r4", "add %r0, %r5", "stxdw [%r3+0], %r0",
        "add %r6, 1", "jlt %r6, %r2, loop",
        "exit",
    ],
}


def program(name: str) -> bytes:
    return assemble(enumerate(LOOPS[name], start=1))[0]


def inputs(count: int) -> bytearray:
    block = bytearray(32 + 64 * 8)
    struct.pack_into("<QQQQ", block, 0, count, 0x9E3779B97F4A7C15, 6364136223846793005, 7)
    return block


def rate(engine_class, name: str, count: int, repeat: int, **kw) -> tuple[float, int]:
    """Median instructions/s over `repeat` runs, and r0 (so the engines can be compared)."""
    memory = Memory()
    region = memory.map(inputs(count), "in")
    engine = engine_class(program(name), memory=memory, budget=1 << 62, **kw)
    rates, r0 = [], None
    for _ in range(repeat):
        region.buf[:] = inputs(count)
        start = CLOCK()
        r0 = engine.run(region.base)
        rates.append(engine.executed / (CLOCK() - start))
    return statistics.median(rates), r0


def compile_times(repeat: int) -> list[tuple[str, float, float]]:
    """(program, median JIT compile seconds, median interpreter construction seconds)."""
    programs = [(f"loop {name}", program(name)) for name in LOOPS]
    programs += [(f"compiled {name}", insns) for name, insns in compiled_programs()]
    if SUITE.is_dir():
        for path in sorted(SUITE.glob("*.data")):
            case = read_case(path)
            if not case.needs_callx:
                programs.append((path.stem, case.program))
    helpers = default_helpers()        # the suite's call_unwind cases call helper 5
    out = []
    for name, code in programs:
        jits, jit = [], []
        for _ in range(repeat):
            start = CLOCK()
            jits.append(Jit(code, helpers=helpers, cache=False))
            jit.append(CLOCK() - start)
        if jits[0].tier == 0:                 # what tiering up costs later, once hot
            name += f" (tier 0; tier 1 {tier_up_seconds(jits[0]) * 1e3:.0f} ms when hot)"
        interp = []
        for _ in range(repeat):
            start = CLOCK()
            Interpreter(code, helpers=helpers)
            interp.append(CLOCK() - start)
        out.append((name, statistics.median(jit), statistics.median(interp)))
    return out


def run_cost(engine_class, runs: int = 20_000) -> float:
    """Seconds per run of a tiny program on the RFC's ctx: the fixed cost of a run."""
    memory = Memory()
    ctx = memory.map(bytearray(16), "ctx", fields=[(0, 8), (8, 4), (12, 4)])
    code = assemble(enumerate(["ldxdw %r0, [%r1+0]", "ldxw %r2, [%r1+8]", "add %r0, %r2",
                               "stxw [%r1+12], %r2", "exit"], start=1))[0]
    engine = engine_class(code, memory=memory)
    costs = []
    for _ in range(5):
        start = CLOCK()
        for _ in range(runs // 5):
            engine.run(ctx.base)
        costs.append((CLOCK() - start) / (runs // 5))
    return statistics.median(costs)


def tier_up_seconds(jit: Jit) -> float:
    start = CLOCK()
    jit._entry, jit.tier = jit._compile(1), 1
    return CLOCK() - start


def compiled_programs():
    """A program this project compiles (loops, a subprogram, signed division) at cpu v4."""
    try:
        from pybpf_uring import compile_source
        sys.path.insert(0, str(HERE.parent / "tests"))
        from test_jit import COMPILED
        obj = compile_source(COMPILED, "<bpf module>", "v4")
    except Exception as exc:              # noqa: BLE001 -- the bench runs without it
        print(f"(no compiled program: {type(exc).__name__}: {exc})")
        return []
    return [(p.name, p.linked().instructions) for p in obj.programs]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--jit-iterations", type=int, default=20_000_000)
    ap.add_argument("--interp-iterations", type=int, default=100_000)
    ap.add_argument("--chain", type=int, default=100_000, help="NOPs in the BPF NOP chain")
    args = ap.parse_args()
    reason = jit_available()
    if reason is not None:
        print(f"the JIT cannot run here: {reason}", file=sys.stderr)
        return 2
    print(f"instructions/s (median of {args.repeat}, thread CPU time), ratio against the "
          "interpreter")
    print(f"{'loop':14} {'interpreter':>14} {'JIT checked':>22} {'JIT unchecked':>22}")
    for name in LOOPS:
        base, r_base = rate(Interpreter, name, args.interp_iterations, max(3, args.repeat // 2))
        checked, _ = rate(Jit, name, args.jit_iterations, args.repeat)
        unchecked, _ = rate(Jit, name, args.jit_iterations, args.repeat, unchecked=True)
        # the same answer as the interpreter, at the interpreter's trip count
        _, r_jit = rate(Jit, name, args.interp_iterations, 1)
        assert r_jit == r_base, (name, r_jit, r_base)
        print(f"{name:14} {base / 1e6:10.1f} M/s {checked / 1e9:8.2f} G/s ({checked / base:5.0f}x)"
              f" {unchecked / 1e9:8.2f} G/s ({unchecked / base:5.0f}x)")
    per_run = {cls.__name__: run_cost(cls) for cls in (Interpreter, Jit)}
    print(f"\na run of a 5-instruction io_uring-style program (field-exact 16-byte ctx): "
          f"interpreter {per_run['Interpreter'] * 1e6:.2f} us, JIT {per_run['Jit'] * 1e6:.2f} us "
          f"({per_run['Interpreter'] / per_run['Jit']:.1f}x)")
    times = compile_times(max(3, args.repeat // 2))
    jit_ms = [t[1] * 1e3 for t in times]
    ratio = [t[1] / t[2] for t in times]
    print(f"\ncompile time per program, {len(times)} programs (Jit construction: validate, lift, "
          "optimise, codegen; each compiled anew; median of runs; thread CPU time)")
    print(f"  JIT: median {statistics.median(jit_ms):.1f} ms, max {max(jit_ms):.1f} ms "
          f"({max(times, key=lambda t: t[1])[0]}); interpreter construction: median "
          f"{statistics.median(t[2] for t in times) * 1e3:.2f} ms; "
          f"JIT / interpreter median {statistics.median(ratio):.1f}x")
    for name, jit_s, interp_s in times[:len(LOOPS) + 1]:
        print(f"  {name:22} JIT {jit_s * 1e3:6.1f} ms  interpreter {interp_s * 1e3:6.2f} ms "
              f"({jit_s / interp_s:5.1f}x)")
    nop_chain(args.chain, max(3, args.repeat // 2))
    return 0


def nop_chain(n: int, repeat: int) -> None:
    """bench/ring.py's BPF NOP chain per engine, against the interpreter and C liburing."""
    import tempfile
    import ring as ring_bench          # bench/ring.py
    with tempfile.TemporaryDirectory() as tmp:
        exe = ring_bench.build_c(tmp)
        c_ops = statistics.median(ring_bench.c_chain(exe, n) for _ in range(repeat)) if exe else None
    print(f"\nBPF NOP chain (bench/ring.py), one NOP at a time, best of {repeat} (wall time)")
    if c_ops is None:
        print("  (no C baseline: gcc and liburing-dev are needed)")
    else:
        print(f"  {'C liburing':20} {c_ops:12,.0f} ops/s")
    base = None
    for label, options in ring_bench.ENGINES.items():
        count = n if options.get("backend") != "interpreter" else max(1000, n // 20)
        ops = max(ring_bench.bench_bpf_chain_engine(count, **options)[0] for _ in range(repeat))
        base = base or ops
        versus_c = f", {ops / c_ops:.3f}x C" if c_ops else ""
        print(f"  {label:20} {ops:12,.0f} ops/s  ({ops / base:6.1f}x the interpreter{versus_c})")


if __name__ == "__main__":
    sys.exit(main())
