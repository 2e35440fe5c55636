"""The one exception hierarchy (pybpf_uring/errors.py): the facts a user's `except` relies on,
each family raised for real (a compile error, a file that is no object, the kernel's verifier
rejecting a program, a ring that can never complete a wait), and what the CLI prints for each,
with its exit status."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr
from pathlib import Path

import pytest
from probes import CLANG

import pybpf_uring
from pybpf_uring import cli, errors
from pybpf_uring.runtime.engine import BpfFault, BudgetExceeded, InvalidProgram, MemoryFault
from pybpf_uring.runtime.engine.instance import EngineError
from pybpf_uring.runtime.engine.jit import JitUnavailable
from pybpf_uring.bpf.globals_view import FrozenGlobalError

ROOT = Path(__file__).resolve().parent.parent

BAD_SOURCE = "from pybpf_uring import syscall, i32\n\n@syscall\ndef f(ctx) -> i32:\n    return 1 / 2\n"

# every class the package raises on purpose, by the family a user catches it as
FAMILIES = {
    "CompileError": (pybpf_uring.CompileError,),
    "LoadError": (pybpf_uring.VerifierError, pybpf_uring.UnsupportedProgramError,
                  pybpf_uring.MainlineUnsupportedError, pybpf_uring.UnsuitableRingError, FrozenGlobalError),
    "ObjectError": (pybpf_uring.ObjectError,),
    "RingError": (pybpf_uring.ProgramFault, pybpf_uring.DeadlockError, pybpf_uring.LoopError, EngineError,
                  InvalidProgram, BpfFault, BudgetExceeded, MemoryFault, JitUnavailable),
}


def cli_run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pybpf_uring", *args], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "PYBPF_URING_DEBUG"})


def reported(exc: Exception) -> tuple[int, str]:
    """cli.report's status and stderr for `exc`, as the CLI prints it for an input."""
    out = io.StringIO()
    with redirect_stderr(out):
        status = cli.report(exc, "input.py")
    return status, out.getvalue()


# --- the hierarchy ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_every_error_is_in_its_family_and_under_the_one_base(family):
    base = getattr(pybpf_uring, family)
    for cls in FAMILIES[family]:
        assert issubclass(cls, base) and issubclass(cls, pybpf_uring.PybpfUringError), cls
        others = [getattr(pybpf_uring, f) for f in FAMILIES if f != family]
        assert not any(issubclass(cls, other) for other in others), cls


def test_a_verifier_error_is_a_load_error_not_a_compile_error():
    assert issubclass(pybpf_uring.VerifierError, pybpf_uring.LoadError)
    assert not issubclass(pybpf_uring.VerifierError, pybpf_uring.CompileError)
    assert issubclass(pybpf_uring.MainlineUnsupportedError, pybpf_uring.UnsupportedProgramError)


def test_the_errors_that_carry_diagnostics_are_the_compile_and_load_errors():
    for cls in (pybpf_uring.CompileError, pybpf_uring.LoadError):
        assert issubclass(cls, errors.DiagnosedError)
    for cls in (pybpf_uring.ObjectError, pybpf_uring.RingError):
        assert not issubclass(cls, errors.DiagnosedError)


def test_builtin_bases_a_caller_may_catch_are_kept():
    """A class that was an OSError or a RuntimeError before the hierarchy still is one."""
    assert issubclass(pybpf_uring.LoopError, OSError)
    for cls in (pybpf_uring.DeadlockError, BpfFault, JitUnavailable):
        assert issubclass(cls, RuntimeError)
    assert issubclass(InvalidProgram, ValueError)
    loop = pybpf_uring.LoopError(22, "io_uring_enter (loop) failed: EINVAL")
    assert loop.errno == 22 and str(loop) == "[Errno 22] io_uring_enter (loop) failed: EINVAL"


def test_each_class_is_defined_once_and_importable_where_it_always_was():
    from pybpf_uring import diagnostics
    from pybpf_uring.bpf import load, objfile
    from pybpf_uring.runtime import ring, ring_protocol
    assert diagnostics.CompileError is errors.CompileError is pybpf_uring.CompileError
    assert objfile.ObjectError is errors.ObjectError is pybpf_uring.ObjectError
    assert load.VerifierError is pybpf_uring.VerifierError
    assert ring.ProgramFault is ring_protocol.ProgramFault is pybpf_uring.ProgramFault
    for name in ("PybpfUringError", "LoadError", "RingError"):
        assert name in pybpf_uring.__all__ and getattr(pybpf_uring, name) is getattr(errors, name)


# --- one except catches each family, raised for real -------------------------------------------
def test_one_except_catches_a_compile_error():
    with pytest.raises(pybpf_uring.PybpfUringError) as caught:
        pybpf_uring.compile_source(BAD_SOURCE, "bad.py")
    assert isinstance(caught.value, pybpf_uring.CompileError)
    assert str(caught.value).startswith("bad.py:5:12: error: ")


def test_one_except_catches_an_object_error():
    with pytest.raises(pybpf_uring.PybpfUringError) as caught:
        pybpf_uring.BpfObject.read(b"not an object, and longer than an ELF header is. " * 2)
    assert isinstance(caught.value, pybpf_uring.ObjectError)
    assert caught.value.message == "not an ELF file (no \\x7fELF magic)"


@pytest.mark.uring
def test_one_except_catches_a_ring_error():
    with pybpf_uring.Ring(entries=4) as ring:
        with pytest.raises(pybpf_uring.PybpfUringError) as caught:
            ring.wait_cqe()
    assert isinstance(caught.value, pybpf_uring.DeadlockError)


@pytest.fixture(scope="module")
def rejected_object(tmp_path_factory) -> str:
    """A C object whose program `variable_ctx` the verifier rejects (tests/data/load_reject.c)."""
    path = tmp_path_factory.mktemp("reject") / "reject.o"
    subprocess.run([CLANG, "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-c",
                    str(ROOT / "tests" / "data" / "load_reject.c"), "-o", str(path)], check=True)
    return str(path)


@pytest.mark.tools("clang")
@pytest.mark.kernel
def test_one_except_catches_the_verifiers_rejection(rejected_object):
    with pytest.raises(pybpf_uring.PybpfUringError) as caught:
        pybpf_uring.BpfObject.read(rejected_object).load(only={"variable_ctx"})
    err = caught.value
    assert isinstance(err, pybpf_uring.LoadError) and isinstance(err, pybpf_uring.VerifierError)
    assert not isinstance(err, pybpf_uring.CompileError)
    assert "load_reject.c:20:" in str(err) and err.program == "variable_ctx"


# --- the CLI maps each family by class ----------------------------------------------------------
def test_cli_prints_a_compile_error_located_and_exits_1(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(BAD_SOURCE)
    run = cli_run("check", str(path))
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith(f"{path}:5:12: error: ") and "    return 1 / 2\n" in run.stderr
    assert "Traceback" not in run.stderr


def test_cli_prints_an_object_error_against_the_file_and_exits_1(tmp_path):
    path = tmp_path / "junk.o"
    path.write_bytes(b"\0" * 100)
    run = cli_run("disasm", str(path))
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == f"{path}: error: not an ELF file (no \\x7fELF magic)\n"


@pytest.mark.tools("clang")
@pytest.mark.kernel
def test_cli_prints_a_verifier_rejection_located_in_the_source_and_exits_1(rejected_object):
    run = cli_run("verify", rejected_object)
    assert run.returncode == 1
    first = run.stderr.splitlines()[0]
    assert ":20:" in first and "error: the kernel verifier rejected program 'variable_ctx'" in first
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr


@pytest.mark.uring
def test_cli_prints_a_ring_error_as_an_error_line():
    with pybpf_uring.Ring(entries=4) as ring:
        try:
            ring.wait_cqe()
        except pybpf_uring.DeadlockError as exc:
            deadlock = exc
    status, text = reported(deadlock)
    assert status == 1 and text == f"error: {deadlock}\n" and str(deadlock)


def test_cli_calls_anything_else_a_bug_in_pybpf_uring(monkeypatch):
    monkeypatch.delenv("PYBPF_URING_DEBUG", raising=False)
    status, text = reported(KeyError("slot"))
    assert status == 1
    assert text.startswith("internal error in pybpf_uring: KeyError: 'slot'\n")
    monkeypatch.setenv("PYBPF_URING_DEBUG", "1")
    with pytest.raises(KeyError):
        reported(KeyError("slot"))
