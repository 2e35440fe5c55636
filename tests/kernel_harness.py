"""Shared by the kernel tests: compile a BPF module from source, load it into the running
kernel, and run its syscall programs with test_run on a ctx built from the module's own
Struct classes (the source is also ordinary Python, so executing it gives the host classes);
and build clang-22's object of a C twin (`clang_object`).  What the machine offers (clang-22,
bpf(), io_uring) is probed in tests/probes.py, not here."""
from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import probes
import pytest
from pybpf_uring import CompileError, compile_source


def module(src: str, name: str = "<bpf module>") -> dict:
    """The host side of a BPF module (its Structs, constants, functions), as a script importing
    it would have: executed as plain Python, without this file's __future__ flags."""
    namespace: dict = {}
    exec(compile(src, name, "exec", dont_inherit=True), namespace)
    return namespace


def compiled(src: str, name: str = "<bpf module>", cpu: str = "v3"):
    """(BpfObject, the module's namespace) for a BPF module's source."""
    return compile_source(src, name, cpu), module(src, name)


@contextlib.contextmanager
def loaded(src: str, cpu: str = "v3"):
    """(loaded object, the module's namespace) for a BPF module's source."""
    obj, namespace = compiled(src, cpu=cpu)
    with obj.load() as live:
        yield live, namespace


def diagnostic(src: str, path: str) -> str:
    """The text a user sees for a module the compiler must refuse: compiling src as path raises
    CompileError (the test fails if it compiles), rendered with carets and notes."""
    with pytest.raises(CompileError) as info:
        compile_source(src, path)
    return str(info.value)


def wrap(value: int, bits: int, signed: bool) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if signed and value >> (bits - 1) else value


def floordiv(a: int, b: int) -> int:
    """The DSL's `//`: Python's floor division, and 0 for a zero divisor (as BPF defines it)."""
    return 0 if b == 0 else a // b


def floormod(a: int, b: int) -> int:
    """The DSL's `%`: Python's floor modulo, and the dividend for a zero divisor."""
    return a if b == 0 else a % b


def clang_object(directory: Path, name: str, source: str):
    """The BpfObject clang-22 -O2 -g -mcpu=v3 makes of C `source` (written to directory/name.c);
    where clang-22 is missing, the test skips (or fails in CI) by tests/probes.py's rule.  A test
    that calls this carries @pytest.mark.tools("clang") so that `-m unit` leaves it out."""
    from pybpf_uring.bpf.objfile import BpfObject
    probes.require("clang")
    c, o = directory / f"{name}.c", directory / f"{name}.o"
    c.write_text(source)
    subprocess.run([probes.CLANG, "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-c", str(c), "-o", str(o)],
                   check=True)
    return BpfObject.read(o)
