"""Compile benchmark: pybpf_uring against clang-22 on the same programs.

Prints, as ratios against clang-22 measured in the same run:
- instructions per program (its own and the subprograms it calls, as loaded) at each cpu,
  for bench/programs.py and its C twin bench/programs.c (target: ≤ 1.0 everywhere);
- in-process compile time per program, warm (target: ≤ 10 ms);
- a cold `pybpf-uring compile` of the module against a cold `clang-22 -c` of the twin
  (target: ≤ 0.15 s).

Run: python3 bench/compile.py [--repeat N]
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
PROGRAMS_PY = os.path.join(HERE, "programs.py")
PROGRAMS_C = os.path.join(HERE, "programs.c")
CPUS = ("v1", "v2", "v3", "v4")


def clang(cpu: str, out: str) -> list[str]:
    return ["clang-22", "-O2", "-g", "-target", "bpf", f"-mcpu={cpu}", "-c", PROGRAMS_C, "-o", out]


def insn_counts(obj) -> dict[str, int]:
    """Instructions of each program as the kernel would get it (subprograms appended)."""
    return {p.name: len(p.linked().instructions) for p in obj.programs}


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    if shutil.which("clang-22") is None:
        print("clang-22 is needed for the baseline (apt-get install clang-22)", file=sys.stderr)
        return 2
    from pybpf_uring import BpfObject, compile_file

    tmp = tempfile.mkdtemp()
    print("instructions: pybpf_uring / clang-22 (per program, subprograms included)")
    worst = 0.0
    for cpu in CPUS:
        out = os.path.join(tmp, f"twin-{cpu}.o")
        subprocess.run(clang(cpu, out), check=True)
        ours, theirs = insn_counts(compile_file(PROGRAMS_PY, cpu)), insn_counts(BpfObject.read(out))
        cells = []
        for name in theirs:
            ratio = ours[name] / theirs[name]
            worst = max(worst, ratio)
            cells.append(f"{name} {ours[name]}/{theirs[name]}={ratio:.2f}")
        print(f"  {cpu}: " + "  ".join(cells))
    print(f"  worst ratio: {worst:.2f} (target <= 1.00)")

    n_programs = len(compile_file(PROGRAMS_PY).programs)
    warm = timed(lambda: compile_file(PROGRAMS_PY), args.repeat)
    clang_warm = timed(lambda: subprocess.run(clang("v3", os.path.join(tmp, "t.o")), check=True),
                       max(3, args.repeat // 4))
    print(f"in-process compile, warm: {warm * 1e3 / n_programs:.2f} ms per program "
          f"({n_programs} programs in {warm * 1e3:.1f} ms; target <= 10 ms per program); "
          f"ratio to a clang-22 process: {warm / clang_warm:.2f}")

    cli = [sys.executable, "-m", "pybpf_uring", "compile", PROGRAMS_PY, "-o", os.path.join(tmp, "cli.o")]
    cold = timed(lambda: subprocess.run(cli, check=True), max(3, args.repeat // 4))
    print(f"cold CLI compile: {cold:.3f} s (target <= 0.15 s); clang-22: {clang_warm:.3f} s; "
          f"ratio {cold / clang_warm:.2f}")
    shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
