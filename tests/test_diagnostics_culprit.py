"""Diagnostics at the culprit: each error points at what causes it -- the recursive call, the
path that falls off a function's end, the misspelt name (with what was meant) -- and the
exact text a user sees, caret and notes included."""
import glob
import os

import pytest

from pybpf_uring import compile_source
from kernel_harness import clang_object, diagnostic
from pybpf_uring.compiler import check_loops, emit
from pybpf_uring.compiler.check import check
from pybpf_uring.compiler.parse import parse_source
from pybpf_uring.diagnostics import CompileError
from pybpf_uring import VerifierError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HEAD = ('from pybpf_uring import syscall, Struct, ArrayMap, u8, u16, u32, u64, i32, i64\n\n'
        'class Args(Struct):\n    a: u64\n    b: u32[4]\n\n')

# A program and a subprogram, each with a struct of n u64s on its stack.
STACK_CHAIN = ('class Buf(Struct):\n    d: u64[{n}]\n\ndef g(n: u64) -> u64:\n    b = Buf()\n'
               '    b.d[n & 31] = n\n    return b.d[3]\n\n@syscall\ndef p(ctx: Args) -> i32:\n'
               '    a = Buf()\n    a.d[ctx.a & 31] = g(ctx.a)\n    return a.d[1]\n')

CASES = {
    'recursion_through_two_functions': (
        'def f(n: i64) -> i64:\n    if n <= 1:\n        return 1\n    return g(n) + 1\n\n'
        'def g(n: i64) -> i64:\n    return f(n - 1)\n\n'
        '@syscall\ndef p(ctx: Args) -> i32:\n    return f(5)\n',
        'recursion_through_two_functions.py:13:12: error: recursion is not allowed in BPF programs: f -> g -> f\n'
        '    return f(n - 1)\n           ^~~~~~~~\n'
        '  note: recursion_through_two_functions.py:10:12: f calls g\n'
        '  note: the verifier refuses a cycle of calls; rewrite it as a loop with a constant bound',
    ),
    'calls_nested_too_deep': (
        ''.join(f'def f{k}(n: i64) -> i64:\n    return {f"f{k + 1}(n + 1)" if k < 8 else "n"}\n\n' for k in range(1, 9))
        + '@syscall\ndef p(ctx: Args) -> i32:\n    return f1(1)\n',
        'calls_nested_too_deep.py:26:12: error: this call is frame 9 of p -> f1 -> f2 -> f3 -> f4 -> f5 -> f6 -> f7 '
        '-> f8; the verifier allows 8 frames\n    return f8(n + 1)\n           ^~~~~~~~~\n'
        '  note: call 1 level(s) less deep: fold a function into its caller',
    ),
    'too_many_parameters': (
        'def six(a: i64, b: i64, c: i64, d: i64, e: i64, f: i64) -> i64:\n    return a\n\n'
        '@syscall\ndef p(ctx: Args) -> i32:\n    return six(1, 2, 3, 4, 5, 6)\n',
        'too_many_parameters.py:7:49: error: six takes 6 parameters; BPF passes at most 5 in registers\n'
        'def six(a: i64, b: i64, c: i64, d: i64, e: i64, f: i64) -> i64:\n'
        '                                                ^~~~~~\n'
        '  note: group them in a Struct and pass that',
    ),
    'two_decorators': (
        '@syscall\n@syscall\ndef p(ctx: Args) -> i32:\n    return 0\n',
        'two_decorators.py:8:2: error: p has 2 decorators; a program has exactly one\n@syscall\n ^~~~~~~',
    ),
    'program_returns_none': (
        '@syscall\ndef p(ctx: Args) -> None:\n    return\n',
        'program_returns_none.py:8:21: error: a program returns an integer\ndef p(ctx: Args) -> None:\n'
        '                    ^~~~\n  note: write `-> i32`',
    ),
    'falls_off_when_if_is_false': (
        '@syscall\ndef p(ctx: Args) -> i32:\n    if ctx.a > 1:\n        return 1\n',
        'falls_off_when_if_is_false.py:9:8: error: when `ctx.a > 1` is false, p reaches its end without a return\n'
        '    if ctx.a > 1:\n       ^~~~~~~~~\n'
        '  note: Python would return None there, and p is declared -> i32: add `return 0` (or the value you mean) at the end of p',
    ),
    'falls_off_after_elif': (
        '@syscall\ndef p(ctx: Args) -> i32:\n    if ctx.a > 1:\n        return 1\n    elif ctx.a == 0:\n        return 2\n',
        'falls_off_after_elif.py:11:10: error: when `ctx.a == 0` is false, p reaches its end without a return\n'
        '    elif ctx.a == 0:\n         ^~~~~~~~~~\n'
        '  note: Python would return None there, and p is declared -> i32: add `return 0` (or the value you mean) at the end of p',
    ),
    'falls_off_inside_a_branch': (
        '@syscall\ndef p(ctx: Args) -> i32:\n    if ctx.a > 1:\n        ctx.a = 0\n    else:\n        return 2\n',
        'falls_off_inside_a_branch.py:10:9: error: after this statement, p reaches its end without a return\n'
        '        ctx.a = 0\n        ^~~~~~~~~\n'
        '  note: Python would return None there, and p is declared -> i32: add `return 0` (or the value you mean) at the end of p',
    ),
    'subprogram_falls_off_after_loop': (
        'def total(n: i64) -> i64:\n    t = 0\n    for i in range(4):\n        t += i\n\n'
        '@syscall\ndef p(ctx: Args) -> i32:\n    return total(1)\n',
        'subprogram_falls_off_after_loop.py:9:5: error: after this loop, total reaches its end without a return\n'
        '    for i in range(4):\n    ^\n'
        '  note: Python would return None there, and total is declared -> i64: add `return 0` (or the value you mean) at the end of total',
    ),
    'misspelt_local': (
        '@syscall\ndef p(ctx: Args) -> i32:\n    total = ctx.a\n    return totl\n',
        "misspelt_local.py:10:12: error: name 'totl' is not defined\n    return totl\n           ^~~~\n"
        "  note: did you mean 'total'?",
    ),
    'misspelt_constant_and_map': (
        'LIMIT = 8\ncounts = ArrayMap(u64, 4)\n\n@syscall\ndef p(ctx: Args) -> i32:\n    cunts[0] = LIMT\n    return 0\n',
        "misspelt_constant_and_map.py:12:5: error: name 'cunts' is not defined\n    cunts[0] = LIMT\n    ^~~~~\n"
        "  note: did you mean 'counts'?\n"
        "misspelt_constant_and_map.py:12:16: error: name 'LIMT' is not defined\n    cunts[0] = LIMT\n               ^~~~\n"
        "  note: did you mean 'LIMIT'?",
    ),
    'misspelt_subprogram': (
        'def bump(n: i64) -> i64:\n    return n + 1\n\n@syscall\ndef p(ctx: Args) -> i32:\n    return bmp(1)\n',
        "misspelt_subprogram.py:12:12: error: name 'bmp' is not defined\n    return bmp(1)\n           ^~~\n"
        "  note: did you mean 'bump'?",
    ),
    'misspelt_helper_not_imported': (
        '@syscall\ndef p(ctx: Args) -> i32:\n    return ktime_get_nss()\n',
        "misspelt_helper_not_imported.py:9:12: error: name 'ktime_get_nss' is not defined\n"
        "    return ktime_get_nss()\n           ^~~~~~~~~~~~~\n"
        "  note: did you mean 'ktime_get_ns' (from pybpf_uring import ktime_get_ns)?",
    ),
    'misspelt_builtin': (
        '@syscall\ndef p(ctx: Args) -> i32:\n    return mn(ctx.a, 7)\n',
        "misspelt_builtin.py:9:12: error: name 'mn' is not defined\n    return mn(ctx.a, 7)\n           ^~\n"
        "  note: did you mean 'min'?",
    ),
    'helper_not_imported': (
        '@syscall\ndef p(ctx: Args) -> i32:\n    return ktime_get_ns()\n',
        "helper_not_imported.py:9:12: error: name 'ktime_get_ns' is not defined\n"
        "    return ktime_get_ns()\n           ^~~~~~~~~~~~\n"
        "  note: import it: from pybpf_uring import ktime_get_ns",
    ),
    'misspelt_import': (
        'from pybpf_uring.uring import IOSQE_IO_LNK\n\n@syscall\ndef p(ctx: Args) -> i32:\n    return 0\n',
        "misspelt_import.py:7:1: error: pybpf_uring.uring has no name 'IOSQE_IO_LNK'\n"
        "from pybpf_uring.uring import IOSQE_IO_LNK\n^~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\n"
        "  note: did you mean 'IOSQE_IO_LINK' or 'IOSQE_IO_HARDLINK'?",
    ),
    # An undefined name is typed i64 to go on checking: "i64 cannot be indexed" would follow.
    'undefined_name_said_once': (
        'counts = ArrayMap(u64, 4)\n\n@syscall\ndef p(ctx: Args) -> i32:\n    cunts[1] += 1\n    return cunts[0] + 1\n',
        "undefined_name_said_once.py:11:5: error: name 'cunts' is not defined\n    cunts[1] += 1\n    ^~~~~\n"
        "  note: did you mean 'counts'?\n"
        "undefined_name_said_once.py:12:12: error: name 'cunts' is not defined\n    return cunts[0] + 1\n"
        "           ^~~~~\n  note: did you mean 'counts'?",
    ),
    'misspelt_module_function': (
        'from pybpf_uring import uring\n\n@syscall\ndef p(ctx: Args) -> i32:\n    return uring.quue_sqe(ctx)\n',
        "misspelt_module_function.py:11:12: error: module 'pybpf_uring.uring' has no attribute 'quue_sqe'\n"
        "    return uring.quue_sqe(ctx)\n           ^~~~~~~~~~~~~~\n  note: did you mean 'queue_sqe'?",
    ),
    'misspelt_module_constant': (
        'import pybpf_uring.uring as uring\n\n@syscall\ndef p(ctx: Args) -> i32:\n    return uring.IOSQE_IO_LNK + 1\n',
        "misspelt_module_constant.py:11:12: error: module 'pybpf_uring.uring' has no attribute 'IOSQE_IO_LNK'\n"
        "    return uring.IOSQE_IO_LNK + 1\n           ^~~~~~~~~~~~~~~~~~\n"
        "  note: did you mean 'IOSQE_IO_LINK' or 'IOSQE_IO_HARDLINK'?",
    ),
    'module_function_as_a_value': (
        'from pybpf_uring import uring\n\n@syscall\ndef p(ctx: Args) -> i32:\n    return uring.queue_sqe + 1\n',
        "module_function_as_a_value.py:11:12: error: 'uring.queue_sqe' is a helper and cannot be used as a value\n"
        "    return uring.queue_sqe + 1\n           ^~~~~~~~~~~~~~~",
    ),
    'stack_local_past_the_frame': (
        'class Buf(Struct):\n    d: u64[34]\n\n@syscall\ndef p(ctx: Args) -> i32:\n    c = Args()\n'
        '    a = Buf()\n    b = Buf()\n    a.d[1] = b.d[2]\n    return a.d[1]\n',
        "stack_local_past_the_frame.py:14:5: error: 'b' (Buf, 272 bytes) takes p's stack to 568 bytes; BPF allows 512\n"
        "    b = Buf()\n    ^~~~~~~~~\n"
        "  note: p's structs and arrays: c: Args, 24 bytes (line 12); a: Buf, 272 bytes (line 13); b: Buf, 272 bytes "
        "(line 14); keep large data in a map value (m.lookup(k)) instead of locals",
    ),
    'stack_of_a_call_chain': (
        STACK_CHAIN.format(n=34),
        "stack_of_a_call_chain.py:18:23: error: this call takes the stack of p -> g to 544 bytes; the verifier "
        "allows 512 for a chain of calls together\n"
        "    a.d[ctx.a & 31] = g(ctx.a)\n                      ^~~~~~~~\n"
        "  note: bytes per frame, each rounded up to 16 as the verifier does: p 272, g 272; keep large data in a map "
        "value (m.lookup(k)) instead of locals, or call g from a shallower frame",
    ),
    # A reference copied out before its None test: the verifier refused the load of r0 (NULL).
    'reference_read_before_its_none_test': (
        'm = ArrayMap(u64, 4)\n\n@syscall\ndef p(ctx: Args) -> i32:\n    r = m.lookup(1)\n'
        '    ctx.a = r\n    return 0\n',
        "reference_read_before_its_none_test.py:12:13: error: r may be None here\n    ctx.a = r\n"
        "            ^\n  note: check first: `if r is not None:`",
    ),
    # A map whose declaration is refused is still the map its uses name: no "not defined".
    'bad_ring_buffer_size_said_once': (
        'from pybpf_uring import RingBuf\nrb = RingBuf(1000)\n\n@syscall\ndef p(ctx: Args) -> i32:\n    rb.output(ctx.a)\n    return 0\n',
        "bad_ring_buffer_size_said_once.py:8:14: error: RingBuf: a ring buffer's size is a power of 2 and a "
        "multiple of the page size (4096), not 1000\nrb = RingBuf(1000)\n             ^~~~\n"
        "  note: e.g. RingBuf(262144) (256 KiB): a power of 2, a multiple of 4096",
    ),
    'bad_max_entries_said_once': (
        'm = ArrayMap(u64, 0)\n\n@syscall\ndef p(ctx: Args) -> i32:\n    m[1] += 1\n    return 0\n',
        "bad_max_entries_said_once.py:7:19: error: max_entries must be a positive integer constant\n"
        "m = ArrayMap(u64, 0)\n                  ^",
    ),
    'misspelt_global_statement': (
        'total: u64 = 0\n\n@syscall\ndef p(ctx: Args) -> i32:\n    global totl\n    totl += 1\n    return 0\n',
        "misspelt_global_statement.py:11:5: error: global 'totl' is not declared at module level\n"
        "    global totl\n    ^~~~~~~~~~~\n  note: did you mean 'total'?",
    ),
    'array_global_with_a_computed_value': (
        'total: u64 = 0\nhist: u64[4] = [1, 2, total, 4]\n\n@syscall\ndef p(ctx: Args) -> i32:\n    return hist[0]\n',
        "array_global_with_a_computed_value.py:8:23: error: global 'hist' needs constant values: numbers, "
        "module-level constants and expressions of them\nhist: u64[4] = [1, 2, total, 4]\n"
        "                      ^~~~~\n  note: write a constant here; the program or the host "
        "(live.globals.hist) can set other values after loading",
    ),
    'array_global_of_the_wrong_length': (
        'hist: u64[8] = [0] * 4\n\n@syscall\ndef p(ctx: Args) -> i32:\n    return hist[0]\n',
        "array_global_of_the_wrong_length.py:7:16: error: u64[8] needs 8 values, got 4\n"
        "hist: u64[8] = [0] * 4\n               ^~~~~~~\n  note: list every element, or repeat one: [0] * 8",
    ),
    # A misspelt field is reported once: not also "i64 cannot be indexed" around it.
    'misspelt_field_said_once': (
        'class Ev(Struct):\n    pid: u32\n    comm: u8[16]\n\n@syscall\ndef p(ctx: Args) -> i32:\n'
        '    e = Ev()\n    return e.com[ctx.a & 15] + 1\n',
        "misspelt_field_said_once.py:14:12: error: struct Ev has no field 'com'\n"
        "    return e.com[ctx.a & 15] + 1\n           ^~~~~\n  note: did you mean 'comm'? its fields are: pid, comm",
    ),
    'submit_of_a_struct_said_once': (
        'from pybpf_uring import RingBuf\nrb = RingBuf(4096)\n\n@syscall\ndef p(ctx: Args) -> i32:\n'
        '    e = Args()\n    rb.submit(e)\n    return 0\n',
        "submit_of_a_struct_said_once.py:13:15: error: submit() takes a record from rb.reserve(T), not Args\n"
        "    rb.submit(e)\n              ^",
    ),
    # An array map has no such slot: a read is always 0 and a write is lost, silently.
    'array_map_key_past_the_last_slot': (
        'counts = ArrayMap(u64, 4)\n\n@syscall\ndef p(ctx: Args) -> i32:\n    counts[3] += 1\n    counts[4] += 1\n'
        '    return 0\n',
        "array_map_key_past_the_last_slot.py:12:12: error: key 4 is out of range for ArrayMap(..., 4) (0 to 3)\n"
        "    counts[4] += 1\n           ^\n  note: an array map has max_entries slots, numbered from 0",
    ),
    'min_of_structs': (
        '@syscall\ndef p(ctx: Args) -> i32:\n    e = Args()\n    return min(e, ctx)\n',
        "min_of_structs.py:10:16: error: min() takes integers, not Args\n    return min(e, ctx)\n"
        "               ^\n  note: pass a field of it: e.a\n"
        "min_of_structs.py:10:19: error: min() takes integers, not ref[Args]\n    return min(e, ctx)\n"
        "                  ^~~\n  note: pass a field of it: ctx.a",
    ),
}


@pytest.mark.kernel()
def test_an_array_global_written_as_zeros_loads_zeroed():
    """`[0] * 8` and `[[0] * 3] * 2` are what an array global without a value is (zeros), written
    as a local's zeros are; the kernel sees them zeroed and the program writes them."""
    obj = compile_source(HEAD + 'history: u64[8] = [0] * 8\ngrid: u32[3][2] = [[0, 0, 0], [0] * 3]\n\n'
                         '@syscall\ndef p(ctx: Args) -> i32:\n    history[ctx.a & 7] += 5\n'
                         '    grid[1][2] = 7\n    return history[3] + grid[0][0] + grid[1][2]\n', "zeros.py")
    with obj.load() as live:
        assert live.programs["p"].test_run(ctx=(3).to_bytes(8, "little") + bytes(16)).retval == 12
        assert list(live.globals.history) == [0, 0, 0, 5, 0, 0, 0, 0]


@pytest.mark.parametrize("name", CASES)
def test_the_diagnostic_points_at_the_culprit(name):
    body, expected = CASES[name]
    assert diagnostic(HEAD + body, f"{name}.py") == expected


@pytest.mark.parametrize("body", [
    'if ctx.a > 1:\n        return 1\n    else:\n        return 2\n',
    'if ctx.a > 1:\n        return 1\n    return 2\n',
    'for i in range(3):\n        ctx.a += i\n    return 0\n    ctx.a = 1\n',
])
def test_a_function_that_returns_on_every_path_compiles(body):
    obj = compile_source(HEAD + '@syscall\ndef p(ctx: Args) -> i32:\n    ' + body, "ok.py")
    assert [p.name for p in obj.programs] == ["p"]


@pytest.mark.kernel()
def test_a_module_constant_is_folded_where_it_is_written():
    """`uring.IOSQE_IO_LINK` (the module imported either way) is the constant itself, as Python
    reads it: the kernel runs the folded values."""
    for head in ("import pybpf_uring.uring as uring\n", "from pybpf_uring import uring\n"):
        obj = compile_source(HEAD + head + '@syscall\ndef p(ctx: Args) -> i32:\n'
                             '    ctx.a = uring.IOSQE_IO_LINK | uring.IORING_OP_READ\n'
                             '    return uring.IOSQE_IO_HARDLINK + 1\n', "consts.py")
        with obj.load() as live:
            run = live.programs["p"].test_run(ctx=b"\0" * 24)
        assert (run.retval, int.from_bytes(run.ctx[:8], "little")) == (8 + 1, 4 | 22)


@pytest.mark.kernel()
def test_a_call_chain_the_checker_accepts_loads():
    """Two frames of 240 bytes of structs each (480 together): the checker's sum stays under the
    verifier's, which counts the same chain (272 + 272 is refused by both, as tested above)."""
    obj = compile_source(HEAD + STACK_CHAIN.format(n=30), "chain.py")
    with obj.load() as live:
        assert live.programs["p"].test_run(ctx=b"\0" * 40).retval == 0


def warnings_of(body: str, name: str) -> list[str]:
    src = HEAD + 'class Tagged(Struct):\n    a: u64\n    tag: u8\n    b: u32[4]\n\n' \
        '@syscall\ndef p(ctx: Tagged) -> i32:\n' + body
    return [w.render() for w in check(parse_source(src, f"{name}.py")).warnings]


WARNINGS = {
    'u64_into_u8_field': (
        '    ctx.tag = ctx.a\n    return 0\n',
        ["u64_into_u8_field.py:14:15: warning: ctx.a is a u64, stored in ctx.tag, a u8: only its low 8 bits are kept\n"
         "    ctx.tag = ctx.a\n              ^~~~~\n"
         "  note: write the conversion to show it is meant: `ctx.tag = u8(ctx.a)`"],
    ),
    'u64_into_u16_local': (
        '    x: u16 = ctx.a >> 8\n    return x\n',
        ["u64_into_u16_local.py:14:14: warning: ctx.a >> 8 is a u64, stored in x, a u16: only its low 16 bits are kept\n"
         "    x: u16 = ctx.a >> 8\n             ^~~~~~~~~~\n"
         "  note: write the conversion to show it is meant: `x: u16 = u16(ctx.a >> 8)`"],
    ),
    'u64_into_u32_element': (
        '    b = ctx.b\n    b[1] = ctx.a\n    return b[1]\n',
        ["u64_into_u32_element.py:15:12: warning: ctx.a is a u64, stored in b[1], a u32: only its low 32 bits are kept\n"
         "    b[1] = ctx.a\n           ^~~~~\n"
         "  note: write the conversion to show it is meant: `b[1] = u32(ctx.a)`"],
    ),
    'signed_local_against_u64': (
        '    n: i64 = 0\n    n -= ctx.tag\n    if n < ctx.a:\n        return 1\n    return 0\n',
        ["signed_local_against_u64.py:16:8: warning: comparison of i64 < u64 is done as u64: a negative n compares "
         "as a large value\n    if n < ctx.a:\n       ^\n"
         "  note: convert both sides to a signed type, e.g. i64(...) < i64(...)"],
    ),
    # What the checker proves fits, or non-negative, says nothing.
    'quiet_when_the_value_fits': (
        '    ctx.tag = 200\n    ctx.tag = ctx.a & 0xff\n    ctx.tag = ctx.a % 200\n    ctx.tag = ctx.a >> 56\n'
        '    ctx.tag = u8(ctx.a)\n    ctx.b[0] = ctx.tag\n    n: i64 = ctx.a\n'
        '    for i in range(4):\n        ctx.tag = i * 60\n    return 0\n',
        [],
    ),
    'quiet_when_the_signed_side_is_not_negative': (
        '    t = 0\n    for i in range(16):\n        if i >= ctx.a:\n            break\n        t += 1\n'
        '    if i64(ctx.b[0]) < ctx.a:\n        t += 1\n    if (t & 7) < ctx.a:\n        t += 1\n'
        '    if t % 5 < ctx.a:\n        t += 1\n    return t\n',
        [],
    ),
    # min/max/abs and ?: are bounded by their operands: min(ctx.a, 255) fits a u8.
    'quiet_when_min_max_abs_or_a_choice_fits': (
        '    ctx.tag = min(ctx.a, 255)\n    ctx.tag = max(ctx.a & 7, 3)\n    ctx.tag = abs(i64(ctx.a & 127) - 100)\n'
        '    ctx.tag = 7 if ctx.a else ctx.a & 15\n    return 0\n',
        [],
    ),
    'min_that_can_exceed_the_field': (
        '    ctx.tag = min(i64(ctx.a), 255)\n    return 0\n',
        ["min_that_can_exceed_the_field.py:14:15: warning: min(i64(ctx.a), 255) is a i64, stored in ctx.tag, a u8: "
         "only its low 8 bits are kept\n    ctx.tag = min(i64(ctx.a), 255)\n              ^~~~~~~~~~~~~~~~~~~~\n"
         "  note: write the conversion to show it is meant: `ctx.tag = u8(min(i64(ctx.a), 255))`"],
    ),
}


@pytest.mark.parametrize("name", WARNINGS)
def test_lossy_integer_conversions_warn_exactly_where_a_value_can_be_lost(name):
    body, expected = WARNINGS[name]
    assert warnings_of(body, name) == expected


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "samples", "*.py"))))
def test_the_samples_compile_without_warnings(path):
    with open(path) as f:
        assert [w.render() for w in check(parse_source(f.read(), path)).warnings] == []


# ----- the verifier's walk: the loop that makes a program too large ---------------------------
SPIN = ('def spin(x: u64) -> u64:\n    t = x\n    for j in range(3000):\n        t = t * 3 + j\n'
        '        if t & 1024:\n            t += 7\n    return t\n\n'
        '@syscall\ndef p(ctx: Args) -> i32:\n    s = ctx.a\n    for i in range(200):\n        s += spin(s + i)\n'
        '    ctx.a = s\n    return 0\n')
BRANCHY = ('@syscall\ndef p(ctx: Args) -> i32:\n    t = ctx.a\n    for j in range({n}):\n        if t & 1024:\n'
           '            t += 7\n        t = t * 3 + j\n    ctx.a = t\n    return 0\n')


def test_a_loop_calling_a_looping_subprogram_is_too_large_at_the_loop():
    """The subprogram's walk counts at each call: 200 calls of a 3000-pass loop compiled, and
    the kernel refused it ("The sequence of 8193 jumps is too complex")."""
    assert diagnostic(HEAD + SPIN, "spin.py") == (
        "spin.py:18:5: error: the verifier would walk ~37212006 instructions of this loop (200 passes × "
        "~186060 instructions, its nested loops and calls included); the kernel stops at 1000000\n"
        "    for i in range(200):\n    ^\n"
        "  note: run fewer passes (a smaller bound), or split the work across calls: keep where to resume "
        "in a map and do a bounded share per call")


def test_a_loop_leaving_too_many_branches_pending_is_refused_at_the_loop():
    assert diagnostic(HEAD + BRANCHY.format(n=9000), "branchy.py") == (
        "branchy.py:10:5: error: the verifier would keep ~9000 branches of this loop pending (9000 passes "
        "× 1 conditional branches); the kernel stops at 8192 (\"The sequence of 8193 jumps is too complex\")\n"
        "    for j in range(9000):\n    ^\n"
        "  note: take the condition out of the loop where you can (a mask, min() or max() instead of an if), "
        "or run fewer passes (a smaller bound), or split the work across calls: keep where to resume in a "
        "map and do a bounded share per call")


@pytest.mark.kernel("syscall_programs")
def test_a_branchy_loop_under_the_limit_loads_and_computes():
    obj = compile_source(HEAD + BRANCHY.format(n=8000), "branchy.py")
    t = 5
    for j in range(8000):
        if t & 1024:
            t += 7
        t = (t * 3 + j) % 2**64
    with obj.load() as live:
        out = live.programs["p"].test_run(ctx=(5).to_bytes(8, "little") + bytes(16)).ctx
        assert int.from_bytes(out[:8], "little") == t


# ----- the verifier's complexity refusals, advised by what the loop has ------------------------
C_LOOPS = {
    "unbounded": ("unsigned long long s = 1;\n"
                  "\t#pragma clang loop unroll(disable)\n"
                  "\tfor (unsigned long long i = 0; i < ctx->n; i++)\n"
                  "\t\ts = s * 3 + (s >> 7);\n"),
    "bounded": ("unsigned long long s = ctx->n;\n"
                "\t#pragma clang loop unroll(disable)\n"
                "\tfor (int i = 0; i < 9000; i++) {\n"
                "\t\tif (s & 1024)\n\t\t\ts += 7;\n"
                "\t\ts = s * 3 + i;\n\t}\n"),
}
C_PROGRAM = ('struct args {{ unsigned long long n; unsigned long long out; }};\n\n'
             '__attribute__((section("syscall"), used))\nint {name}(struct args *ctx)\n{{\n\t{body}'
             '\tctx->out = s;\n\treturn 0;\n}}\n\n'
             'char _license[] __attribute__((section("license"), used)) = "GPL";\n')


def verifier_refusal(obj) -> list[str]:
    with pytest.raises(VerifierError) as info:
        with obj.load():
            pass
    return str(info.value).splitlines()


@pytest.mark.kernel("syscall_programs")
def test_a_bounded_loop_too_complex_for_the_verifier_is_advised_to_do_less(monkeypatch, tmp_path):
    """The checker refuses this loop (above); with its rule lifted, the kernel refuses it too,
    and the refusal is at the loop, saying that it is bounded and what to do instead."""
    monkeypatch.setattr(check_loops, "MAX_PENDING_BRANCHES", 1 << 30)
    path = str(tmp_path / "branchy.py")
    lines = verifier_refusal(compile_source(HEAD + BRANCHY.format(n=9000), path))
    assert lines[:4] == [
        f"{path}:10:5: error: the kernel verifier rejected program 'p': E2BIG (too large (program, map, "
        "or the verifier's complexity limit)): The sequence of 8193 jumps is too complex.",
        "    for j in range(9000):",
        "    ^",
        "  note: this loop has a constant bound (its counter stops at 9000), but walking every pass of it, each "
        "path through its body separately, takes the verifier past its limit: lower the bound, take branches "
        "out of the body, or split the work across calls (keep where to resume in a map and do a bounded "
        "share per call)"]


@pytest.mark.tools("clang")
@pytest.mark.kernel("syscall_programs")
@pytest.mark.parametrize("name", C_LOOPS)
def test_the_verifiers_complexity_refusal_of_a_c_loop_is_advised_by_its_bound(tmp_path, name):
    lines = verifier_refusal(clang_object(tmp_path, name, C_PROGRAM.format(name=name, body=C_LOOPS[name])))
    src = tmp_path / f"{name}.c"
    header = {"unbounded": " for (unsigned long long i = 0; i < ctx->n; i++)",
              "bounded": " for (int i = 0; i < 9000; i++) {"}[name]
    assert lines[0].startswith(f"{src}:8:2: error: the kernel verifier rejected program '{name}': E2BIG")
    assert lines[1:3] == [header, " ^"]
    assert lines[3] == {
        "unbounded": "  note: the verifier walks this loop pass by pass and cannot see it end: give it a "
                     "constant bound it can prove (loop to a constant maximum and stop early)",
        "bounded": "  note: this loop has a constant bound (its counter stops at 8999), but walking every "
                   "pass of it, each path through its body separately, takes the verifier past its limit: "
                   "lower the bound, take branches out of the body, or split the work across calls (keep "
                   "where to resume in a map and do a bounded share per call)"}[name]


@pytest.mark.tools("clang")
@pytest.mark.kernel("syscall_programs")
def test_the_emitted_stack_of_a_call_chain_is_measured_as_the_verifier_adds_it(tmp_path):
    """The frames of the emitted code, spills included, added up along each chain of calls:
    clang-22's two 272-byte frames are refused by emit's measure and by the kernel alike."""
    body = ('struct args { unsigned long long a; unsigned long long out; };\n\n'
            'static __attribute__((noinline)) unsigned long long g(unsigned long long n)\n{\n'
            '\tvolatile unsigned long long b[34];\n\tb[n & 31] = n;\n\treturn b[3];\n}\n\n'
            '__attribute__((section("syscall"), used)) int p(struct args *ctx)\n{\n'
            '\tvolatile unsigned long long a[34];\n\ta[ctx->a & 31] = g(ctx->a);\n\tctx->out = a[1];\n'
            '\treturn 0;\n}\n\nchar _license[] __attribute__((section("license"), used)) = "GPL";\n')
    obj = clang_object(tmp_path, "chain", body)
    with pytest.raises(CompileError) as info:
        emit.check_stack((tmp_path / "chain.o").read_bytes(), "chain.c")
    assert str(info.value) == (
        "error: chain.c: the calls p -> g use 544 bytes of stack together after optimisation; the verifier "
        "allows 512\n  note: bytes per frame, each rounded up to 16 as the verifier does: p 272, g 272; keep "
        "large structs in a map value (m.lookup(k)) instead of locals")
    assert "combined stack size of 2 calls is 544" in verifier_refusal(obj)[0]
