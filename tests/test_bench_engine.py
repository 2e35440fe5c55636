"""bench/engine.py's uBPF column: the interface it drives uBPF through.

Without a uBPF library the option is refused by name.  With one (UBPF_LIBRARY=path to a
libubpf.so built as bench/engine.py's docstring says), uBPF's JIT must compute what this JIT
computes on every benchmark loop -- the bench's rates rest on the two running the same work.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pybpf_uring.runtime.engine.jit import Jit

BENCH = Path(__file__).resolve().parent.parent / "bench"
LIBRARY = os.environ.get("UBPF_LIBRARY")


def load_bench():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_engine_for_tests", BENCH / "engine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_path_that_is_no_ubpf_library_is_refused():
    done = subprocess.run([sys.executable, str(BENCH / "engine.py"), "--ubpf", "/nonexistent.so",
                           "--only", "loops"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--ubpf /nonexistent.so: not a uBPF library" in done.stderr
    assert done.stdout == ""


@pytest.mark.skipif(LIBRARY is None, reason="UBPF_LIBRARY names no uBPF library")
def test_ubpf_computes_what_the_jit_computes_on_every_loop():
    bench = load_bench()
    ubpf = bench.Ubpf(LIBRARY)
    for name in bench.LOOPS:
        for count in (1, 7, 1000):
            jit = bench.LoopRun(Jit, name, count)
            jit()
            theirs = bench.UbpfLoopRun(ubpf, name, count, jit.engine.executed)
            assert theirs() > 0 and theirs.r0 == jit.r0, (name, count)
    with pytest.raises(RuntimeError, match="ubpf_load"):
        ubpf.compile(b"\x95")            # not a whole instruction
