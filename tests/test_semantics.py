"""Generated arithmetic (hypothesis) compiled to BPF and run in the kernel, against an
independent Python model of the language's integer rules: C's conversions without promotion
to int, literals taking the other operand's type, wrapping at every width, floor division
with BPF's zero-divisor results, explicit casts."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from kernel_harness import floordiv, floormod, loaded, wrap

pytestmark = pytest.mark.kernel

VARS = {"a": (32, True), "b": (16, False), "c": (64, True), "d": (8, False), "e": (64, False)}
TYPES = [(8, False), (8, True), (16, False), (16, True), (32, False), (32, True), (64, False), (64, True)]


def tname(t) -> str:
    return f"{'i' if t[1] else 'u'}{t[0]}"


def common(x, y):
    if x[0] != y[0]:
        return x if x[0] > y[0] else y
    return x if not x[1] else y


OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
       "&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b,
       "//": floordiv, "%": floormod, "<<": lambda a, b: a << b, ">>": lambda a, b: a >> b}


@dataclass
class E:
    text: str
    type: tuple

    def eval(self, env) -> int:
        raise NotImplementedError


@dataclass
class Var(E):
    def eval(self, env):
        return env[self.text]


@dataclass
class Lit(E):
    value: int = 0

    def eval(self, env):
        return self.value


@dataclass
class Bin(E):
    op: str = "+"
    left: E = None
    right: E = None

    def eval(self, env):
        bits, signed = self.type
        a = wrap(self.left.eval(env), bits, signed)
        b = wrap(self.right.eval(env), bits, signed)
        if self.op in ("<<", ">>"):
            b = self.right.value
        return wrap(OPS[self.op](a, b), bits, signed)


@dataclass
class Un(E):
    op: str = "-"
    operand: E = None

    def eval(self, env):
        v = self.operand.eval(env)
        return wrap(-v if self.op == "-" else ~v, *self.type)


@dataclass
class Cast(E):
    operand: E = None

    def eval(self, env):
        return wrap(self.operand.eval(env), *self.type)


leaves = st.sampled_from(sorted(VARS)).map(lambda n: Var(n, VARS[n]))


def extend(children):
    def binop(args):
        op, left, right = args
        if op in ("<<", ">>"):
            n = right.value if isinstance(right, Lit) else 3
            count = n % left.type[0]
            return Bin(f"({left.text} {op} {count})", left.type, op, left, Lit(str(count), left.type, count))
        if isinstance(right, Lit):
            if op in ("//", "%") and right.value == 0:
                right = Lit("1", right.type, 1)      # a literal zero divisor is a compile error
            lit = Lit(right.text, left.type, right.value)
            return Bin(f"({left.text} {op} {lit.text})", left.type, op, left, lit)
        t = common(left.type, right.type)
        return Bin(f"({left.text} {op} {right.text})", t, op, left, right)

    literal = st.integers(0, 100).map(lambda v: Lit(str(v), (64, True), v))
    return st.one_of(
        st.tuples(st.sampled_from(["+", "-", "*", "&", "|", "^", "//", "%", "<<", ">>"]),
                  children, st.one_of(children, literal)).map(binop),
        st.tuples(st.sampled_from(["-", "~"]), children).map(
            lambda a: Un(f"({a[0]}{a[1].text})", a[1].type, a[0], a[1])),
        st.tuples(st.sampled_from(TYPES), children).map(
            lambda a: Cast(f"{tname(a[0])}({a[1].text})", a[0], a[1])),
    )


expressions = st.recursive(leaves, extend, max_leaves=6)

SOURCE = """
from pybpf_uring import syscall, Struct, i8, i16, i32, i64, u8, u16, u32, u64

class Args(Struct):
    a: i32
    b: u16
    c: i64
    d: u8
    e: u64
    r: i64[{n}]

@syscall
def exprs(ctx: Args) -> i32:
    a = ctx.a
    b = ctx.b
    c = ctx.c
    d = ctx.d
    e = ctx.e
{body}
    return 0
"""

INPUTS = [dict(a=-7, b=65535, c=-2**63, d=255, e=2**64 - 1), dict(a=2**31 - 1, b=3, c=12345, d=0, e=5),
          dict(a=0, b=0, c=-1, d=1, e=0), dict(a=-2**31, b=40000, c=2**62 + 3, d=128, e=2**63)]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(expressions, min_size=1, max_size=8))
def test_generated_arithmetic_matches_the_model_in_the_kernel(exprs):
    body = "\n".join(f"    ctx.r[{i}] = {x.text}" for i, x in enumerate(exprs))
    with loaded(SOURCE.format(n=len(exprs), body=body), "v3") as (live, ns):
        prog = live.programs["exprs"]
        for env in INPUTS:
            out = prog.test_run(ctx=ns["Args"](**env)).ctx
            model = {k: wrap(v, *VARS[k]) for k, v in env.items()}
            want = [wrap(x.eval(model), 64, True) for x in exprs]
            assert list(out.r) == want, (body, env)
