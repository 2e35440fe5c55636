"""Bad source input ends in exit 1 with a located diagnostic (or a named one for a whole file),
never an abort inside LLVM, a hang, a flood of output or an internal error.

Every case runs `python -m pybpf_uring check/compile` in a subprocess with a timeout, so an
abort (SIGABRT from LLVM) or a hang fails the test instead of ending the test run.  One case per
defect class found by fuzzing lives in tests/data/bad_input/ (or is generated here, when it is
long); the mutation fuzzer at the end runs the samples' sources and tests/data/fuzz_corpus/ (the
language's newer forms in one module), mutated, through both commands
(PYBPF_URING_FUZZ_CASES=N for more than the default 200, PYBPF_URING_FUZZ_SEED=N for another run).
"""
from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "bad_input"
SAMPLES = Path(__file__).parent.parent / "samples"
CORPUS = Path(__file__).parent / "data" / "fuzz_corpus"
LOCATED = re.compile(r"^\S+:\d+:\d+: error: ", re.M)
MAX_OUTPUT = 64 * 1024  # 20 errors with their lines cut to 160 characters fit many times over


def run(*args: str, timeout: float = 60, cwd=None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "pybpf_uring", *args], capture_output=True,
                              text=True, errors="replace", timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pybpf-uring {' '.join(args)} hung (no exit in {timeout} s)")


def assert_clean(p: subprocess.CompletedProcess, status: int) -> str:
    """Exit `status` (never a signal), no internal error or traceback, bounded output."""
    out = p.stdout + p.stderr
    assert p.returncode >= 0, f"killed by signal {-p.returncode}: {out[-2000:]}"
    assert "internal error" not in out and "Traceback" not in out, out[-2000:]
    assert len(p.stderr) < MAX_OUTPUT, f"{len(p.stderr)} bytes of diagnostics"
    assert p.returncode == status, out[-2000:]
    return p.stderr


def both(path: Path, tmp_path: Path, status: int = 1, *extra: str) -> list[str]:
    """`check` and `compile` of one file: the same status from both, and their stderr."""
    return [assert_clean(run("check", str(path)), status),
            assert_clean(run("compile", *extra, "-o", str(tmp_path / "out.o"), str(path)), status)]


@pytest.mark.parametrize("name, first_line", [
    ("none_field.py", "none_field.py:7:8: error: None is not a type here"),
    ("fold_negative_shift.py",
     "fold_negative_shift.py:13:22: error: shift count -1 is out of range for u32 (0 to 31)"),
    ("max_entries_u32.py", "max_entries_u32.py:4:22: error: max_entries 4294967296 does not fit the "
                           "kernel's 32-bit field (at most 4294967295)"),
    ("array_too_large.py", "array_too_large.py:7:11: error: u8[4294967296] is 4294967296 bytes; a type "
                           "has at most 536870911 bytes"),
    ("huge_range.py", "huge_range.py:11:5: error: "),
    ("called_bad_signature.py", "called_bad_signature.py:10:18: error: 'a constant' is not a type"),
])
def test_each_defect_class_is_a_located_error(name, first_line, tmp_path):
    for err in both(DATA / name, tmp_path):
        assert any(line.startswith(first_line) for line in
                   (line.removeprefix(str(DATA) + os.sep) for line in err.splitlines())), err


def test_a_comparison_of_two_literals_compiles(tmp_path):
    both(DATA / "literal_compare.py", tmp_path, 0)
    from pybpf_uring import compile_file
    assert compile_file(DATA / "literal_compare.py").programs[0].name == "f"


def test_text_that_is_not_utf8_is_named_from_the_cli_and_the_api(tmp_path):
    path = tmp_path / "latin1.py"
    path.write_bytes(b"x = 1\n# caf\xe9\n")
    message = f"{path}: error: cannot read: not UTF-8 text (byte 0xe9 at offset 11)"
    for err in both(path, tmp_path):
        assert err.strip() == message
    from pybpf_uring import CompileError, compile_file
    with pytest.raises(CompileError) as caught:
        compile_file(path)
    assert str(caught.value) == message


STRUCT_8 = "\n".join(["from pybpf_uring import syscall, Struct, i32, u64", "", "",
                      "class S(Struct):", "    c: u64", *(f"    f{k}: u64[100]" for k in range(8)),
                      "", "", "@syscall", "def f(ctx: S) -> i32:", "    if ctx.c:"])


def long_jump_program(copies: int) -> str:
    """An `if` over `copies` copies of 800 bytes: each a load and a store per u64, ~36k
    instructions for 176 of them, past a 16-bit jump offset."""
    body = [f"        if ctx.c != {i}:\n            ctx.f{i % 8} = ctx.f{(i + 1) % 8}" for i in range(copies)]
    return STRUCT_8 + "\n" + "\n".join(body) + "\n    return 0\n"


def test_a_jump_too_long_for_v3_is_an_error_and_v4_uses_long_jumps(tmp_path):
    path = tmp_path / "long.py"
    path.write_text(long_jump_program(176))
    err = assert_clean(run("compile", "-o", str(tmp_path / "long.o"), str(path)), 1)
    assert err.startswith(f"{path}:17:1: error: f is too long for cpu v3: the jump at line 18 spans ")
    assert "instructions, and a jump reaches at most 32767 before cpu v4" in err
    assert "split the function into subprograms (functions it calls), or compile with --cpu v4" in err
    assert_clean(run("compile", "--cpu", "v4", "-o", str(tmp_path / "long4.o"), str(path)), 0)
    from pybpf_uring.bpf import isa
    from pybpf_uring.bpf.objfile import BpfObject
    insns = BpfObject.read((tmp_path / "long4.o").read_bytes()).programs[0].instructions
    assert len(insns) > 32767
    assert any(i.opcode == isa.JMP32 | isa.JA for i in insns), "no gotol in a 36k-instruction jump"


HEAD = ("from pybpf_uring import syscall, Struct, i32, u64\n\n\nclass S(Struct):\n    x: u64\n\n\n"
        "@syscall\ndef f(ctx: S) -> i32:\n")


def test_nesting_as_deep_as_cpython_compiles(tmp_path):
    """A 2900-term sum and a 1500-branch elif chain (past the default 1000 frames) compile;
    3100 terms are a located error at the node past the limit."""
    total = tmp_path / "sum.py"
    total.write_text(HEAD + "    x = ctx.x" + " + ctx.x" * 2899 + "\n    return x\n")
    assert_clean(run("compile", "-o", str(tmp_path / "sum.o"), str(total)), 0)
    chain = tmp_path / "elif.py"
    chain.write_text(HEAD + "    if ctx.x == 0:\n        return 0\n" + "".join(
        f"    elif ctx.x == {i}:\n        return {i}\n" for i in range(1, 1500)) + "    return 0\n")
    assert_clean(run("check", str(chain)), 0)
    deeper = tmp_path / "deeper.py"
    deeper.write_text(HEAD + "    x = " + " + ".join(["1"] * 3100) + "\n    return x\n")
    for err in both(deeper, tmp_path):
        assert err.startswith(f"{deeper}:10:9: error: this nests more than 3000 levels deep"), err


def test_diagnostics_are_capped_and_long_lines_cut(tmp_path):
    """900 errors on one 10 KB line print 20 of them, each with a 160-character window of the
    line around its caret, then how many more there were."""
    path = tmp_path / "flood.py"
    line = "    x = " + " + ".join(f"zz{i}" for i in range(900))
    path.write_text(HEAD + line + "\n    return 0\n")
    err = assert_clean(run("check", str(path)), 1)
    located = LOCATED.findall(err)
    assert len(located) == 20
    assert err.rstrip().endswith("error: too many errors emitted, stopping now\n"
                                 "  note: 880 more not shown; fix these first")
    lines = err.splitlines()
    last = max(i for i, text in enumerate(lines) if text.startswith(f"{path}:10:"))
    assert lines[last].startswith(f"{path}:10:132: error: name 'zz19' is not defined")
    echoed, caret = lines[last + 1], lines[last + 2]
    assert len(echoed) <= 160 and echoed.startswith("...") and echoed.endswith("...")
    assert echoed[caret.index("^"):].startswith("zz19 ")
    assert max(len(text) for text in lines) <= 200


# ----- the mutation fuzzer ----------------------------------------------------------------------
TOKEN = re.compile(r"\w+|[^\w\s]+|\s+")
EXTREMES = ["0", "-1", "1 << 31", "1 << 32", "(1 << 63) - 1", "1 << 64", "4294967295", "65536"]


def mutate(text: str, rng: random.Random) -> str:
    """One to three edits: delete, duplicate or swap tokens or lines, or put an extreme number
    in place of one."""
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.5:
            parts = text.splitlines(keepends=True)
        else:
            parts = TOKEN.findall(text)
        if len(parts) < 2:
            break
        i, j = rng.randrange(len(parts)), rng.randrange(len(parts))
        edit = rng.choice(("delete", "duplicate", "swap", "number"))
        if edit == "delete":
            del parts[i]
        elif edit == "duplicate":
            parts.insert(j, parts[i])
        elif edit == "swap":
            parts[i], parts[j] = parts[j], parts[i]
        else:
            numbers = [k for k, p in enumerate(parts) if p.isdigit()] or [i]
            parts[rng.choice(numbers)] = rng.choice(EXTREMES)
        text = "".join(parts)
    return text


def fuzz_batch(files: list[Path], cwd: Path) -> str | None:
    """`check` then `compile` over a batch in one process each; what went wrong, or None."""
    for command in ("check", "compile"):
        names = [f.name for f in files]
        try:
            p = subprocess.run([sys.executable, "-m", "pybpf_uring", command, *names], cwd=cwd,
                               capture_output=True, text=True, errors="replace", timeout=20 + 3 * len(files))
        except subprocess.TimeoutExpired:
            return f"{command} hung"
        out = p.stdout + p.stderr
        if p.returncode < 0 or p.returncode not in (0, 1):
            return f"{command} exited {p.returncode}: {out[-1500:]}"
        if "internal error" in out or "Traceback" in out:
            return f"{command}: {out[out.find('internal error') if 'internal error' in out else out.find('Traceback'):][:1500]}"
        if len(p.stderr) > MAX_OUTPUT * len(files):
            return f"{command} printed {len(p.stderr)} bytes"
    return None


def bisect(files: list[Path], cwd: Path, why: str) -> tuple[Path, str]:
    """The case of a failed batch that fails alone; when none does, the batch's own failure
    (`why`), so a run that failed once (a timeout on a busy machine, say) still says how."""
    while len(files) > 1:
        half = files[:len(files) // 2]
        files = half if fuzz_batch(half, cwd) else files[len(files) // 2:]
    return files[0], fuzz_batch(files, cwd) or f"(flaky: the batch failed, no single case does) {why}"


@pytest.mark.kernel("bpf", "vmlinux", "tracefs")
def test_the_fuzz_corpus_is_a_module_the_kernel_loads():
    """The corpus is mutated from a correct module: each of its programs passes the verifier."""
    from pybpf_uring import compile_file
    for path in sorted(CORPUS.glob("*.py")):
        obj = compile_file(str(path))
        with obj.load() as live:
            assert sorted(live.programs) == sorted(p.name for p in obj.programs)


def test_mutated_samples_never_abort_hang_or_fail_internally(tmp_path):
    cases = int(os.environ.get("PYBPF_URING_FUZZ_CASES", "200"))
    rng = random.Random(int(os.environ.get("PYBPF_URING_FUZZ_SEED", "11")))
    sources = [p.read_text() for p in sorted(SAMPLES.glob("*.py")) + sorted(CORPUS.glob("*.py"))]
    files = []
    for n in range(cases):
        path = tmp_path / f"mutant{n:05}.py"
        path.write_text(mutate(rng.choice(sources), rng))
        files.append(path)
    failures = []
    for start in range(0, len(files), 25):
        batch = files[start:start + 25]
        if why := fuzz_batch(batch, tmp_path):
            case, why = bisect(batch, tmp_path, why)
            failures.append(f"{case.name}: {why}\n--- source ---\n{case.read_text()[:3000]}")
    assert not failures, "\n\n".join(failures[:3])
