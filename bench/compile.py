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
SMALL_PY = os.path.join(os.path.dirname(HERE), "samples", "packet_stats.py")
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

    # A user's shell writes bytecode caches; this session's environment may forbid them.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for label, path in (("small file (1 program)", SMALL_PY), (f"programs.py ({n_programs} programs)", PROGRAMS_PY)):
        cli = [sys.executable, "-m", "pybpf_uring", "compile", path, "-o", os.path.join(tmp, "cli.o")]
        subprocess.run(cli, check=True, env=env)  # the first run writes __pycache__
        cold = timed(lambda: subprocess.run(cli, check=True, env=env), max(5, args.repeat // 2))
        print(f"cold CLI compile, {label}: {cold:.3f} s (target <= 0.15 s); "
              f"clang-22 -c of all twins: {clang_warm:.3f} s; ratio {cold / clang_warm:.2f}")
    shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
