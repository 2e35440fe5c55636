"""Python where Python has it: conditional expressions, min/max/abs/len, lists as arrays' values,
`global` statements, and Const values as sizes.  The module below is ordinary Python too, so the
values the kernel computes (test_run) are checked against what the same function computes when
Python runs it; bad uses get exact diagnostics; min/max/abs/?: compile to no more instructions
than clang-22 makes of the C twin."""
from __future__ import annotations

import ctypes
import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import test_semantics as semantics
from kernel_harness import clang_object, compiled, loaded, module, wrap
from pybpf_uring import compile_source
from pybpf_uring.compiler import syntax as S
from pybpf_uring.compiler.parse import parse_source
from pybpf_uring.compiler.pipeline import compile_tree
from pybpf_uring.diagnostics import CompileError

bpf = pytest.mark.kernel

FORMS = '''
from pybpf_uring import syscall, Struct, ArrayMap, Const, i8, i32, i64, u8, u32, u64

SLOTS: Const[u32] = 6                 # a size taken from a Const: the arrays and the map below
WIDE = max(4, 3, 2)                   # builtins of constants are constants
calls: u64 = 0
total: u64 = 0
seen = ArrayMap(u64, SLOTS)


class Pt(Struct):
    x: i32
    y: i32


class Args(Struct):
    a: i64
    b: i64
    u: u32
    v: u32
    s: i8
    out: i64[14]
    pts: Pt[2]
    slots: u64[SLOTS]


def pick(c: u32, x: i64, y: i64) -> i64:
    return x if c else y


@syscall
def forms(ctx: Args) -> i32:
    global calls, total
    calls += 1
    small: u8[4] = [1, 2, 3, 4]
    small = [small[3], small[2], small[1], small[0]]     # built first, then stored: reversed
    zeros: u64[WIDE] = [0] * WIDE
    pair: u32[4] = 2 * [ctx.u & 3, 9]             # Python's repetition: [u & 3, 9, u & 3, 9]
    acc: i64 = 0
    for i in range(len(small)):
        acc = acc * 10 + small[i]
    ctx.out[0] = acc
    ctx.out[1] = ctx.a if ctx.a > ctx.b else ctx.b
    ctx.out[2] = min(ctx.a, ctx.b, 100)
    ctx.out[3] = max(ctx.u, ctx.v)
    ctx.out[4] = abs(ctx.a)
    ctx.out[5] = abs(ctx.s)
    ctx.out[6] = len(zeros) + len(ctx.out) + zeros[WIDE - 1] + pair[2] * 100 + pair[3]
    ctx.out[7] = pick(ctx.u & 1, ctx.a, -1)
    ctx.out[8] = 7 if ctx.u > 5 else -7
    r = seen.lookup(ctx.u % SLOTS)
    ctx.out[9] = i64(r[0]) if r is not None else -1   # the test narrows the chosen side
    ctx.out[10] = (ctx.a < 0) if ctx.u else (ctx.b < 0)
    ctx.out[11] = max(min(ctx.a, 50), -50)
    ctx.pts = [Pt(x=ctx.u, y=-2), Pt(x=3, y=ctx.v)]
    ctx.slots = [ctx.u, ctx.v, small[0], 0, WIDE, len(ctx.slots)]
    total = total + ctx.u                      # reading and writing through the global statement
    ctx.out[12] = total
    ctx.out[13] = calls
    return 1 if ctx.u < ctx.v else 2
'''


def python_forms(args: dict, calls: int, total: int):
    """What the function computes when Python runs it, on plain ints, with the DSL's widths
    (an ArrayMap holds every key, so the lookup finds the zero the map starts with)."""
    a, b, u, v, s = (args[k] for k in "abuvs")
    out = [4321, max(a, b), min(a, b, 100), max(u, v), abs(a) if a != -2**63 else a, abs(s),
           4 + 14 + 0 + (u & 3) * 100 + 9, a if u & 1 else -1, 7 if u > 5 else -7, 0, int(a < 0) if u else int(b < 0),
           max(min(a, 50), -50), total + u, calls + 1]
    pts = [(u - (1 << 32) if u >= 1 << 31 else u, -2), (3, v - (1 << 32) if v >= 1 << 31 else v)]
    slots = [u, v, 4, 0, 4, 6]
    return out, pts, slots, 1 if u < v else 2


@bpf
def test_forms_compute_in_the_kernel_what_python_computes():
    rng = random.Random(12)
    edges = [0, 1, -1, 5, 6, 100, -100, 2**31 - 1, -2**63 + 1, 2**62]
    with loaded(FORMS) as (live, ns):
        prog, g = live.programs["forms"], live.globals
        for n in range(40):
            args = {"a": rng.choice(edges + [rng.randrange(-2**63 + 1, 2**63)]),
                    "b": rng.choice(edges + [rng.randrange(-2**63, 2**63)]),
                    "u": rng.choice([0, 1, 5, 6, 7, 2**32 - 1, rng.randrange(2**32)]),
                    "v": rng.choice([0, 3, 9, 2**31, rng.randrange(2**32)]),
                    "s": rng.choice([-128, -127, -1, 0, 5, 127])}
            calls, total = g.calls, g.total
            result = prog.test_run(ctx=ns["Args"](**args))
            ctx = result.ctx
            out, pts, slots, ret = python_forms(args, calls, total)
            out[12] &= (1 << 64) - 1
            got = list(ctx.out)
            got[12] &= (1 << 64) - 1
            assert (got, [(p.x, p.y) for p in ctx.pts], list(ctx.slots), result.retval) == \
                (out, pts, slots, ret), args
            assert (g.calls, g.total) == (calls + 1, (total + args["u"]) & (1 << 64) - 1)


@bpf
def test_abs_of_the_minimum_is_exact_and_a_map_value_from_a_lookup_is_chosen():
    """abs of a signed type is the unsigned type of its width, so abs(i8(-128)) is 128 as in
    Python (abs(-2**63) is 2**63, which the i64 out[4] stores as -2**63); the narrowed side reads
    the map's value."""
    with loaded(FORMS) as (live, ns):
        live.maps["seen"][3] = 77
        ctx = live.programs["forms"].test_run(ctx=ns["Args"](a=-2**63, b=0, u=3, v=1, s=-128)).ctx
        assert (ctx.out[4], ctx.out[5], ctx.out[9]) == (-2**63, 128, 77)


BARE = """
from pybpf_uring import syscall, Struct, i32, u8, u64


class Args(Struct):
    i: u64
    out: u64


@syscall
def bare(ctx: Args) -> i32:
    junk: u8[16] = [7] * 16
    junk[ctx.i % 16] = 1
    buf: u8[16]                  # declared without a value: zeros, whatever the stack held
    grid: u8[3][2] = [[1, 2, 3], [4, 5, 6]]   # two u8[3]: (u8[3])[2], as Python reads it
    grid[1] = [0] * 3
    total: u64 = 0
    for k in range(len(buf)):
        total += buf[k]
    ctx.out = total + junk[0] + grid[0][2] * 10 + grid[1][0]
    return 0
"""


@bpf
def test_an_array_declared_without_a_value_is_zeros():
    with loaded(BARE) as (live, ns):
        for i in (0, 5):
            assert live.programs["bare"].test_run(ctx=ns["Args"](i=i)).ctx.out == (1 if i == 0 else 7) + 30


def test_a_repeated_element_is_evaluated_once():
    """`[f(x)] * 4` calls f once, as Python does, and copies the value."""
    src = HEAD + ("def f(x: u64) -> u64:\n    return x + 1\n\n@syscall\ndef p(ctx: Args) -> i32:\n"
                  "    a: u64[4] = [f(ctx.a)] * 4\n    return a[3]\n")
    assert compile_source(src, "once.py").program("p").disasm().count("call") == 1


NARROWED_LEN = """
from pybpf_uring import syscall, Struct, ArrayMap, i32, u8, u64


class V(Struct):
    arr: u8[6]


vs = ArrayMap(V, 2)


class Args(Struct):
    k: u64


@syscall
def f(ctx: Args) -> i32:
    r = vs.lookup(ctx.k)
    return len(r.arr) if r is not None else -1
"""


@bpf
def test_len_of_a_narrowed_reference_is_its_arrays_length():
    """The narrowing of `r is not None` holds for len's argument too (it was first checked
    before the statement, where r may be None)."""
    with loaded(NARROWED_LEN) as (live, ns):
        prog = live.programs["f"]
        assert [prog.test_run(ctx=ns["Args"](k=k)).signed_retval for k in (1, 2)] == [6, -1]


def test_const_sizes_are_the_declared_value():
    """A Const in a size (an array field, a map's max_entries) is the value it is declared
    with; the Const itself stays in .rodata, read from memory."""
    obj = compile_source(FORMS, "forms.py")
    assert obj.map("seen").max_entries == 6
    rodata = obj.map(".rodata")
    assert rodata.value_size == 4 and bytes(rodata.data) == (6).to_bytes(4, "little")


def test_the_module_is_python():
    """The sample module runs as Python: its function computes the same values on host ctypes."""
    ns = module(FORMS, "forms.py")
    assert ns["WIDE"] == 4 and ns["pick"](0, 5, 6) == 6


# ----- the syntax ---------------------------------------------------------------------------
def test_conditional_list_and_global_parse_to_their_nodes():
    mod = parse_source("def f(x: u32) -> u32:\n    global g, h\n    a: u8[2] = [1, x]\n    return x if x else 2\n")
    glob, assign, ret = mod.body[0].body
    assert isinstance(glob, S.Global) and glob.names == ("g", "h")
    assert isinstance(assign.value, S.ListDisplay) and [type(e).__name__ for e in assign.value.elts] == ["Constant", "Name"]
    cond = ret.value
    assert isinstance(cond, S.IfExp) and cond.test.id == "x" and cond.then.id == "x" and cond.otherwise.value == 2
    assert (cond.span.col, cond.span.end_col) == (12, 25)


# ----- instruction counts against clang-22 ------------------------------------------------
TWIN_PY = '''
from pybpf_uring import syscall, Struct, i32, i64, u32


class Args(Struct):
    a: i64
    b: i64
    u: u32
    v: u32
    out: i64[4]


@syscall
def forms(ctx: Args) -> i32:
    ctx.out[0] = min(ctx.a, ctx.b)
    ctx.out[1] = max(ctx.u, ctx.v)
    ctx.out[2] = abs(ctx.a)
    ctx.out[3] = ctx.a if ctx.u > 3 else ctx.b
    return 0
'''

TWIN_C = '''
typedef long long i64; typedef unsigned int u32;
struct Args { i64 a; i64 b; u32 u; u32 v; i64 out[4]; };
__attribute__((section("syscall"), used)) int forms(struct Args *ctx) {
    ctx->out[0] = ctx->a < ctx->b ? ctx->a : ctx->b;
    ctx->out[1] = ctx->u > ctx->v ? ctx->u : ctx->v;
    ctx->out[2] = ctx->a < 0 ? -ctx->a : ctx->a;
    ctx->out[3] = ctx->u > 3 ? ctx->a : ctx->b;
    return 0;
}
char _license[] __attribute__((section("license"), used)) = "GPL";
'''


@pytest.mark.tools("clang")
def test_min_max_abs_and_conditionals_are_as_short_as_clangs(tmp_path):
    ours = compile_source(TWIN_PY, "twin.py").program("forms")
    theirs = clang_object(tmp_path, "twin", TWIN_C).program("forms")
    assert ours.slot_count <= theirs.slot_count, (ours.disasm(), theirs.disasm())


# ----- diagnostics ------------------------------------------------------------------------
HEAD = ("from pybpf_uring import syscall, Struct, ArrayMap, Const, u8, u32, u64, i32, i64\n\n"
        "N = 4\nhits: u64 = 0\nlimit: Const[u32] = 3\nm = ArrayMap(u64, 4)\n\n"
        "class Args(Struct):\n    a: u64\n    b: u32[4]\n\n")

BAD = {
    "list_too_short": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    x: u8[4] = [1, 2, 3]\n    return 0\n",
        "list_too_short.py:14:16: error: u8[4] needs 4 values, got 3\n    x: u8[4] = [1, 2, 3]\n"
        "               ^~~~~~~~~\n  note: list every element, or repeat one: [0] * 4"),
    "list_without_type": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    x = [1, 2]\n    return 0\n",
        "list_without_type.py:14:9: error: a list is only the value of an array\n    x = [1, 2]\n"
        "        ^~~~~~\n  note: declare the array with its type: x: u32[2] = [...]"),
    "list_into_integer": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    ctx.a = [1]\n    return 0\n",
        "list_into_integer.py:14:13: error: assigned value has type u64; a list is only the value of an array\n"
        "    ctx.a = [1]\n            ^~~\n  note: an array is declared with its type: x: u32[1] = [...]"),
    "list_element_does_not_fit": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    x: u8[2] = [1, 256]\n    return 0\n",
        "list_element_does_not_fit.py:14:20: error: 256 does not fit in u8\n    x: u8[2] = [1, 256]\n"
        "                   ^~~\n  note: write u8(256) to wrap it explicitly"),
    "conditional_of_structs": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    x = ctx.b if ctx.a else ctx.b\n    return 0\n",
        "conditional_of_structs.py:14:9: error: a conditional expression chooses between integers or bools, "
        "not u32[4] and u32[4]\n    x = ctx.b if ctx.a else ctx.b\n        ^~~~~~~~~~~~~~~~~~~~~~~~~\n"
        "  note: use an if statement to choose between structs, arrays or references"),
    "min_of_one": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    return min(ctx.a)\n",
        "min_of_one.py:14:12: error: min() takes two or more integers, got 1 argument\n    return min(ctx.a)\n"
        "           ^~~~~~~~~~\n  note: for the elements of an array, loop over it"),
    "abs_of_two": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    return abs(ctx.a, 1)\n",
        "abs_of_two.py:14:12: error: abs() takes one integer, got 2 arguments\n    return abs(ctx.a, 1)\n"
        "           ^~~~~~~~~~~~~"),
    "len_of_integer": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    return len(ctx.a)\n",
        "len_of_integer.py:14:12: error: len() takes one fixed-size array, not u64\n    return len(ctx.a)\n"
        "           ^~~~~~~~~~\n  note: the length of an array is its type's: u8[64] has 64 elements; a map's is its max_entries"),
    "min_keyword": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    return min(ctx.a, 1, default=0)\n",
        "min_keyword.py:14:26: error: min()'s keyword arguments are not available in BPF programs\n"
        "    return min(ctx.a, 1, default=0)\n                         ^~~~~~~~~\n  note: min() takes two or more integers"),
    "min_as_statement": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    max(ctx.a, 1)\n    return 0\n",
        "min_as_statement.py:14:5: error: max() has no effect here\n    max(ctx.a, 1)\n    ^~~~~~~~~~~~~\n"
        "  note: use its value: x = max(...)"),
    "min_literal_does_not_fit": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    return min(ctx.b[0], -1)\n",
        "min_literal_does_not_fit.py:14:26: error: -1 does not fit in u32\n    return min(ctx.b[0], -1)\n"
        "                         ^~\n  note: write u32(-1) to wrap it explicitly"),
    "global_undeclared": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    global misses\n    misses = 1\n    return 0\n",
        "global_undeclared.py:14:5: error: global 'misses' is not declared at module level\n    global misses\n"
        "    ^~~~~~~~~~~~~\n  note: declare it there with its type: misses: u64 = 0"),
    "global_constant": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    global N\n    N = 5\n    return 0\n",
        "global_constant.py:14:5: error: 'N' is a module-level constant, not a global variable\n    global N\n"
        "    ^~~~~~~~\n  note: a constant is folded into the code; to change it at run time, declare a global "
        "with a type: N: u64 = 4"),
    "global_map": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    global m\n    return 0\n",
        "global_map.py:14:5: error: 'm' is a module-level map, not a global variable\n    global m\n"
        "    ^~~~~~~~\n  note: a map is shared already: write its elements (m[k] = v) without a global statement"),
    "global_parameter": (
        "def g(hits: u64) -> i64:\n    global hits\n    return 0\n\n@syscall\ndef f(ctx: Args) -> i32:\n"
        "    return g(1)\n",
        "global_parameter.py:13:5: error: name 'hits' is parameter and global\n    global hits\n    ^~~~~~~~~~~\n"
        "  note: rename the parameter, or drop 'hits' from the global statement"),
    "used_before_global": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    hits = 2\n    global hits\n    return 0\n",
        "used_before_global.py:14:5: error: name 'hits' is used prior to global declaration\n    hits = 2\n"
        "    ^~~~\n  note: put `global hits` at the top of f"),
    "global_const_written": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    global limit\n    limit = 1\n    return 0\n",
        "global_const_written.py:15:5: error: 'limit' is a read-only global (Const)\n    limit = 1\n    ^~~~~\n"
        "  note: the host sets it before loading; keep a copy in a local to change it"),
    "list_repeated_past_the_array": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    x: u8[4] = [0] * 1000000000\n    return 0\n",
        "list_repeated_past_the_array.py:14:16: error: u8[4] needs 4 values, got 1000000000\n"
        "    x: u8[4] = [0] * 1000000000\n               ^~~~~~~~~~~~~~~~\n  note: list every element, or repeat one: [0] * 4"),
    "global_at_module_level": (
        "global hits\n",
        "global_at_module_level.py:12:1: error: a global statement is not allowed at module level\n"
        "global hits\n^~~~~~~~~~~\n"
        "  note: a BPF module holds imports, integer constants, maps, Struct classes and functions"),
    "len_of_a_reference_that_may_be_none": (
        "class V(Struct):\n    arr: u8[6]\n\nvs = ArrayMap(V, 2)\n\n@syscall\ndef f(ctx: Args) -> i32:\n"
        "    r = vs.lookup(0)\n    return len(r.arr)\n",
        "len_of_a_reference_that_may_be_none.py:20:16: error: r may be None here\n    return len(r.arr)\n"
        "               ^\n  note: check first: `if r is not None:`"),
    "nonlocal_still_rejected": (
        "@syscall\ndef f(ctx: Args) -> i32:\n    nonlocal hits\n    return 0\n",
        "nonlocal_still_rejected.py:14:5: error: nonlocal is not available in BPF programs; pass values as arguments\n"
        "    nonlocal hits\n    ^~~~~~~~~~~~~"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_uses_get_exact_diagnostics(name):
    body, expected = BAD[name]
    with pytest.raises(CompileError) as e:
        compile_source(HEAD + body, f"{name}.py")
    assert str(e.value).strip() == expected


def test_mixed_signs_warn_where_c_makes_a_negative_value_large():
    src = HEAD + ("class S(Struct):\n    s: i32\n    u: u32\n\n@syscall\ndef f(ctx: S) -> i32:\n"
                  "    return max(ctx.s, ctx.u) + (ctx.s if ctx.u else ctx.u)\n")
    text = [str(w) for w in compile_tree(parse_source(src, "mixed.py")).warnings]
    assert any("max() mixes i32 and u32; its value is a u32, so a negative ctx.s becomes a large value" in t
               for t in text), text
    assert any("conditional expression mixes i32 and u32" in t for t in text), text


def test_a_name_of_the_module_hides_the_builtin():
    """min is Python's builtin only while nothing else is called min, as in Python."""
    src = HEAD + ("def min(a: u64, b: u64) -> u64:\n    return a + b\n\n@syscall\ndef f(ctx: Args) -> i32:\n"
                  "    return min(ctx.a, 2)\n")
    obj = compile_source(src, "hides.py")
    assert [p.name for p in obj.subprograms] == ["min"]


RING = '''
from pybpf_uring import iouring, Struct, i32, i64, u32, u64
from pybpf_uring.uring import IoUringCtx, emit_cqe, copy_from_user

runs: u64 = 0


class In(Struct):
    v: i64[4]


def post(ctx: IoUringCtx, cq: u32, tag: u64, value: i64) -> None:
    emit_cqe(ctx, cq, tag, i32(value), 0)


@iouring
def forms(ctx: IoUringCtx) -> i32:
    global runs
    runs += 1
    src = In()
    if copy_from_user(src, ctx.user_data) != 0:
        return -1
    w: i64[4] = [src.v[3], src.v[2], src.v[1], src.v[0]]
    for i in range(len(w)):
        post(ctx, 1, i, w[i] if w[i] > 0 else -w[i])
    post(ctx, 1, 10, min(w[0], w[1], w[2], w[3]))
    post(ctx, 1, 11, max(w[0], w[1], w[2], w[3]))
    post(ctx, 1, 12, i64(abs(w[3])))
    return 0
'''


@pytest.mark.uring
@pytest.mark.parametrize("backend", ["interpreter", "jit"])
def test_the_forms_run_in_the_engine_on_a_real_ring(backend):
    from pybpf_uring import Ring
    from pybpf_uring.runtime.engine import instantiate
    obj, ns = compiled(RING, "ring.py")
    src = ns["In"](v=[-7, 20, -3, 5])
    with Ring(entries=8, cq_sizes=(16, 16)) as ring:
        ring.register(obj, engine=lambda o: instantiate(o, backend=backend))
        for run in (1, 2):
            ring.submit_bpf("forms", user_data=ctypes.addressof(src))
            assert ring.wait_cqe(0, timeout=5).res == 0 and ring.globals.runs == run
            got = {c.user_data: c.res for c in (ring.wait_cqe(1, timeout=1) for _ in range(7))}
            assert got == {0: 5, 1: 3, 2: 20, 3: 7, 10: -7, 11: 20, 12: 7}
        assert list(ring.faults) == []


# ----- generated expressions against the integer model of tests/test_semantics.py -----------
@dataclasses.dataclass
class Cond(semantics.E):
    """`(then if test else other)`: the sides' common type, only the chosen side's value."""
    test: semantics.E = None
    then: semantics.E = None
    other: semantics.E = None

    def eval(self, env):
        side = self.then if self.test.eval(env) != 0 else self.other
        return wrap(side.eval(env), *self.type)


@dataclasses.dataclass
class Pick(semantics.E):
    """min/max of the arguments converted to their common type."""
    name: str = "min"
    args: tuple = ()

    def eval(self, env):
        values = [wrap(a.eval(env), *self.type) for a in self.args]
        return min(values) if self.name == "min" else max(values)


@dataclasses.dataclass
class Abs(semantics.E):
    """abs(x): x's width, unsigned, exact."""
    operand: semantics.E = None

    def eval(self, env):
        return wrap(abs(wrap(self.operand.eval(env), *self.operand.type)), self.type[0], False)


def python_forms_extend(children):
    def pick(args):
        name, xs = args
        t = xs[0].type
        for x in xs[1:]:
            t = semantics.common(t, x.type)
        return Pick(f"{name}({', '.join(x.text for x in xs)})", t, name, tuple(xs))

    def cond(args):
        test, then, other = args
        t = semantics.common(then.type, other.type)
        return Cond(f"({then.text} if {test.text} else {other.text})", t, test, then, other)

    return st.one_of(
        semantics.extend(children),
        st.tuples(children, children, children).map(cond),
        st.tuples(st.sampled_from(["min", "max"]), st.lists(children, min_size=2, max_size=3)).map(pick),
        children.map(lambda x: Abs(f"abs({x.text})", (x.type[0], False), x)),
    )


@bpf
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.recursive(semantics.leaves, python_forms_extend, max_leaves=6), min_size=1, max_size=8))
def test_generated_conditionals_and_builtins_match_the_model_in_the_kernel(exprs):
    """Mixed widths and signs through ?:, min, max and abs (C's conversions, wrapping at every
    width) compute in the kernel what the model says."""
    body = "\n".join(f"    ctx.r[{i}] = {x.text}" for i, x in enumerate(exprs))
    with loaded(semantics.SOURCE.format(n=len(exprs), body=body)) as (live, ns):
        prog = live.programs["exprs"]
        for env in semantics.INPUTS:
            out = prog.test_run(ctx=ns["Args"](**env)).ctx
            model = {k: wrap(v, *semantics.VARS[k]) for k, v in env.items()}
            assert list(out.r) == [wrap(x.eval(model), 64, True) for x in exprs], (body, env)


DIV_SELF = """
from pybpf_uring import syscall, Struct, i32, i64, u32, u64


class Args(Struct):
    s: i64
    u: u32
    r: i64[4]


@syscall
def f(ctx: Args) -> i32:
    s = ctx.s
    u = ctx.u
    ctx.r = [s // s, s % s, u // u, u % u]
    return 0
"""


@bpf
def test_a_value_divided_by_itself():
    """Found by the generated test above while lower_div divided unguarded (aa6261e to a5662c3):
    instruction selection folds x / x to 1, and BPF defines x // 0 as 0."""
    with loaded(DIV_SELF) as (live, ns):
        for s, u in ((0, 0), (7, 3), (-5, 2**32 - 1)):
            out = live.programs["f"].test_run(ctx=ns["Args"](s=s, u=u)).ctx
            assert list(out.r) == [1 if s else 0, 0, 1 if u else 0, 0], (s, u)


@bpf
def test_a_decorated_function_compiled_from_its_file_writes_through_global(tmp_path, monkeypatch):
    """`.compile()` of a program in an imported file takes the declarations it reaches: the
    subprogram's `global hits` makes the annotated global one of them, written by the program."""
    import importlib
    (tmp_path / "gmod_forms.py").write_text(
        "from pybpf_uring import syscall, Struct, i32, u64\n\nhits: u64 = 0\n\n\nclass A(Struct):\n"
        "    a: u64\n\n\ndef bump(n: u64) -> None:\n    global hits\n    hits += n\n\n\n@syscall\n"
        "def prog(ctx: A) -> i32:\n    bump(ctx.a)\n    return 1 if hits > 10 else 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("gmod_forms")
    with mod.prog.compile().load() as live:
        runs = [live.programs["prog"].test_run(ctx=mod.A(a=4)).retval for _ in range(4)]
        assert (runs, live.globals.hits) == ([0, 0, 1, 1], 16)
