"""Compile benchmark: pybpf_uring against clang-22 on the same programs.

Prints:
- instructions per program (its own and the subprograms it calls, as loaded) at each cpu,
  for bench/programs.py and its C twin bench/programs.c, as ratios (target: <= 1.0 everywhere);
- in-process compile time per program, warm, in the process's CPU time (the pipeline runs on a
  worker thread of its own, depth.py, which a thread clock would miss): the median over rounds and
  its min-max (target: <= 5 ms; no ratio, since clang has no in-process twin to set beside it),
  and the same compile stage by stage (parse, check, lower, emit, the object read back);
- cold compiles in CPU time, fresh processes taking turns (bench/measure.py says why both):
  `pybpf-uring compile` of programs.py against `clang-22 -c` of programs.c, and of the
  one-program sample packet_stats.py against `clang-22 -c` of its C twin packet_stats.c
  (target: <= 2.00), each as both medians, their ratio and the min-max of the per-round ratios;
  and the floor under any such compile -- python3 starting and loading llvmlite's LLVM library,
  before a line of ours runs -- and python3 starting alone, against the same clang-22 run.

Run: python3 bench/compile.py [--rounds N]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(1, HERE)

from measure import child_cpu, compare, interleave, spread  # noqa: E402  (bench/measure.py)

PROGRAMS_PY = os.path.join(HERE, "programs.py")
PROGRAMS_C = os.path.join(HERE, "programs.c")
SMALL_PY = os.path.join(os.path.dirname(HERE), "samples", "packet_stats.py")
SMALL_C = os.path.join(HERE, "packet_stats.c")
CPUS = ("v1", "v2", "v3", "v4")


def clang(cpu: str, out: str, source: str = PROGRAMS_C) -> list[str]:
    return ["clang-22", "-O2", "-g", "-target", "bpf", f"-mcpu={cpu}", "-c", source, "-o", out]


def insn_counts(obj) -> dict[str, int]:
    """Instructions of each program as the kernel would get it (subprograms appended)."""
    return {p.name: len(p.linked().instructions) for p in obj.programs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=11, help="interleaved rounds per figure")
    args = ap.parse_args()
    if shutil.which("clang-22") is None:
        print("clang-22 is needed for the baseline (apt-get install clang-22)", file=sys.stderr)
        return 2
    from pybpf_uring import BpfObject, compile_file

    with tempfile.TemporaryDirectory() as tmp:
        print("instructions: pybpf_uring/clang-22 = ratio (per program, subprograms included)")
        worst, table = 0.0, {}
        for cpu in CPUS:
            out = os.path.join(tmp, f"twin-{cpu}.o")
            subprocess.run(clang(cpu, out), check=True)
            ours, theirs = insn_counts(compile_file(PROGRAMS_PY, cpu)), insn_counts(BpfObject.read(out))
            for name in theirs:
                ratio = ours[name] / theirs[name]
                worst = max(worst, ratio)
                table.setdefault(name, []).append(f"{ours[name]}/{theirs[name]}={ratio:.2f}")
        width = max(map(len, table))
        print(f"  {'':{width}}  " + "".join(f"{cpu:>14}" for cpu in CPUS))
        for name, cells in table.items():
            print(f"  {name:{width}}  " + "".join(f"{cell:>14}" for cell in cells))
        print(f"  worst ratio: {worst:.2f} (target <= 1.00)")

        n_programs = len(compile_file(PROGRAMS_PY).programs)
        warm = interleave({"warm": lambda: timed(lambda: compile_file(PROGRAMS_PY))}, args.rounds,
                          warmup=1)["warm"]
        print(f"in-process compile, warm, median of {args.rounds}: "
              f"{statistics.median(warm) * 1e3 / n_programs:.2f} ms per program "
              f"({spread(warm, 1e3 / n_programs)}; {n_programs} programs in "
              f"{statistics.median(warm) * 1e3:.1f} ms; target <= 5 ms per program)")
        stages = interleave({"warm": lambda: stage_times(PROGRAMS_PY)}, args.rounds, warmup=1)["warm"]
        print("  of which, per program (medians): " + ", ".join(
            f"{name} {statistics.median(s[name] for s in stages) * 1e3 / n_programs:.2f} ms"
            for name in stages[0]))

        # A user's shell writes bytecode caches; this session's environment may forbid them.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

        def ours(path: str) -> list[str]:
            return [sys.executable, "-m", "pybpf_uring", "compile", path, "-o",
                    os.path.join(tmp, "cli.o")]

        commands = {"pybpf-uring compile programs.py": ours(PROGRAMS_PY),
                    "clang-22 -c programs.c": clang("v3", os.path.join(tmp, "t.o")),
                    "pybpf-uring compile packet_stats.py": ours(SMALL_PY),
                    "clang-22 -c packet_stats.c": clang("v3", os.path.join(tmp, "s.o"), SMALL_C),
                    "floor": [sys.executable, "-c", "import llvmlite.binding"],
                    "python3": [sys.executable, "-c", "pass"]}
        # the warm-up round writes __pycache__, as a user's first run does
        cold = interleave({label: lambda cmd=cmd: child_cpu(cmd, env=env)[0]
                           for label, cmd in commands.items()}, args.rounds, warmup=1)
        ratio = compare(cold["pybpf-uring compile programs.py"], cold["clang-22 -c programs.c"])
        print(f"cold compile, a fresh process each, median of {args.rounds} interleaved rounds "
              "(the process's CPU time, start-up included):")
        print(f"  pybpf-uring compile programs.py ({n_programs} programs) {ratio.median:.3f} s, "
              f"clang-22 -c programs.c {ratio.base_median:.3f} s: ratio {ratio.ratio:.2f} "
              f"(spread {ratio.spread()})")
        small = compare(cold["pybpf-uring compile packet_stats.py"], cold["clang-22 -c packet_stats.c"])
        print(f"  pybpf-uring compile packet_stats.py (1 program) {small.median:.3f} s, "
              f"clang-22 -c packet_stats.c {small.base_median:.3f} s: ratio {small.ratio:.2f} "
              f"(spread {small.spread()}; target <= 2.00)")
        floor = compare(cold["floor"], cold["clang-22 -c packet_stats.c"])
        print(f"  the floor of any compile in this process: python3 starting and loading llvmlite's "
              f"LLVM library, {floor.median:.3f} s: ratio {floor.ratio:.2f} (spread {floor.spread()})")
        bare = compare(cold["python3"], cold["clang-22 -c packet_stats.c"])
        print(f"    of which python3 starting alone (its site-packages' .pth files included) "
              f"{bare.median:.3f} s: ratio {bare.ratio:.2f} (spread {bare.spread()})")
    return 0


def stage_times(path: str) -> dict[str, float]:
    """Each stage of compile_file(path) in turn, in the process's CPU time: where the time goes.
    emit is LLVM's -O2 and code generation, and for a module of many functions the object
    read back to measure the stack, which is then the object returned (pipeline.py)."""
    from pybpf_uring.compiler.check import check
    from pybpf_uring.compiler.emit import emit
    from pybpf_uring.compiler.lower import lower
    from pybpf_uring.compiler.parse import parse_source
    from pybpf_uring.compiler.pipeline import Compilation
    with open(path, encoding="utf-8") as f:
        text = f.read()
    times: dict[str, float] = {}

    def stage(name: str, fn):
        t0 = time.process_time()
        result = fn()
        times[name] = time.process_time() - t0
        return result
    module = stage("parse", lambda: parse_source(text, path))
    checked = stage("check", lambda: check(module))
    lowered = stage("lower", lambda: lower(checked))
    emitted = stage("emit", lambda: emit(lowered))
    stage("object read back", lambda: Compilation(module, lowered.ir, emitted.ir_opt, emitted.elf, [],
                                                  emitted.object).object)
    return times


def timed(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


if __name__ == "__main__":
    raise SystemExit(main())
