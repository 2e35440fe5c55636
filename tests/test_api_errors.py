"""Errors as a user of the Python API meets them: the exceptions to catch are `pybpf_uring.X`,
and an uncaught CompileError in a script reads as the user's frames and the diagnostic, not as
a walk through the compiler."""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from probes import CLANG

import pybpf_uring

ROOT = Path(__file__).resolve().parent.parent

# each public exception and the module that raises it (the bases: errors.py)
EXCEPTIONS = {
    "PybpfUringError": "errors", "LoadError": "errors", "RingError": "errors",
    "CompileError": "diagnostics", "VerifierError": "bpf.load", "UnsupportedProgramError": "bpf.load",
    "ObjectError": "bpf.objfile", "ProgramFault": "runtime.ring", "DeadlockError": "runtime.ring",
    "MainlineUnsupportedError": "mainline", "UnsuitableRingError": "mainline", "LoopError": "mainline",
}


@pytest.mark.parametrize("name", sorted(EXCEPTIONS))
def test_public_exceptions_are_importable_from_the_package(name):
    exported = getattr(pybpf_uring, name)
    assert exported is getattr(importlib.import_module(f"pybpf_uring.{EXCEPTIONS[name]}"), name)
    assert issubclass(exported, Exception)
    assert name in pybpf_uring.__all__ and name in dir(pybpf_uring)


def test_verifier_and_unsupported_errors_are_load_errors():
    """What the kernel (or the loader for it) refuses is a LoadError, not a CompileError: the
    source compiled.  `except pybpf_uring.PybpfUringError` catches both (tests/test_errors.py)."""
    for name in ("VerifierError", "UnsupportedProgramError", "MainlineUnsupportedError", "UnsuitableRingError"):
        assert issubclass(getattr(pybpf_uring, name), pybpf_uring.LoadError)
        assert not issubclass(getattr(pybpf_uring, name), pybpf_uring.CompileError)


def test_version_is_the_installed_distributions():
    assert pybpf_uring.__version__ == metadata.version("pybpf_uring")
    assert "__version__" in pybpf_uring.__all__


def test_version_from_a_source_tree_is_pyprojects(monkeypatch):
    tomllib = pytest.importorskip("tomllib")

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert pybpf_uring._version() == declared


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'compile_everything'"):
        pybpf_uring.compile_everything


def test_import_and_the_public_names_stay_cheap():
    """Importing the package, reading `__version__` and naming the exceptions loads none of the
    heavy dependencies (lark, llvmlite, pyelftools): they cost a second before any compile."""
    code = ("import sys, pybpf_uring as p\n"
            "p.__version__, p.CompileError, p.ObjectError\n"
            "print(sorted(m for m in ('lark', 'llvmlite', 'elftools') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "[]\n"


# ----- an uncaught CompileError in a script ------------------------------------------------
PROG = """\
from pybpf_uring import syscall, Struct, i32, u64


class Args(Struct):
    a: u64


@syscall
def bad(ctx: Args) -> i32:
    return ctx.b
"""

HOST = """

def build():
    return {call}


if __name__ == "__main__":
    build()
"""

DIAGNOSTIC = """{path}:10:12: error: struct Args has no field 'b'
    return ctx.b
           ^~~~~
  note: its fields are: a
"""


def run_script(folder: Path, text: str, debug: bool = False) -> tuple[Path, subprocess.CompletedProcess]:
    """`python script.py` in `folder`, beside prog.py (the BPF module with the mistake)."""
    (folder / "prog.py").write_text(PROG)
    script = folder / "script.py"
    script.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "PYBPF_URING_DEBUG"}
    if debug:
        env["PYBPF_URING_DEBUG"] = "1"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=folder)
    return script, done


def frames(stderr: str) -> list[tuple[str, str]]:
    """(file, function) of each frame of a printed traceback, outermost first."""
    return re.findall(r'^  File "([^"]+)", line \d+, in (\S+)$', stderr, re.M)


@pytest.mark.kernel
@pytest.mark.parametrize("entry_point", ["Program.compile", "compile_source", "compile_file", "compile_module"])
def test_an_uncaught_compile_error_shows_the_users_frames_and_the_diagnostic(tmp_path, entry_point):
    call, head = {
        "Program.compile": ("bad.compile()", PROG),
        "compile_source": ("compile_source(open('prog.py').read(), 'prog.py')",
                           "from pybpf_uring import compile_source\n"),
        "compile_file": ("compile_file('prog.py')", "from pybpf_uring import compile_file\n"),
        "compile_module": ("compile_module(prog)", "import prog\nfrom pybpf_uring import compile_module\n"),
    }[entry_point]
    script, done = run_script(tmp_path, head + HOST.format(call=call))
    assert done.returncode == 1 and done.stdout == ""
    # the script's two frames, then the one line of the public entry point that re-raises the
    # error without the compiler's frames (CPython always shows the frame a raise is in)
    entry = (str(ROOT / "pybpf_uring" / "diagnostics.py"), "entry")
    assert frames(done.stderr) == [(str(script), "<module>"), (str(script), "build"), entry]
    assert done.stderr.startswith("Traceback (most recent call last):\n")
    assert f"    return {call}\n" in done.stderr
    path = {"Program.compile": script, "compile_module": tmp_path / "prog.py"}.get(entry_point, "prog.py")
    assert done.stderr.endswith("    raise error.with_traceback(None)\n"
                                f"pybpf_uring.errors.CompileError: {DIAGNOSTIC.format(path=path)}")


def test_debugging_pybpf_uring_keeps_the_compilers_frames(tmp_path):
    script, done = run_script(tmp_path, PROG + HOST.format(call="bad.compile()"), debug=True)
    assert done.returncode == 1
    shown = {Path(file).name for file, _ in frames(done.stderr)}
    assert {"script.py", "decorators.py", "pipeline.py", "check.py"} <= shown
    assert done.stderr.endswith(DIAGNOSTIC.format(path=script))


def test_a_caught_compile_error_is_the_same_error_with_a_short_traceback():
    with pytest.raises(pybpf_uring.CompileError) as caught:
        pybpf_uring.compile_source(PROG, "prog.py")
    assert str(caught.value) + "\n" == DIAGNOSTIC.format(path="prog.py")
    tb, names = caught.value.__traceback__, []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert names == ["test_a_caught_compile_error_is_the_same_error_with_a_short_traceback", "entry"]


@pytest.mark.tools("clang")
@pytest.mark.kernel
def test_an_uncaught_verifier_error_from_load_shows_the_users_frames(tmp_path):
    """`.load()` is a public entry point too: the kernel's rejection, located in the C source,
    without the loader's frames."""
    obj = tmp_path / "reject.o"
    subprocess.run([CLANG, "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-c",
                    str(ROOT / "tests" / "data" / "load_reject.c"), "-o", str(obj)], check=True)
    script = tmp_path / "script.py"
    script.write_text("from pybpf_uring import BpfObject\n\n"
                      f"BpfObject.read({str(obj)!r}).load(only={{'variable_ctx'}})\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "PYBPF_URING_DEBUG"})
    assert done.returncode == 1
    entry = (str(ROOT / "pybpf_uring" / "diagnostics.py"), "entry")
    assert frames(done.stderr) == [(str(script), "<module>"), entry]
    assert "pybpf_uring.bpf.load.VerifierError: " in done.stderr and "load_reject.c:20:" in done.stderr
    assert "return ((__u8 *)ctx)[i];" in done.stderr
