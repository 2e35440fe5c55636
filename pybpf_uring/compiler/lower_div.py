"""Integer division and modulo with the DSL's semantics, for every cpu.

- `x // 0 == 0` and `x % 0 == x`, as the BPF instructions define them.  LLVM calls division by
  zero undefined and optimises on that assumption -- in IR and again when it selects
  instructions (x / x is 1 there, x / 0 anything) -- so a divisor that is not a known constant is
  tested first, on its own branch (the shape clang gives `b ? a / b : 0`), and only the
  non-zero side divides.
- Signed `//` and `%` floor like Python: the quotient rounds towards -inf and the remainder takes
  the divisor's sign.  cpu v4 has signed division (`sdiv`); v1-v3 do not (LLVM refuses it), so
  there it is built from unsigned division of the magnitudes.
- `MIN // -1` wraps to MIN (and `% -1` is 0), as the kernel's sdiv does.  Unsigned division of
  the magnitudes (v1-v3) gives that by itself; LLVM calls sdiv's overflow undefined, so at v4
  -1 takes its own branch too.
- A constant divisor is divided as it is: LLVM turns it into its multiply-and-shift sequence.
- Divisions by one divisor in one expression share its tests (`k // n + k % n`): the expression
  is lowered once per special divisor value and once for the others, joined once -- clang's
  shape for `n ? k / n + k % n : k`.  Each division testing for itself would join its own result
  (0 for `//`, k for `%`) and the sum after both, a join LLVM does not move into the branches.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import llvmlite.ir as ir

from . import syntax as S
from .typesys import IntT, MapT

GENERAL = "general"  # a known divisor that is none of the special values


def divide(fl, op: str, a: ir.Value, b: ir.Value, t: IntT, const: int | None,
           known: int | str | None = None) -> ir.Value:
    """a // b or a % b; `known` is the divisor's special value, or GENERAL, when a test shared
    by the expression (`split`) has decided it."""
    bld = fl.b
    ty = a.type
    if t.signed and t.bits < 32:  # BPF divides 32 or 64 bits wide; narrow values are exact in 32
        wide = ir.IntType(32)
        r = divide(fl, op, bld.sext(a, wide), bld.sext(b, wide), IntT(32, True), const, known)
        return bld.trunc(r, ty)
    if const is not None:
        c = t.wrap(const)
        if c == 0 or (t.signed and c == -1):  # never a division LLVM could call undefined
            return special_result(bld, op, a, c)
        return core(fl, op, a, b, t, c)
    if known is None:
        return by_divisor(fl, b, t, lambda value: divide(fl, op, a, b, t, None, value))
    return core(fl, op, a, b, t, None) if known == GENERAL else special_result(bld, op, a, known)


def special_values(fl, t: IntT) -> list[int]:
    """The divisors tested before dividing: 0, and -1 when signed at v4 (sdiv)."""
    return [0, -1] if t.signed and fl.ml.cpu == "v4" else [0]


def special_result(bld: ir.IRBuilder, op: str, a: ir.Value, divisor: int) -> ir.Value:
    """a // d or a % d for a special divisor d, without dividing."""
    if divisor == 0:
        return ir.Constant(a.type, 0) if op == "//" else a
    return bld.neg(a) if op == "//" else ir.Constant(a.type, 0)


def by_divisor(fl, b: ir.Value, t: IntT, arm) -> ir.Value:
    """`arm(v)` for each special value v of the divisor `b`, each lowered before the test that
    takes it (the shape clang gives `b ? a / b : 0`), and `arm(GENERAL)` on the branch past
    them all, joined."""
    bld = fl.b
    done, general = fl.new_block("div.end"), fl.new_block("div")
    incoming = []
    for value in special_values(fl, t):
        result = arm(value)
        nxt = fl.new_block("div.check")
        bld.cbranch(bld.icmp_signed("==", b, ir.Constant(b.type, value)), done, nxt)
        incoming.append((result, bld.block))
        fl.enter(nxt)
    bld.branch(general)
    fl.enter(general)
    incoming.append((arm(GENERAL), bld.block))
    bld.branch(done)
    fl.enter(done)
    phi = bld.phi(incoming[0][0].type)
    for value, block in incoming:
        phi.add_incoming(value, block)
    return phi


@dataclass(frozen=True)
class SharedDivisor:
    """A divisor that two or more divisions in one expression divide by."""

    expr: S.Expr
    t: IntT  # the divisions' type, which the divisor is converted to
    key: tuple


def split(fl, shared: SharedDivisor, lower) -> ir.Value:
    """`lower()` once per outcome of the divisor's tests, each division in it taking the
    outcome and the tested value, joined once."""
    b = fl.value(shared.expr, shared.t)

    def arm(value):
        fl.known_divisors[shared.key] = (value, b)
        try:
            return lower()
        finally:
            del fl.known_divisors[shared.key]
    return by_divisor(fl, b, shared.t, arm)


def known_divisor(fl, right: S.Expr, t: IntT) -> tuple | None:
    """(outcome, value tested) when `right` is the divisor a `split` being lowered shares."""
    return fl.known_divisors.get((shape(fl, right), t)) if fl.known_divisors else None


def shared_divisor(fl, e: S.BinOp) -> SharedDivisor | None:
    """The divisor whose tests `e` takes on for the divisions in it, when `e` is the smallest
    expression holding two or more of them.  Only a plain expression qualifies -- reads of
    locals, fields and elements at constant or proven indices, constants, operators, and
    divisions by that one divisor -- so lowering it once per outcome adds no other test, and
    each read gives the same value in every copy (nothing in it writes)."""
    found = divisions(fl, e)
    if found is None or len(found) != 1:
        return None
    (key, n), = found.items()
    if n < 2 or key in fl.known_divisors:
        return None
    if any(divisions(fl, side)[key] == n for side in (e.left, e.right)):
        return None  # a smaller expression holds them all
    return SharedDivisor(first_divisor(fl, e, key), key[1], key)


def first_divisor(fl, e: S.Expr, key: tuple) -> S.Expr:
    """The divisor expression of the first division by `key` in the plain expression `e`."""
    todo = [e]
    while todo:
        n = todo.pop()
        if isinstance(n, S.BinOp):
            if n.op in ("//", "%") and n.right not in fl.c.values and divisor_key(fl, n) == key:
                return n.right
            todo += [n.right, n.left]
        elif isinstance(n, S.UnaryOp):
            todo.append(n.operand)
    raise AssertionError("a shared divisor outside its expression")


def divisor_key(fl, division: S.BinOp) -> tuple:
    return shape(fl, division.right), fl.c.types[division]


def divisions(fl, e: S.Expr) -> Counter | None:
    """The divisions by a variable in `e`, counted by divisor; None when `e` is not plain."""
    if e not in fl.division_counts:
        fl.division_counts[e] = plain_divisions(fl, e)
    return fl.division_counts[e]


def plain_divisions(fl, e: S.Expr) -> Counter | None:
    c = fl.c
    if e in c.values or isinstance(e, S.Constant):
        return Counter()
    if isinstance(e, S.Name):
        if e.id in fl.slots or e.id in fl.direct:
            return Counter()
        g = c.globals.get(e.id)  # a Const one is re-read each time (volatile): not plain
        return Counter() if g is not None and not g.const else None
    if isinstance(e, S.Attribute):
        return divisions(fl, e.value)
    if isinstance(e, S.Subscript):
        if isinstance(c.types.get(e.value), MapT) or (e.index not in c.values and e not in c.in_bounds):
            return None  # a map lookup, or an index tested at run time
        parts = [divisions(fl, e.value), divisions(fl, e.index)]
    elif isinstance(e, S.UnaryOp) and e.op != "not":
        parts = [divisions(fl, e.operand)]
    elif isinstance(e, S.BinOp):
        parts = [divisions(fl, e.left), divisions(fl, e.right)]
    else:
        return None
    if None in parts:
        return None
    counts = sum(parts, Counter())
    if isinstance(e, S.BinOp) and e.op in ("//", "%") and e.right not in c.values:
        counts[divisor_key(fl, e)] += 1
    return counts


def shape(fl, e: S.Expr) -> tuple:
    """A plain expression as a value: two of one shape in one plain expression read the same."""
    if e in fl.c.values or isinstance(e, S.Constant):
        return ("const", fl.c.values.get(e, getattr(e, "value", None)))
    if isinstance(e, S.Name):
        return ("name", e.id)
    if isinstance(e, S.Attribute):
        return ("attr", shape(fl, e.value), e.attr)
    if isinstance(e, S.Subscript):
        return ("item", shape(fl, e.value), shape(fl, e.index))
    if isinstance(e, S.UnaryOp):
        return ("unary", e.op, shape(fl, e.operand), fl.c.types[e])
    return ("binop", e.op, shape(fl, e.left), shape(fl, e.right), fl.c.types[e])


def core(fl, op: str, a: ir.Value, b: ir.Value, t: IntT, const: int | None) -> ir.Value:
    """Division by a divisor known not to be 0 (nor, at v4 when signed, -1)."""
    bld = fl.b
    if not t.signed:
        return bld.udiv(a, b) if op == "//" else bld.urem(a, b)
    if fl.ml.cpu == "v4":
        q, r = bld.sdiv(a, b), bld.srem(a, b)
    else:
        q, r = truncating_via_unsigned(bld, a, b)
    zero = ir.Constant(a.type, 0)
    # floor: with a non-zero remainder and operands of different signs, step the quotient down
    # and move the remainder into the divisor's sign
    if const is None:
        adjust = bld.and_(bld.icmp_signed("!=", r, zero), bld.icmp_signed("<", bld.xor(a, b), zero))
    else:  # a constant divisor's sign is known: only a remainder of the other sign adjusts
        adjust = bld.icmp_signed("<" if const > 0 else ">", r, zero)
    if op == "//":
        return bld.sub(q, bld.zext(adjust, a.type))
    return bld.select(adjust, bld.add(r, b), r)


def truncating_via_unsigned(bld: ir.IRBuilder, a: ir.Value, b: ir.Value):
    """C's truncating signed quotient and remainder from udiv/urem of |a| and |b| (|MIN| divides
    as 2**63 unsigned, so MIN // -1 wraps to MIN with no branch of its own)."""
    zero = ir.Constant(a.type, 0)
    a_neg, b_neg = bld.icmp_signed("<", a, zero), bld.icmp_signed("<", b, zero)
    ua = bld.select(a_neg, bld.neg(a), a)
    ub = bld.select(b_neg, bld.neg(b), b)
    uq, ur = bld.udiv(ua, ub), bld.urem(ua, ub)
    q = bld.select(bld.xor(a_neg, b_neg), bld.neg(uq), uq)
    r = bld.select(a_neg, bld.neg(ur), ur)
    return q, r
