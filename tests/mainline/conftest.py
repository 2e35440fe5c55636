"""The mainline group: loop_step programs attached to real rings on a kernel with
`io_uring_bpf_ops` (Linux 7.1+).  This machine's kernel has none, so the group runs inside
Debian's 7.2 kernel under QEMU: tests/test_mainline_host.py boots it once (tools/vm/vmrun)
and runs this directory there, with the C fixtures compiled on the host beforehand.

Each test module here is marked kernel("bpf", "mainline") and uring: outside such a kernel
every test skips with tests/probes.py's reason, except when PYBPF_URING_MAINLINE_REQUIRED=1 (set
by the VM run), where a kernel without the feature is a failure: the point of booting that kernel
is that the tests run.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess

import probes
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data")
HERE = os.path.dirname(os.path.abspath(__file__))
CLANG = [probes.CLANG, "-O2", "-g", "-target", "bpf", "-mcpu=v3"]


@pytest.fixture(scope="session")
def c_object(tmp_path_factory):
    """`c_object("nops")` → the path of tests/data/mainline_nops.c compiled by clang-22: taken
    from $PYBPF_URING_MAINLINE_OBJECTS when the host compiled it (clang under TCG is slow),
    else compiled here."""
    prebuilt = os.environ.get("PYBPF_URING_MAINLINE_OBJECTS", "")
    out = tmp_path_factory.mktemp("mainline_objects")

    def build(name: str) -> str:
        ready = os.path.join(prebuilt, f"mainline_{name}.o")
        if prebuilt and os.path.exists(ready):
            return ready
        probes.require("clang")   # not a marker: in the VM the host's objects need no clang
        path = str(out / f"mainline_{name}.o")
        subprocess.run(CLANG + ["-c", os.path.join(DATA, f"mainline_{name}.c"), "-o", path],
                       check=True, capture_output=True, text=True)
        return path
    return build


@pytest.fixture(scope="session")
def python_object():
    """`python_object("count")` → the BpfObject of a program of loop_programs.py (or of a sample):
    the host's build from $PYBPF_URING_MAINLINE_OBJECTS when there is one, else compiled here."""
    from pybpf_uring.bpf.objfile import BpfObject
    spec = importlib.util.spec_from_file_location("loop_programs", os.path.join(HERE, "loop_programs.py"))
    loop_programs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loop_programs)
    prebuilt = os.environ.get("PYBPF_URING_MAINLINE_OBJECTS", "")

    def build(name: str):
        ready = os.path.join(prebuilt, f"python_{name}.o")
        if prebuilt and os.path.exists(ready):
            return BpfObject.read(ready)
        return loop_programs.build(name)
    return build
