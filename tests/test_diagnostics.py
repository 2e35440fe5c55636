"""Exact diagnostics for rejected programs: the text a user sees, caret and hint included."""
import pytest

from kernel_harness import diagnostic

HEAD = 'from pybpf_uring import syscall, iouring, Struct, ArrayMap, HashMap, u8, u32, u64, i32, i64\nfrom pybpf_uring.uring import IoUringCtx, Cqe, Sqe, reap_cqe, queue_sqe\n\nclass Args(Struct):\n    a: u64\n    b: u32[4]\n\n'

CASES = {
    'ctx_variable_index': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    i = ctx.a\n    return ctx.b[i]\n',
        'ctx_variable_index.py:11:18: error: the ctx cannot be indexed by a variable (the verifier rejects a ctx access at a variable offset)\n    return ctx.b[i]\n                 ^\n  note: copy it to the stack first: `local = ctx.b` then `local[i]`',
    ),
    'runtime_loop_bound': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    t = 0\n    for i in range(ctx.a):\n        t += i\n    return t\n',
        'runtime_loop_bound.py:11:20: error: the loop bound must be a constant the compiler can prove\n    for i in range(ctx.a):\n                   ^~~~~\n  note: loop to a constant maximum and stop early: `for i in range(MAX):` with `if i >= ctx.a: break`',
    ),
    'while_unbounded': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    x = ctx.a\n    while x > 0:\n        x = x // 2\n    return 0\n',
        'while_unbounded.py:11:11: error: cannot prove that this while loop ends\n    while x > 0:\n          ^~~~~\n  note: write `while i < N:` with a constant N and an unconditional `i += 1` in the body (no continue), or use `for i in range(N):`',
    ),
    'while_with_continue': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    i = 0\n    while i < 10:\n        if ctx.a == 1:\n            continue\n        i += 1\n    return 0\n',
        'while_with_continue.py:11:11: error: cannot prove that this while loop ends\n    while i < 10:\n          ^~~~~~\n  note: write `while i < N:` with a constant N and an unconditional `i += 1` in the body (no continue), or use `for i in range(N):`',
    ),
    'literal_does_not_fit': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    x: u8 = 300\n    return x\n',
        'literal_does_not_fit.py:10:13: error: 300 does not fit in u8\n    x: u8 = 300\n            ^~~\n  note: write u8(300) to wrap it explicitly',
    ),
    'undefined_name': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    return missing + 1\n',
        "undefined_name.py:10:12: error: name 'missing' is not defined\n    return missing + 1\n           ^~~~~~~\n  note: assign it before use, or declare it at module level",
    ),
    'unimported_type': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    x: i16 = 1\n    return x\n',
        "unimported_type.py:10:8: error: 'i16' is not a type\n    x: i16 = 1\n       ^~~\n  note: import it: from pybpf_uring import i16",
    ),
    'python_int_annotation': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    x: int = 1\n    return x\n',
        "python_int_annotation.py:10:8: error: 'int' is not a type\n    x: int = 1\n       ^~~\n  note: Python's int has no width in BPF: use i64 (or another fixed-width type)",
    ),
    'unknown_field': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    return ctx.c\n',
        "unknown_field.py:10:12: error: struct Args has no field 'c'\n    return ctx.c\n           ^~~~~\n  note: its fields are: a, b",
    ),
    'constant_index_out_of_range': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    b = ctx.b\n    return b[4]\n',
        'constant_index_out_of_range.py:11:14: error: index 4 is out of range for u32[4] (0 to 3)\n    return b[4]\n             ^',
    ),
    'shift_out_of_range': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    return ctx.a << 64\n',
        'shift_out_of_range.py:10:21: error: shift count 64 is out of range for u64 (0 to 63)\n    return ctx.a << 64\n                    ^~',
    ),
    'division_by_zero': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    return ctx.a // 0\n',
        'division_by_zero.py:10:21: error: division by zero\n    return ctx.a // 0\n                    ^',
    ),
    'recursion': (
        'def fact(n: i64) -> i64:\n    if n <= 1:\n        return 1\n    return n * fact(n - 1)\n\n@syscall\ndef f(ctx: Args) -> i32:\n    return fact(5)\n',
        'recursion.py:11:16: error: recursion is not allowed in BPF programs: fact -> fact\n    return n * fact(n - 1)\n               ^~~~~~~~~~~\n  note: the verifier refuses a cycle of calls; rewrite it as a loop with a constant bound',
    ),
    'stack_too_big': (
        'class Big(Struct):\n    data: u64[80]\n\n@syscall\ndef f(ctx: Args) -> i32:\n    a = Big()\n    return 0\n',
        "stack_too_big.py:13:5: error: 'a' (Big, 640 bytes) takes f's stack to 640 bytes; BPF allows 512\n    a = Big()\n    ^~~~~~~~~\n  note: f's structs and arrays: a: Big, 640 bytes (line 13); keep large data in a map value (m.lookup(k)) instead of locals",
    ),
    'unchecked_lookup': (
        'm = HashMap(u32, u64, 8)\n\n@syscall\ndef f(ctx: Args) -> i32:\n    r = m.lookup(1)\n    r[0] += 1\n    return 0\n',
        'unchecked_lookup.py:13:5: error: r may be None here\n    r[0] += 1\n    ^\n  note: check first: `if r is not None:`',
    ),
    'helper_wrong_program': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    c = Cqe()\n    reap_cqe(ctx, 1, c)\n    return 0\n',
        'helper_wrong_program.py:11:5: error: reap_cqe() cannot be called from a @syscall program\n    reap_cqe(ctx, 1, c)\n    ^~~~~~~~\n  note: it is available in @iouring programs',
    ),
    'helper_wrong_struct': (
        '@iouring\ndef f(ctx: IoUringCtx) -> i32:\n    c = Cqe()\n    queue_sqe(ctx, c)\n    return 0\n',
        'helper_wrong_struct.py:11:20: error: queue_sqe() needs a Sqe, not Cqe\n    queue_sqe(ctx, c)\n                   ^\n  note: e.g. `buf = Sqe()` then queue_sqe(..., buf)',
    ),
    'iouring_wrong_ctx': (
        '@iouring\ndef f(ctx: Args) -> i32:\n    return 0\n',
        "iouring_wrong_ctx.py:9:12: error: an @iouring program's ctx is an IoUringCtx\ndef f(ctx: Args) -> i32:\n           ^~~~\n  note: from pybpf_uring.uring import IoUringCtx",
    ),
    'missing_return_type': (
        '@syscall\ndef f(ctx: Args):\n    return 0\n',
        'missing_return_type.py:9:1: error: program f needs a return type\ndef f(ctx: Args):\n^\n  note: write `def f(...) -> i32:`',
    ),
    'assign_to_ctx': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    ctx = 1\n    return 0\n',
        'assign_to_ctx.py:10:5: error: the ctx parameter cannot be reassigned\n    ctx = 1\n    ^~~',
    ),
    'map_wrong_arity': (
        'm = ArrayMap(u64)\n\n@syscall\ndef f(ctx: Args) -> i32:\n    return 0\n',
        'map_wrong_arity.py:8:5: error: ArrayMap takes 2 positional arguments\nm = ArrayMap(u64)\n    ^~~~~~~~~~~~~\n  note: write ArrayMap(value_type, max_entries)',
    ),
    'type_change': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    x = 1\n    x = Args()\n    return 0\n',
        'type_change.py:11:9: error: assigned value has type Args, expected i64\n    x = Args()\n        ^~~~~~',
    ),
    'break_outside_loop': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    break\n    return 0\n',
        "break_outside_loop.py:10:5: error: 'break' outside a loop\n    break\n    ^~~~~",
    ),
    'program_calls_program': (
        '@syscall\ndef g(ctx: Args) -> i32:\n    return 0\n\n@syscall\ndef f(ctx: Args) -> i32:\n    return g(ctx)\n',
        'program_calls_program.py:14:12: error: g is a program; programs cannot call each other\n    return g(ctx)\n           ^\n  note: move the shared code into an undecorated function and call that',
    ),
    'call_unknown_function': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    return sum(ctx.b)\n',
        "call_unknown_function.py:10:12: error: 'sum' cannot be called in a BPF program\n    return sum(ctx.b)\n           ^~~\n  note: call a helper, a prep_* function, a cast like u32(x), a Struct, or a function of this module",
    ),
    'no_program': (
        'def helper(x: i64) -> i64:\n    return x\n',
        'error: no_program.py: no BPF program found\n  note: decorate a function with @syscall, @iouring, @socket_filter or @tracepoint(...)',
    ),
    'del_array_map': (
        'm = ArrayMap(u64, 4)\n\n@syscall\ndef f(ctx: Args) -> i32:\n    del m[0]\n    return 0\n',
        'del_array_map.py:12:5: error: ArrayMap elements cannot be deleted (the kernel keeps every slot)\n    del m[0]\n    ^~~~~~~~\n  note: store 0 instead, or use a HashMap',
    ),
    'too_many_print_args': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    print(ctx.a, ctx.a, ctx.a, ctx.a)\n    return 0\n',
        'too_many_print_args.py:10:5: error: print() shows at most 3 integers (bpf_trace_printk); got 4\n    print(ctx.a, ctx.a, ctx.a, ctx.a)\n    ^~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\n  note: split it into several print() calls',
    ),
    'import_other_module': (
        'import os\n\n@syscall\ndef f(ctx: Args) -> i32:\n    return 0\n',
        "import_other_module.py:8:1: error: cannot import 'os' into a BPF module\nimport os\n^~~~~~~~~\n  note: import from pybpf_uring or pybpf_uring.uring",
    ),
    'expression_statement': (
        '@syscall\ndef f(ctx: Args) -> i32:\n    ctx.a + 1\n    return 0\n',
        'expression_statement.py:10:5: error: an arithmetic expression has no effect here\n    ctx.a + 1\n    ^~~~~~~~~\n  note: assign it, or call a helper or subprogram',
    ),
    'subprogram_ctx_not_the_ctx': (
        'def kick(ctx: IoUringCtx) -> i32:\n    sqe = Sqe()\n    return queue_sqe(ctx, sqe)\n\n@iouring\ndef f(ctx: IoUringCtx) -> i32:\n    other = IoUringCtx()\n    return kick(other)\n',
        "subprogram_ctx_not_the_ctx.py:15:17: error: kick() needs the program's ctx for its parameter ctx\n    return kick(other)\n                ^~~~~\n  note: pass ctx itself",
    ),
    'subprogram_ctx_wrong_kind': (
        'def kick(ctx: IoUringCtx) -> i32:\n    sqe = Sqe()\n    return queue_sqe(ctx, sqe)\n\n@syscall\ndef f(ctx: Args) -> i32:\n    return kick(ctx)\n',
        'subprogram_ctx_wrong_kind.py:14:17: error: kick() takes the ctx of an @iouring program (ctx: IoUringCtx); it cannot be called from a @syscall program\n    return kick(ctx)\n                ^~~\n  note: call kick() from @iouring programs only',
    ),
    'subprogram_helper_without_ctx': (
        'def kick(ud: u64) -> i32:\n    sqe = Sqe()\n    sqe.user_data = ud\n    return queue_sqe(ctx, sqe)\n\n@iouring\ndef f(ctx: IoUringCtx) -> i32:\n    return kick(1)\n',
        "subprogram_helper_without_ctx.py:11:22: error: queue_sqe() needs the program's ctx here\n    return queue_sqe(ctx, sqe)\n                     ^~~\n  note: give kick a parameter `ctx: IoUringCtx` and pass the program's ctx to it",
    ),
    'subprogram_ctx_from_socket_filter': (
        'from pybpf_uring import socket_filter, SkBuff\n\ndef wake(ctx: IoUringCtx) -> None:\n    ctx.wait_nr = 1\n\n@socket_filter\ndef f(ctx: SkBuff) -> i32:\n    wake(ctx)\n    return 0\n',
        'subprogram_ctx_from_socket_filter.py:15:10: error: wake() takes the ctx of an @iouring program (ctx: IoUringCtx); it cannot be called from a @socket_filter program\n    wake(ctx)\n         ^~~\n  note: call wake() from @iouring programs only',
    ),
    'subprogram_ctx_variable_index': (
        'def pick(c: Args, i: u64) -> u64:\n    return c.b[i]\n\n@syscall\ndef f(ctx: Args) -> i32:\n    return pick(ctx, ctx.a)\n',
        "subprogram_ctx_variable_index.py:9:16: error: the ctx cannot be indexed by a variable (the verifier rejects a ctx access at a variable offset)\n    return c.b[i]\n               ^\n  note: pick receives the program's ctx as 'c'; copy it to the stack first: `local = c.b` then `local[i]`",
    ),
    'subprogram_helper_reached_from_syscall': (
        'from pybpf_uring.uring import copy_to_user\n\ndef report(uptr: u64, c: Cqe) -> i64:\n    return copy_to_user(uptr, c)\n\n@syscall\ndef f(ctx: Args) -> i32:\n    c = Cqe()\n    return report(ctx.a, c)\n',
        'subprogram_helper_reached_from_syscall.py:11:12: error: copy_to_user() cannot be called from a @syscall program\n    return copy_to_user(uptr, c)\n           ^~~~~~~~~~~~\n  note: report is called from the @syscall program f; copy_to_user() is available in @iouring programs',
    ),
    'subprogram_ctx_passed_on_wrong': (
        'def wake(ctx: IoUringCtx) -> None:\n    ctx.wait_nr = 1\n\ndef step(n: u64) -> None:\n    c = IoUringCtx()\n    wake(c)\n\n@iouring\ndef f(ctx: IoUringCtx) -> i32:\n    step(1)\n    return 0\n',
        "subprogram_ctx_passed_on_wrong.py:13:10: error: wake() needs the program's ctx for its parameter ctx\n    wake(c)\n         ^\n  note: give step a parameter `ctx: IoUringCtx` and pass the program's ctx to it",
    ),
    'subprogram_ctx_at_every_call': (
        'def grab(c: Args) -> u64:\n    return c.a\n\n@syscall\ndef f(ctx: Args) -> i32:\n    copy: Args = ctx\n    return grab(ctx) + grab(copy)\n',
        "subprogram_ctx_at_every_call.py:14:29: error: grab() gets the program's ctx as 'c' at another call, so every call must pass the ctx there\n    return grab(ctx) + grab(copy)\n                            ^~~~\n  note: the verifier lets each of grab's instructions access one kind of pointer; pass the ctx here, or give the other data its own function",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_rejected_program_gets_an_exact_diagnostic(name):
    body, expected = CASES[name]
    assert diagnostic(HEAD + body, f"{name}.py") == expected
