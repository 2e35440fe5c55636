"""Engine benchmark: the JIT (checked and unchecked) against the interpreter.

Every figure is a median over rounds in which the sides being compared take turns
(bench/measure.py says why), printed with both medians, their ratio and the min-max of the
per-round ratios; in-process times are this thread's CPU time:
- instructions/s on loops whose inputs (trip count, seeds, factors) are read from memory at run
  time, so LLVM cannot fold them to a closed form (it will if it can see them):
    mul/add      three interleaved multiply-add recurrences (a = a*k + i, b = b*k + c,
                 c = c*m + a): no closed form exists, so every multiply runs
    mul/add lcg  one multiply-add chain (x = x * a + c; latency-bound: ~4 cycles per iteration
                 whatever the engine, so it shows the ceiling of a dependent chain)
    memory       an indexed load, a multiply-add and a store back to a 512-byte region per
                 iteration (the checked JIT checks each address against its anchor's region,
                 translated once on entry to the loop: engine/jit_loops.py)
  (target: JIT >= 5 G insn/s on mul/add);
- the fixed cost of one run of a tiny program on a field-exact io_uring ctx;
- registering an object (instantiating its io_uring program) on each backend, in fresh
  processes, and the native helper module a process compiles before its first native wait;
- compile time per program: this benchmark's loops, a program this project compiles and, when
  BPF_CONFORMANCE_TESTS names a directory of bpf_conformance `.data` cases, every program of
  that suite, each compiled anew, against the interpreter's construction time for the same
  program (target: a median <= 2 ms over the suite's programs).  That is the time before the
  first run: a program that computes once over its input, or has large IR, starts at codegen
  tier 0 and is recompiled at tier 1 once hot (jit.py, TIER_LINES); the bench prints how many
  compiled at each tier and what a later recompile costs;
- the NOP chain of bench/ring.py (a BPF request that queues a NOP, parks on its CQE and goes
  again) on each engine: the interpreter, the JIT with the rounds driven by the Python ring, and
  the JIT with native waits (engine/native_ring.py), against a C liburing loop and the
  interpreter in the same rounds (target: native waits >= 0.5x C).

With `--ubpf PATH` the loops and the compile times get a uBPF column: uBPF's JIT (iovisor/ubpf)
run and compiled in the same rounds, and the JIT's figures as ratios against it (targets: the
loops >= 1.0x uBPF's JIT with checks on; its compile is the anchor of the JIT's).  PATH is a shared library of uBPF's C API, called
through ctypes (ubpf_create, ubpf_load, ubpf_compile, the compiled function, ubpf_destroy):
uBPF's own build needs its git submodules, so build the library from its vm/ sources alone,
outside this repository:

    git clone https://github.com/iovisor/ubpf /tmp/ubpf && mkdir /tmp/ubpf/out && cd /tmp/ubpf/out
    printf '#pragma once\n#define UBPF_HAS_ELF_H\n' > ubpf_config.h
    for f in ../vm/*.c; do [ $f = ../vm/test.c ] || gcc -O2 -fPIC -I. -I../vm -I../vm/inc -c $f; done
    gcc -shared -o libubpf.so *.o -lm

uBPF's JIT checks no bounds and counts no instructions; its rate is the JIT's instruction count
for the same run over uBPF's time, and both must return the same r0.  Its compile time is
ubpf_create + ubpf_load (its validation) + ubpf_compile + ubpf_destroy, five ctypes calls
(~1 us each).

Run: [BPF_CONFORMANCE_TESTS=DIR] python3 bench/engine.py [--rounds N] [--ubpf PATH]
     [--only loops|run|register|compile|chain ...]
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import statistics
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE))

from measure import CPU_CLOCK, compare, interleave, spread  # noqa: E402  (bench/measure.py)
from pybpf_uring.conformance import (  # noqa: E402
    CASES_MISSING, assemble, cases_dir, default_helpers, read_case)
from pybpf_uring.bpf import isa  # noqa: E402
from pybpf_uring.runtime.engine import Interpreter, Memory  # noqa: E402
from pybpf_uring.runtime.engine.jit import Jit, jit_available  # noqa: E402

CLOCK = CPU_CLOCK    # in-process: engines run and compile on the calling thread

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


class LoopRun:
    """One engine set up on a LOOPS program; each call runs the loop once from fresh inputs and
    returns instructions/s."""

    def __init__(self, engine_class, name: str, count: int, **kw) -> None:
        self.memory = Memory()
        self.count = count
        self.region = self.memory.map(inputs(count), "in")
        self.engine = engine_class(program(name), memory=self.memory, budget=1 << 62, **kw)
        self.r0 = None

    def __call__(self) -> float:
        self.region.buf[:] = inputs(self.count)
        start = CLOCK()
        self.r0 = self.engine.run(self.region.base)
        return self.engine.executed / (CLOCK() - start)


class Ubpf:
    """uBPF's JIT through its C API (see the module docstring for the library)."""

    _FN = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t)
    _HELPER = ctypes.CFUNCTYPE(ctypes.c_uint64, *[ctypes.c_uint64] * 5)

    def __init__(self, path: str) -> None:
        lib = self.lib = ctypes.CDLL(path)
        vp, err = ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)
        lib.ubpf_create.restype = vp
        lib.ubpf_destroy.argtypes = [vp]
        lib.ubpf_load.argtypes = [vp, ctypes.c_char_p, ctypes.c_uint32, err]
        lib.ubpf_compile.argtypes = [vp, err]
        lib.ubpf_compile.restype = vp
        lib.ubpf_register.argtypes = [vp, ctypes.c_uint, ctypes.c_char_p, self._HELPER]
        # the conformance suite's helper 5 (its call_unwind cases): uBPF must know the id
        self._unwind = self._HELPER(lambda *args: args[0])

    def compile(self, code: bytes) -> tuple[int, Callable]:
        """(the VM, its compiled function); RuntimeError with uBPF's message if it refuses."""
        lib, err = self.lib, ctypes.c_char_p()
        code = bytes(code)
        vm = lib.ubpf_create()
        lib.ubpf_register(vm, 5, b"unwind", self._unwind)
        if lib.ubpf_load(vm, code, len(code), ctypes.byref(err)) != 0:
            lib.ubpf_destroy(vm)
            raise RuntimeError(f"ubpf_load: {err.value.decode(errors='replace')}")
        address = lib.ubpf_compile(vm, ctypes.byref(err))
        if not address:
            lib.ubpf_destroy(vm)
            raise RuntimeError(f"ubpf_compile: {err.value.decode(errors='replace')}")
        return vm, self._FN(address)

    def compile_seconds(self, code: bytes) -> float:
        start = CLOCK()
        vm, _ = self.compile(code)
        self.lib.ubpf_destroy(vm)
        return CLOCK() - start


class UbpfLoopRun:
    """A LOOPS program on uBPF's JIT; each call runs it once from fresh inputs and returns
    instructions/s, counting the instructions the JIT's run of the same loop executed."""

    def __init__(self, ubpf: Ubpf, name: str, count: int, executed: int) -> None:
        self.vm, self.fn = ubpf.compile(program(name))
        self.count, self.executed = count, executed
        self.block = inputs(count)
        self.native = (ctypes.c_char * len(self.block)).from_buffer(self.block)
        self.r0 = None

    def __call__(self) -> float:
        self.block[:] = inputs(self.count)
        start = CLOCK()
        self.r0 = self.fn(ctypes.addressof(self.native), len(self.block))
        return self.executed / (CLOCK() - start)


def loop_rates(rounds: int, jit_iterations: int, interp_iterations: int,
               ubpf: Ubpf | None = None) -> None:
    """Per loop: the interpreter and both JITs (and uBPF's JIT) in the same rounds; ratios
    against the interpreter, and against uBPF.  (The trip counts differ -- the interpreter would
    take minutes on the JIT's -- so the rates are per instruction, and a JIT run at the
    interpreter's count must agree on r0.)"""
    print(f"instructions/s, median of {rounds} interleaved rounds (thread CPU time); ratio = "
          "median / the interpreter's median, spread = min-max of the per-round ratios")
    print(f"{'loop':14} {'interpreter':>13} {'JIT checked':>11} {'ratio':>6} {'spread':>9}"
          f" {'JIT unchecked':>13} {'ratio':>6} {'spread':>9}")
    against = []
    for name in LOOPS:
        sides = {"interpreter": LoopRun(Interpreter, name, interp_iterations),
                 "checked": LoopRun(Jit, name, jit_iterations),
                 "unchecked": LoopRun(Jit, name, jit_iterations, unchecked=True)}
        if ubpf is not None:
            sides["checked"]()               # its instruction count is uBPF's too
            sides["uBPF"] = UbpfLoopRun(ubpf, name, jit_iterations,
                                        sides["checked"].engine.executed)
        samples = interleave(sides, rounds)
        check = LoopRun(Jit, name, interp_iterations)      # the same answer as the interpreter
        check()
        assert check.r0 == sides["interpreter"].r0, (name, check.r0, sides["interpreter"].r0)
        checked = compare(samples["checked"], samples["interpreter"])
        unchecked = compare(samples["unchecked"], samples["interpreter"])
        print(f"{name:14} {checked.base_median / 1e6:9.1f} M/s {checked.median / 1e9:7.2f} G/s "
              f"{checked.ratio:5.0f}x {checked.spread(0):>9} {unchecked.median / 1e9:9.2f} G/s "
              f"{unchecked.ratio:5.0f}x {unchecked.spread(0):>9}")
        if ubpf is not None:
            assert sides["uBPF"].r0 == sides["checked"].r0, (name, sides["uBPF"].r0)
            against.append((name, compare(samples["checked"], samples["uBPF"]),
                            compare(samples["unchecked"], samples["uBPF"])))
    if against:
        print("\nagainst uBPF's JIT (no bounds checks), the same rounds: ratio = JIT median / "
              "uBPF median")
        print(f"{'loop':14} {'uBPF':>10} {'JIT checked':>11} {'spread':>9} {'JIT unchecked':>13}"
              f" {'spread':>9}")
        for name, checked, unchecked in against:
            print(f"{name:14} {checked.base_median / 1e9:6.2f} G/s {checked.ratio:10.2f}x "
                  f"{checked.spread():>9} {unchecked.ratio:12.2f}x {unchecked.spread():>9}")


def run_cost(rounds: int, runs: int = 4000) -> None:
    """Seconds per run of a tiny program on the RFC's ctx (the fixed cost of a run), each
    round's sample the mean over `runs` runs."""
    code = assemble(enumerate(["ldxdw %r0, [%r1+0]", "ldxw %r2, [%r1+8]", "add %r0, %r2",
                               "stxw [%r1+12], %r2", "exit"], start=1))[0]

    def side(engine_class):
        memory = Memory()
        ctx = memory.map(bytearray(16), "ctx", fields=[(0, 8), (8, 4), (12, 4)])
        engine = engine_class(code, memory=memory)

        def sample() -> float:
            start = CLOCK()
            for _ in range(runs):
                engine.run(ctx.base)
            return (CLOCK() - start) / runs
        return sample

    samples = interleave({"interpreter": side(Interpreter), "JIT": side(Jit)}, rounds, warmup=1)
    cost = compare(samples["interpreter"], samples["JIT"])
    print(f"\na run of a 5-instruction io_uring-style program (field-exact 16-byte ctx), median of "
          f"{rounds} rounds: interpreter {cost.median * 1e6:.2f} us, JIT {cost.base_median * 1e6:.2f} us; "
          f"the JIT {cost.ratio:.1f}x as fast (spread {cost.spread(1)})")


# run_from_python's program: the run_cost program's work, written as users write it
RUN_SOURCE = """
from pybpf_uring import iouring, i32
from pybpf_uring.uring import IoUringCtx

@iouring
def short(ctx: IoUringCtx) -> i32:
    ctx.wait_idx = ctx.wait_nr
    return ctx.user_data + ctx.wait_nr
"""


def run_from_python(rounds: int, runs: int = 20000) -> None:
    """A run as tests and users make it -- `runner.run(ctx)` on an engine instance's program,
    (r0, ctx after the run) back -- against an anchor in the same rounds: a ctypes call of a C
    function that does nothing (labs(0)).  Seconds per run, each round's sample the mean over
    `runs` calls."""
    import ctypes
    from pybpf_uring import compile_source
    from pybpf_uring.runtime.engine import instantiate
    runner = instantiate(compile_source(RUN_SOURCE), backend="jit").runner("short")
    ctx = struct.pack("<QII", 40, 2, 0)
    if runner.run(ctx) != (42, struct.pack("<QII", 40, 2, 2)):
        raise AssertionError("the run's result is not the program's")
    noop = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long)(
        ctypes.cast(ctypes.CDLL(None).labs, ctypes.c_void_p).value)

    def timed(call) -> Callable[[], float]:
        def sample() -> float:
            start = CLOCK()
            for _ in range(runs):
                call()
            return (CLOCK() - start) / runs
        return sample

    run = runner.run
    samples = interleave({"run": timed(lambda: run(ctx)), "anchor": timed(lambda: noop(0))},
                         rounds, warmup=1)
    cost = compare(samples["run"], samples["anchor"])
    print(f"a run from Python (runner.run(ctx) -> (r0, ctx), the same program as users write it), "
          f"median of {rounds} rounds: {cost.median * 1e6:.2f} us = {cost.ratio:.2f}x a ctypes "
          f"call of a no-op C function ({cost.base_median * 1e6:.2f} us; spread {cost.spread(2)})")


def register_child(backend: str) -> None:
    """In a fresh process (register_cost runs this): print the ms `instantiate` takes for
    bench/ring.py's chain object on `backend`, and then the ms of compiling the native helper
    module, which the first native wait of a process pays."""
    import ring as ring_bench          # bench/ring.py
    from pybpf_uring import compile_source
    from pybpf_uring.runtime.engine import instantiate
    from pybpf_uring.runtime.engine.native_ring import native_helpers
    obj = compile_source(ring_bench.BPF_CHAIN_SOURCE)
    start = CLOCK()
    instantiate(obj, backend=backend)
    made = CLOCK()
    native_helpers()
    print((made - start) * 1e3, (CLOCK() - made) * 1e3)


def register_cost(rounds: int) -> None:
    """What registering an object costs each backend: fresh processes taking turns, since the
    JIT's code cache would make every registration after a process's first nearly free."""
    native: list[float] = []

    def side(backend: str):
        def sample() -> float:
            out = subprocess.run([sys.executable, __file__, "--register-child", backend],
                                 check=True, capture_output=True, text=True).stdout.split()
            native.append(float(out[1]))
            return float(out[0])
        return sample

    samples = interleave({"JIT": side("jit"), "interpreter": side("interpreter")}, rounds)
    c = compare(samples["JIT"], samples["interpreter"])
    print(f"\nregistering the NOP chain's object (instantiate), a fresh process each, median of "
          f"{rounds} interleaved rounds (thread CPU time): interpreter {c.base_median:.1f} ms, JIT "
          f"{c.median:.1f} ms ({c.ratio:.1f}x, spread {c.spread(1)}); the native helper module, "
          f"once per process: {statistics.median(native):.0f} ms ({spread(native, digits=0)})")


def compile_times(rounds: int, ubpf: Ubpf | None = None) -> None:
    """Per program, JIT construction and interpreter construction (and uBPF's compile) in the
    same rounds."""
    programs = [(f"loop {name}", program(name)) for name in LOOPS]
    programs += [(f"compiled {name}", insns) for name, insns in compiled_programs()]
    suite = cases_dir()
    if suite is not None:
        for path in sorted(suite.glob("*.data")):
            case = read_case(path)
            if not case.needs_callx:
                programs.append((path.stem, case.program))
    helpers = default_helpers()        # the suite's call_unwind cases call helper 5
    rows, against, refused, tiers = [], [], [], []
    for name, code in programs:
        built: list[Jit] = []

        def jit_side() -> float:
            start = CLOCK()
            built.append(Jit(code, helpers=helpers, cache=False))
            return CLOCK() - start

        def interp_side() -> float:
            start = CLOCK()
            Interpreter(code, helpers=helpers)
            return CLOCK() - start

        sides = {"JIT": jit_side, "interpreter": interp_side}
        if ubpf is not None:
            if not isinstance(code, (bytes, bytearray)):
                code = isa.encode(code)             # a compiled program's instructions
            try:
                ubpf.compile_seconds(code)
                sides["uBPF"] = functools.partial(ubpf.compile_seconds, code)
            except RuntimeError as exc:
                refused.append((name, str(exc)))
        samples = interleave(sides, rounds)
        if "uBPF" in samples:
            against.append(compare(samples["JIT"], samples["uBPF"]))
        note = ""
        tiers.append(built[0].tier)
        if built[0].tier == 0:                 # what tiering up costs later, once hot
            note = f"; tier 0, tier 1 {tier_up_seconds(built[0]) * 1e3:.0f} ms when hot"
        rows.append((name, note, compare(samples["JIT"], samples["interpreter"])))
    print(f"\ncompile time per program, {len(rows)} programs (Jit construction: validate, lift, "
          f"optimise, codegen; each compiled anew; median of {rounds} rounds against the "
          "interpreter's construction; thread CPU time)")
    if suite is None:
        print(f"  (the conformance suite's programs are left out: {CASES_MISSING})")
    jit_ms = [c.median * 1e3 for _, _, c in rows]
    ratios = [c.ratio for _, _, c in rows]
    slowest = max(rows, key=lambda row: row[2].median)
    print(f"  over the programs: JIT median {statistics.median(jit_ms):.1f} ms, max "
          f"{max(jit_ms):.1f} ms ({slowest[0]}{slowest[1]}); interpreter construction median "
          f"{statistics.median(c.base_median for _, _, c in rows) * 1e3:.2f} ms; JIT / interpreter "
          f"median {statistics.median(ratios):.1f}x (programs' range {min(ratios):.1f}-"
          f"{max(ratios):.1f}x)")
    print(f"  ({tiers.count(0)} programs compiled at codegen level 0, {tiers.count(1)} at level 1)")
    for name, note, c in rows[:len(LOOPS) + 1]:
        print(f"  {name:22} JIT {c.median * 1e3:6.1f} ms  interpreter {c.base_median * 1e3:6.2f} ms "
              f"({c.ratio:5.1f}x, spread {c.spread(1)}{note})")
    if ubpf is not None:
        print(f"  against uBPF's compile (create, load, compile, destroy), the same rounds, "
              f"{len(against)} programs: JIT median {statistics.median(c.median for c in against) * 1e3:.2f} ms, "
              f"uBPF median {statistics.median(c.base_median for c in against) * 1e3:.3f} ms "
              f"(each program's median against uBPF's in the same rounds: median ratio "
              f"{statistics.median(c.ratio for c in against):.1f}x, "
              f"range {min(c.ratio for c in against):.1f}-{max(c.ratio for c in against):.1f}x)")
        for name, why in refused:
            print(f"    uBPF refused {name}: {why}")


def tier_up_seconds(jit: Jit) -> float:
    start = CLOCK()
    jit.tier_up()
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


def nop_chain(n: int, rounds: int) -> None:
    """bench/ring.py's BPF NOP chain per engine, against C liburing and the interpreter, all in
    the same rounds."""
    import tempfile
    import ring as ring_bench          # bench/ring.py
    with tempfile.TemporaryDirectory() as tmp:
        exe = ring_bench.build_c(tmp)
        print()
        if exe is None:
            print("BPF NOP chain: no C baseline (gcc and liburing-dev are needed)")
            return
        sides = ring_bench.engine_sides(n)
        samples = ring_bench.chain_table(exe, n, sides, rounds)
    interp, *jits = sides
    for name in jits:
        c = compare(samples[name], samples[interp])
        print(f"  {name}: {c.ratio:.1f}x the interpreter (spread {c.spread(1)})")


FIGURES = ("loops", "run", "register", "compile", "chain")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=11, help="interleaved rounds per figure")
    ap.add_argument("--jit-iterations", type=int, default=20_000_000)
    ap.add_argument("--interp-iterations", type=int, default=100_000)
    ap.add_argument("--chain", type=int, default=100_000, help="NOPs in the BPF NOP chain")
    ap.add_argument("--ubpf", metavar="PATH",
                    help="a uBPF shared library (see above): adds uBPF's JIT to the loops and "
                         "the compile times")
    ap.add_argument("--only", action="append", choices=FIGURES,
                    help="print only these figures (repeatable; default: all)")
    ap.add_argument("--register-child", choices=("interpreter", "jit"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.register_child:
        register_child(args.register_child)
        return 0
    reason = jit_available()
    if reason is not None:
        print(f"the JIT cannot run here: {reason}", file=sys.stderr)
        return 2
    ubpf = None
    if args.ubpf:
        try:
            ubpf = Ubpf(args.ubpf)
        except (OSError, AttributeError) as exc:
            print(f"--ubpf {args.ubpf}: not a uBPF library ({exc})", file=sys.stderr)
            return 2
    only = set(args.only or FIGURES)
    few = max(3, args.rounds // 2)
    if "loops" in only:
        loop_rates(args.rounds, args.jit_iterations, args.interp_iterations, ubpf)
    if "run" in only:
        run_cost(args.rounds)
        run_from_python(args.rounds)
    if "register" in only:
        register_cost(few)
    if "compile" in only:
        compile_times(few, ubpf)
    if "chain" in only:
        nop_chain(args.chain, few)
    return 0


if __name__ == "__main__":
    sys.exit(main())
