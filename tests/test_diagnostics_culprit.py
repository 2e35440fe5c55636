"""Diagnostics at the culprit: each error points at what causes it -- the recursive call, the
path that falls off a function's end, the misspelt name (with what was meant) -- and the
exact text a user sees, caret and notes included."""
import pytest

from pybpf_uring import compile_source
from pybpf_uring.diagnostics import CompileError

HEAD = ('from pybpf_uring import syscall, Struct, ArrayMap, u8, u32, u64, i32, i64\n\n'
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
        "misspelt_constant_and_map.py:12:5: error: i64 cannot be indexed\n    cunts[0] = LIMT\n    ^~~~~~~~\n"
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
}


@pytest.mark.parametrize("name", CASES)
def test_the_diagnostic_points_at_the_culprit(name):
    body, expected = CASES[name]
    with pytest.raises(CompileError) as info:
        compile_source(HEAD + body, f"{name}.py")
    assert str(info.value) == expected


@pytest.mark.parametrize("body", [
    'if ctx.a > 1:\n        return 1\n    else:\n        return 2\n',
    'if ctx.a > 1:\n        return 1\n    return 2\n',
    'for i in range(3):\n        ctx.a += i\n    return 0\n    ctx.a = 1\n',
])
def test_a_function_that_returns_on_every_path_compiles(body):
    obj = compile_source(HEAD + '@syscall\ndef p(ctx: Args) -> i32:\n    ' + body, "ok.py")
    assert [p.name for p in obj.programs] == ["p"]


@pytest.mark.kernel()
def test_a_call_chain_the_checker_accepts_loads():
    """Two frames of 240 bytes of structs each (480 together): the checker's sum stays under the
    verifier's, which counts the same chain (272 + 272 is refused by both, as tested above)."""
    obj = compile_source(HEAD + STACK_CHAIN.format(n=30), "chain.py")
    with obj.load() as live:
        assert live.programs["p"].test_run(ctx=b"\0" * 40).retval == 0
