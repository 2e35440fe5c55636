"""What a cold `pybpf-uring compile` imports: only the compiler's own stages.

Start-up is most of a cold compile (bench/compile.py measures it against clang-22), and an import
at the top of a module on the compile path is paid by every compile whether it needs it or not.
The object reader (pyelftools), BTF and the kernel layer, the ring runtime and its engines are
for reading, loading and running objects; tracing layouts only for tracing programs.  This
checks the modules a fresh process has imported after compiling a sample, not a time.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NOT_FOR_COMPILING = ("elftools", "pybpf_uring.bpf.objfile", "pybpf_uring.bpf.btf", "pybpf_uring.bpf.kernel",
                     "pybpf_uring.bpf.load", "pybpf_uring.bpf.tracepoints", "pybpf_uring.runtime",
                     "pybpf_uring.mainline", "pybpf_uring.display", "importlib.metadata")

CHILD = """
import json, sys
from pybpf_uring.cli import main
status = main(["compile", sys.argv[1], "-o", sys.argv[2]])
print(json.dumps([status, sorted(sys.modules)]))
"""


def test_a_cold_compile_imports_only_the_compiler(tmp_path):
    run = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "samples" / "packet_stats.py"),
                          str(tmp_path / "p.o")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    status, modules = json.loads(run.stdout.splitlines()[-1])
    assert status == 0 and (tmp_path / "p.o").read_bytes()[:4] == b"\x7fELF"
    assert "pybpf_uring.compiler.emit" in modules       # it did compile, in this process
    loaded = [m for m in modules if any(m == name or m.startswith(name + ".") for name in NOT_FOR_COMPILING)]
    assert not loaded, f"a cold compile imported {loaded}"
