"""The bpf_conformance suite, read from where BPF_CONFORMANCE_TESTS says, and run two ways.

Every case of the suite's `tests/` runs in-process and through the plugin protocol function; only the callx
group is excluded (not part of RFC 9669).  Every file of `negative/` must be refused: by the
reader (ConformanceFormatError) for malformed files, or -- for the two files whose only fault is
a wrong expectation -- by a failing outcome when run.  Without the suite those tests skip with a
reason naming the variable; the assembler and plugin tests that need no case file still run.
"""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from pybpf_uring.conformance import (CASES_ENV, CASES_MISSING, ConformanceFormatError, assemble,
                                     cases_dir, plugin_main, read_case, run_case, run_suite)

SUITE = cases_dir()
CASES = sorted(SUITE.glob("*.data")) if SUITE else []
NEGATIVE_DIR = SUITE.parent / "negative" if SUITE else None
NEGATIVE = sorted(p for p in NEGATIVE_DIR.glob("*") if p.is_file()) if NEGATIVE_DIR else []

# Files of negative/ that are well-formed but expect the wrong thing: caught only by running.
WRONG_EXPECTATION = {"error.data", "incorrect_return_value_high_bits.data"}

needs_suite = pytest.mark.skipif(SUITE is None, reason=CASES_MISSING)
needs_negative = pytest.mark.skipif(
    not (NEGATIVE_DIR and NEGATIVE_DIR.is_dir()),
    reason=CASES_MISSING if SUITE is None else f"the suite's negative/ is not beside {SUITE} ({CASES_ENV})")


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def _plugin(program: bytes, memory: bytes) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    argv = [_hex(memory)] if memory else []
    code = plugin_main(argv, io.StringIO(_hex(program)), out, err)
    return code, out.getvalue(), err.getvalue()


@needs_suite
@needs_negative
def test_suite_is_complete():
    assert len(CASES) == 313
    assert len(NEGATIVE) == 61


@needs_suite
@pytest.mark.parametrize("path", CASES or [None], ids=lambda p: p.stem if p else "no-suite")
def test_case_in_process(path):
    case = read_case(path)
    if case.needs_callx:
        pytest.skip("callx is not part of RFC 9669")
    outcome = run_case(case)
    assert outcome.passed, outcome.describe()


@needs_suite
@pytest.mark.parametrize("path", CASES or [None], ids=lambda p: p.stem if p else "no-suite")
def test_case_through_plugin(path):
    case = read_case(path)
    if case.needs_callx:
        pytest.skip("callx is not part of RFC 9669")
    code, out, err = _plugin(case.program, case.memory)
    assert (code, err) == (0, "")
    assert int(out.strip(), 16) == case.result


@needs_suite
def test_score_is_312_of_312():
    """The number the README quotes: every case but the callx group passes."""
    result = run_suite(SUITE)
    assert result.score == "312/312", [o.describe() for o in result.failures]
    assert [p.name for p in result.skipped] == ["callx.data"]


@needs_negative
@pytest.mark.parametrize("path", NEGATIVE or [None], ids=lambda p: p.name if p else "no-suite")
def test_negative_file_is_refused(path):
    if path.name in WRONG_EXPECTATION:
        outcome = run_case(read_case(path))
        assert not outcome.passed, outcome.describe()
        return
    with pytest.raises(ConformanceFormatError) as info:
        read_case(path)
    message = str(info.value)
    assert message.startswith(str(path)), message        # names the file
    assert "Traceback" not in message


@needs_negative
@pytest.mark.parametrize("name, line, fragment", [
    ("invalid_register.data", 4, "invalid register '%r50'"),
    ("invalid_imm32_dec_range.data", 5, "outside the signed 32-bit range"),
    ("invalid_imm32_hex_range.data", 5, "does not fit in 32 bits"),
    ("invalid_offset_range.data", 5, "offset +0x10000 does not fit in 16 bits"),
    ("invalid_label.data", 4, "undefined label 'NOT_A_LABEL'"),
    ("invalid_mnemonic.data", 5, "invalid mnemonic 'ldxq'"),
    ("invalid_operand_count.data", 4, "'lddw' takes 2 operands, got 1"),
    ("invalid_lock.data", 4, "invalid number of operands for lock"),
    ("invalid_unknown_directive.data", 4, "unknown section '-- Unknown directive'"),
    ("unused-exit-imm.data", 5, "exit (opcode 0x95): imm field is 1 but must be 0"),
    ("unused-stdw-src.data", 5, "stdw (opcode 0x7a): src field is 1 but must be 0"),
    ("empty.data", 0, "no sections, only comments"),
    ("empty_instructions.data", 0, "neither '-- asm' nor '-- raw'"),
])
def test_negative_messages_name_line_and_problem(name, line, fragment):
    with pytest.raises(ConformanceFormatError) as info:
        read_case(NEGATIVE_DIR / name)
    assert info.value.line == line
    assert fragment in info.value.message


@needs_suite
def test_raw_words_replace_asm_and_must_agree(tmp_path):
    case = read_case(SUITE / "lddw.data")
    assert case.program == bytes.fromhex("18000000887766550000000044332211" "9500000000000000")
    bad = tmp_path / "disagree.data"
    bad.write_text("-- asm\nexit\n-- raw\n0x0000000000000095\n0x0000000000000095\n-- result\n0x0\n")
    with pytest.raises(ConformanceFormatError, match="disagree"):
        read_case(bad)


def test_assembler_encodings():
    program, lines = assemble(enumerate([
        "mov32 %r0, -3", "lock fetch add32 [%r10-4], %r1", "ja32 +1", "exit",
        "jsgt %r1, %r2, exit", "ldxsh %r3, [%r1+0x10]", "movsx1664 %r4, %r5",
        "call local done", "done:", "exit",
    ], start=1))
    words = [program[i:i + 8].hex() for i in range(0, len(program), 8)]
    assert words == [
        "b4000000fdffffff",     # ALU | MOV | K, imm -3
        "c31afcff01000000",     # STX | ATOMIC | W, imm ADD | FETCH
        "0600000001000000",     # JMP32 | JA: gotol, offset in imm
        "9500000000000000",
        "6d21feff00000000",     # to the implicit label `exit` (slot 3): 3 - 4 - 1
        "8913100000000000",     # LDX | MEMSX | H
        "bf54100000000000",     # ALU64 | MOV | X, offset 16
        "8510000000000000",     # call local, src 1, imm 0 (next slot)
        "9500000000000000",
    ]
    assert lines == (1, 2, 3, 4, 5, 6, 7, 8, 10)


def test_plugin_protocol_errors():
    code, out, err = _plugin(bytes.fromhex("9500000001000000"), b"")
    assert code != 0 and out == "" and "imm field is 1" in err
    code, out, err = _plugin(bytes.fromhex("7910000000000000" "9500000000000000"), b"")
    assert code != 0 and "null pointer" in err     # r1 is 0 without memory
    out_buf, err_buf = io.StringIO(), io.StringIO()
    assert plugin_main([], io.StringIO("zz"), out_buf, err_buf) == 1
    assert "not a hex byte" in err_buf.getvalue()


def test_plugin_passes_memory_in_r1_and_length_in_r2():
    # ldxb r0, [r1+2]; add r0, r2; exit
    program = bytes.fromhex("7110020000000000" "0f20000000000000" "9500000000000000")
    code, out, err = _plugin(program, bytes([1, 2, 3, 4]))
    assert (code, out, err) == (0, "7\n", "")


def test_run_case_errors_point_at_the_case_line(tmp_path):
    case_file = tmp_path / "fault.data"
    case_file.write_text("-- asm\nmov %r0, 0\n# a comment\nldxw %r0, [%r1+8]\nexit\n"
                         "-- mem\n00 00 00 00\n-- result\n0x0\n")
    outcome = run_case(read_case(case_file))
    assert not outcome.passed
    assert outcome.error.startswith("fault.data:4: instruction 1 (")
    assert "read of 4 bytes at mem+8 is out of bounds (mem is 4 bytes)" in outcome.error


@needs_suite
@pytest.mark.parametrize("name", ["subnet.data", "lock_cmpxchg.data", "call_local.data"])
def test_module_runs_as_a_real_plugin_process(name):
    """As the runner calls it: memory (possibly empty) then its options as arguments."""
    case = read_case(SUITE / name)
    done = subprocess.run(
        [sys.executable, "-m", "pybpf_uring.conformance", "  ".join(f"{b:02x}" for b in case.memory),
         "--jit"], input="  ".join(f"{b:02x}" for b in case.program) + "\n",
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1])
    assert (done.returncode, done.stderr) == (0, "")
    assert int(done.stdout, 16) == case.result


# Reading never crashes: arbitrary edits of real case files either read or are refused with a
# ConformanceFormatError, and whatever reads also runs to an outcome (a fault is an outcome).
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_SAMPLES = [p.read_text() for p in CASES[::20]] if CASES else ["-- asm\nexit\n-- result\n0\n"]
_TOKENS = ["-- asm", "-- raw", "-- mem", "-- result", "-- error", "%r11", "[%r1+", "0x", "-",
           "lock", "fetch", ",", "#", "\n", " ", ":", "exit", "0xffffffffffffffffff", "ja -1",
           "lddw %r0, 1", "call local", "\t", "\x00", "é"]


@st.composite
def mangled_case(draw):
    text = draw(st.sampled_from(_SAMPLES))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        end = min(len(text), at + draw(st.integers(0, 12)))
        text = text[:at] + draw(st.sampled_from(_TOKENS) | st.text(max_size=4)) + text[end:]
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mangled_case())
def test_mangled_files_read_or_are_refused_cleanly(tmp_path, text):
    path = tmp_path / "mangled.data"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        case = read_case(path)
    except ConformanceFormatError as exc:
        assert str(exc).startswith(str(path))
        return
    run_case(case, budget=10_000)
