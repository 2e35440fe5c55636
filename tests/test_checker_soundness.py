"""What `check` accepts among kernel programs, the kernel's verifier loads.

Each held-out program below was once accepted by the checker and refused by the verifier: loop
proofs that ignored wraparound (a u8 counter stepping past 255, a range over a u8, a range step
that overflows the i64 counter), a loop nest whose verified walk passes the kernel's limit, a
socket filter writing a read-only __sk_buff field, and the ctx (or an array in it) handed to a
map or a subprogram where the verifier wants a stack pointer.  Now each either compiles and
loads into the running kernel, computing what Python would, or is refused with a located
diagnostic.  A hypothesis property then samples loop programs of random widths, bounds, steps
and nesting, and holds the checker to the same rule.
"""
from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kernel_harness import loaded
from pybpf_uring import compile_source
from pybpf_uring.errors import CompileError
from pybpf_uring.limits import MAX_VERIFIED_INSNS

HEADER = """\
from pybpf_uring import syscall, socket_filter, tracepoint, Struct, ArrayMap, HashMap, SkBuff
from pybpf_uring import i8, i16, i32, i64, u8, u16, u32, u64


class Args(Struct):
    a: u64
    b: u32[4]
    out: u64

"""


def rejected(body: str) -> str:
    """The checker's diagnostics for a module; every one is located in the module's source."""
    with pytest.raises(CompileError) as info:
        compile_source(HEADER + body, "prog.py")
    for d in info.value.diagnostics:
        assert d.span is not None and d.span.line > HEADER.count("\n"), d
    return str(info.value)


# ----- loops: termination in the variable's width -------------------------------------------
def test_u8_counter_that_wraps_before_its_bound_is_refused():
    message = rejected("""
@syscall
def p(ctx: Args) -> i32:
    i: u8 = 250
    while i < 255:
        i += 10
    return 0
""")
    assert message.startswith("prog.py:14:11: error: 'i' is a u8: a step of 10 from 254 passes 255 "
                              "and wraps, so `i < 255` may never be false\n"), message
    assert "declare i wider (i64)" in message


def test_u8_counter_compared_with_a_bound_beyond_its_type_is_refused():
    message = rejected("""
@syscall
def p(ctx: Args) -> i32:
    i: u8 = 250
    while i < 300:
        i += 1
    return 0
""")
    assert message.startswith("prog.py:14:15: error: 300 does not fit in u8\n"), message


def test_range_over_a_u8_loop_variable_is_refused():
    message = rejected("""
@syscall
def p(ctx: Args) -> i32:
    i: u8 = 0
    for i in range(300):
        ctx.out += i
    return 0
""")
    assert message.startswith("prog.py:14:14: error: 'i' is a u8 (0 to 255), but this range "
                              "reaches 299\n"), message


def test_range_step_that_overflows_the_i64_counter_is_refused():
    message = rejected("""
@syscall
def p(ctx: Args) -> i32:
    for i in range(0, (1 << 63) - 1, 1 << 62):
        ctx.out += 1
    return 0
""")
    assert message.startswith("prog.py:13:14: error: the range's counter steps to "
                              "9223372036854775808, past the i64 range, and would wrap"), message


def test_signed_while_counter_without_a_start_is_refused():
    message = rejected("""
@syscall
def p(ctx: Args) -> i32:
    j: i32 = ctx.a
    while j < 10:
        j += 1
    return 0
""")
    assert "prog.py:14:11: error: 'j' is a signed i32 with no constant value before the loop" in message


# ----- loops: the verifier's walk -------------------------------------------------------------
def test_loop_nest_over_the_verifier_limit_is_refused_with_the_product():
    message = rejected("""
@syscall
def p(ctx: Args) -> i32:
    n: u64 = 0
    for i in range(1000):
        for j in range(1000):
            n += ctx.a
    ctx.out = n
    return 0
""")
    first = message.splitlines()[0]
    assert first.startswith("prog.py:14:5: error: the verifier would walk ~"), first
    assert "1000 passes" in first and f"the kernel stops at {MAX_VERIFIED_INSNS}" in first
    assert "constant bound" not in message  # the loop has one: the advice is about its size
    assert "run fewer passes" in message and "split the work across calls" in message


@pytest.mark.kernel("syscall_programs")
def test_loop_nest_under_the_limit_loads_and_computes():
    src = HEADER + """
@syscall
def p(ctx: Args) -> i32:
    n: u64 = 0
    for i in range(50):
        for j in range(40):
            n += ctx.a
    k: u16 = 65000
    while k < 65520:
        k += 7
        n += 1
    ctx.out = n
    return 0
"""
    with loaded(src) as (live, ns):
        prog = live.programs["p"]
        assert prog.test_run(ctx=ns["Args"](a=3)).ctx.out == 50 * 40 * 3 + len(range(65000, 65520, 7))
        assert prog.verified_insns < MAX_VERIFIED_INSNS


# ----- ctx writes -----------------------------------------------------------------------------
def test_socket_filter_write_to_a_read_only_field_is_refused():
    message = rejected("""
@socket_filter
def p(ctx: SkBuff) -> i32:
    ctx.mark = 1
    return 0
""")
    assert message.startswith("prog.py:13:5: error: a socket filter may write only ctx.cb[0] to "
                              "ctx.cb[4]; the kernel refuses writes to the other __sk_buff fields "
                              "(ctx.mark is one)\n"), message


def test_socket_filter_write_through_a_subprogram_is_refused():
    message = rejected("""
def tag(skb: SkBuff) -> None:
    skb.priority = 3


@socket_filter
def p(ctx: SkBuff) -> i32:
    tag(ctx)
    return 0
""")
    assert message.startswith("prog.py:12:5: error: a socket filter may write only ctx.cb[0]"), message


def test_tracepoint_record_is_read_only():
    message = rejected("""
class Rec(Struct):
    pad: u64[4]
    res: i32


@tracepoint("io_uring/io_uring_complete")
def p(ctx: Rec) -> i32:
    ctx.res = 1
    return 0
""")
    assert message.startswith("prog.py:18:5: error: a tracepoint's record is read-only\n"), message


@pytest.mark.kernel()
def test_socket_filter_writes_cb_and_loads():
    src = HEADER + """
@socket_filter
def p(ctx: SkBuff) -> i32:
    ctx.cb[0] = ctx.len
    ctx.cb[4] += 1
    return ctx.cb[0] + ctx.cb[4]
"""
    with loaded(src) as (live, _):
        frame = bytes(14) + bytes(range(20))
        assert live.programs["p"].test_run(data=frame).retval == 20 + 1  # len from the network header


@pytest.mark.kernel("syscall_programs")
def test_syscall_ctx_is_writable():
    with loaded(HEADER + """
@syscall
def p(ctx: Args) -> i32:
    ctx.b[2] = 9
    ctx.out = ctx.a + 1
    return 0
""") as (live, ns):
        out = live.programs["p"].test_run(ctx=ns["Args"](a=41)).ctx
        assert (out.out, list(out.b)) == (42, [0, 0, 9, 0])


# ----- value semantics: the ctx as a key or an argument -------------------------------------
@pytest.mark.kernel("syscall_programs")
def test_ctx_and_ctx_array_as_map_keys_load_and_compute():
    src = HEADER + """
by_args = HashMap(Args, u64, 4)
by_b = HashMap(u32[4], u64, 4)


@syscall
def p(ctx: Args) -> i32:
    by_args[ctx] = ctx.a * 2
    by_b[ctx.b] += 5
    ctx.out = by_args[ctx] + by_b[ctx.b]
    return 0
"""
    with loaded(src) as (live, ns):
        out = live.programs["p"].test_run(ctx=ns["Args"](a=10, b=[1, 2, 3, 4])).ctx
        assert out.out == 25
        assert dict(live.maps["by_b"].items()) == {struct.pack("<4I", 1, 2, 3, 4): 5}


@pytest.mark.kernel("syscall_programs")
def test_ctx_array_and_ctx_as_subprogram_arguments_load_and_compute():
    src = HEADER + """
def second(a: u32[4]) -> i64:
    return a[1]


def total(x: Args) -> i64:
    return x.a + x.b[3]


@syscall
def p(ctx: Args) -> i32:
    ctx.out = second(ctx.b) * 100 + total(ctx)
    return 0
"""
    with loaded(src) as (live, ns):
        out = live.programs["p"].test_run(ctx=ns["Args"](a=7, b=[0, 5, 0, 2])).ctx
        assert out.out == 5 * 100 + 9


# ----- the property: what check accepts, the kernel loads ------------------------------------
TYPES = {"u8": (0, 255), "u16": (0, 65535), "u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1),
         "i8": (-128, 127), "i16": (-32768, 32767), "i32": (-2**31, 2**31 - 1), "i64": (-2**63, 2**63 - 1)}


@st.composite
def loop(draw, depth: int, body: list[str]) -> list[str]:
    """One loop (a for over range, or a while on a counter) around the lines of `body`."""
    var, name = f"v{depth}", draw(st.sampled_from(sorted(TYPES)))
    lo, hi = TYPES[name]
    near = st.one_of(st.integers(-3, 400), st.integers(hi - 300, hi), st.integers(lo, lo + 300))
    bound = draw(near.filter(lambda v: lo <= v <= hi))
    step = draw(st.sampled_from([1, 1, 2, 7, 100, 300]))
    inner = ["    " + line for line in body]
    if draw(st.booleans()):
        start = draw(near.filter(lambda v: lo <= v <= hi))
        op = draw(st.sampled_from(["<", "<=", ">", ">="]))
        sign = "+" if op in ("<", "<=") else "-"
        return [f"{var}: {name} = {start}", f"while {var} {op} {bound}:", f"    {var} {sign}= {step}"] + inner
    start = draw(st.integers(-10, 300))
    if draw(st.booleans()):
        start, bound, step = bound, start, -step
    return [f"{var}: {name} = 0", f"for {var} in range({start}, {bound}, {step}):"] + inner


@st.composite
def loop_program(draw) -> str:
    """A @syscall program of one loop or a nest of two around `n += ctx.a`."""
    body = ["n += ctx.a"]
    for depth in reversed(range(draw(st.integers(1, 2)))):
        body = draw(loop(depth, body))
    lines = "\n".join("    " + line for line in body)
    return HEADER + f"""
@syscall
def p(ctx: Args) -> i32:
    n: u64 = 0
{lines}
    ctx.out = n
    return 0
"""


@pytest.mark.kernel("syscall_programs")
@settings(max_examples=int(os.environ.get("PYBPF_URING_FUZZ_CASES", "40")), derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(loop_program())
def test_whatever_check_accepts_the_kernel_loads(src):
    try:
        obj = compile_source(src, "prog.py")
    except CompileError as e:
        for d in e.diagnostics:
            assert d.span is not None and d.span.line > HEADER.count("\n"), (src, str(e))
        return
    with obj.load() as live:  # a VerifierError here is the checker's unsoundness
        assert live.programs["p"].verified_insns <= MAX_VERIFIED_INSNS
