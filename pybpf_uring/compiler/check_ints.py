"""Integer conversions the checker warns about, and the value bounds that keep them quiet.

Python's integers neither wrap nor narrow; a BPF program's do, as C's.  Two conversions lose a
value without a word: storing a wider integer into a narrower location keeps its low bits
(`ctx.tag = ctx.a`, a u64 into a u8 field), and comparing a signed value with an unsigned one
as wide converts the signed side, so a negative value compares as a huge one.  Both are
warnings, and only where the value can actually be lost: the checker bounds each integer
expression (`value_range`) from what it proves -- constants, a range() loop variable's
values, a mask, a modulo, a shift, a cast from a narrower unsigned type -- so a range() index
compared with a u64, or `b = ctx.a & 0xff` into a u8, says nothing.

A mixin of `check_body.BodyChecker`, which owns the function's locals and the error sink.
"""
from __future__ import annotations

from . import syntax as S
from .typesys import IntT, Type, common_int


class IntRules:
    def value_range(self, e: S.Expr) -> tuple[int, int] | None:
        """The least and greatest value `e` can have, as far as the checker proves it; None
        for an expression that is not an integer."""
        t = self.out.types.get(e)
        if not isinstance(t, IntT):
            return None
        whole = (t.min, t.max)
        value = self.out.values.get(e, self.fold(e))
        if value is not None:
            return (t.wrap(value),) * 2
        if isinstance(e, S.Name):
            known = self.ranges.get(e.id)
            return known if known is not None and t.min <= known[0] <= known[1] <= t.max else whole
        call = self.out.calls.get(e) if isinstance(e, S.Call) else None
        if call is not None and call.kind == "cast" and len(e.args) == 1:
            inner = self.value_range(e.args[0])
            return inner if inner is not None and t.min <= inner[0] <= inner[1] <= t.max else whole
        if call is not None and call.kind in ("min", "max", "abs"):
            found = builtin_range(call.kind, [self.value_range(a) for a in e.args], call.target)
            return found if found is not None and t.min <= found[0] <= found[1] <= t.max else whole
        if isinstance(e, S.IfExp):
            sides = [self.value_range(x) for x in (e.then, e.otherwise)]
            if None not in sides and all(t.min <= lo <= hi <= t.max for lo, hi in sides):
                return min(lo for lo, _ in sides), max(hi for _, hi in sides)
            return whole
        if isinstance(e, S.BinOp):
            a, b = self.value_range(e.left), self.value_range(e.right)
            if a is None or b is None:
                return whole
            found = binop_range(e.op, a, b)
            if found is not None and t.min <= found[0] <= found[1] <= t.max:
                return found
        return whole

    def narrowing_warning(self, e: S.Expr, got: Type, want: IntT) -> None:
        """A value stored by an assignment into a narrower integer location, when it can fall
        outside that location's type: the store keeps the low bits, where Python would keep
        the number."""
        body, index = self.position
        stmt = body[index] if index < len(body) else None
        if not (isinstance(stmt, S.Assign) and stmt.value is e and isinstance(got, IntT)) \
                or got.bits <= want.bits:
            return
        known = self.value_range(e)
        if known is None or want.min <= known[0] and known[1] <= want.max:
            return
        target, value = self.source_text(stmt.target), self.source_text(e)
        written = target + (f": {self.source_text(stmt.annotation)}" if stmt.annotation is not None else "")
        self.mod.errors.warn(e.span, f"{value} is a {got}, stored in {target}, a {want}: only its low "
                             f"{want.bits} bits are kept",
                             f"write the conversion to show it is meant: `{written} = {want}({value})`")

    def signedness_warning(self, op: str, a: S.Expr, b: S.Expr, ta: Type, tb: Type) -> None:
        """C's conversions turn the signed side of a comparison unsigned when the unsigned side
        is at least as wide: a negative value then compares as a huge one.  A signed side the
        checker proves non-negative (a range() index, a mask, a cast from a narrower unsigned
        type) compares the same either way."""
        if not (isinstance(ta, IntT) and isinstance(tb, IntT)) or ta.signed == tb.signed:
            return
        t = common_int(ta, tb)
        if t.signed:
            return
        signed_side = a if ta.signed else b
        known = self.value_range(signed_side)
        if known is not None and known[0] >= 0:
            return
        self.mod.errors.warn(signed_side.span, f"comparison of {ta} {op} {tb} is done as {t}: "
                             f"a negative {self.source_text(signed_side)} compares as a large value",
                             f"convert both sides to a signed type, e.g. i64(...) {op} i64(...)")


def binop_range(op: str, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int] | None:
    """The bounds of `a op b` as Python computes it (the caller keeps them only when they fit
    the expression's type, so nothing wrapped), or None when not bounded simply."""
    (alo, ahi), (blo, bhi) = a, b
    if op == "+":
        return alo + blo, ahi + bhi
    if op == "-":
        return alo - bhi, ahi - blo
    if op == "*":
        corners = [x * y for x in (alo, ahi) for y in (blo, bhi)]
        return min(corners), max(corners)
    if op == "&" and (alo >= 0 or blo >= 0):
        return 0, min(h for lo, h in (a, b) if lo >= 0)
    if op == "%" and blo == bhi and blo > 0:   # Python's modulo takes the divisor's sign
        return 0, blo - 1
    if op == "//" and blo == bhi and blo > 0:
        return alo // blo, ahi // blo
    if op == ">>" and alo >= 0 and blo >= 0:
        return alo >> bhi, ahi >> blo
    return None


def builtin_range(name: str, args: list, t: IntT) -> tuple[int, int] | None:
    """The bounds of min/max/abs over arguments of those bounds, computed in their common type
    `t` (None when an argument's bounds do not fit it: its conversion could wrap)."""
    if None in args or not all(t.min <= lo <= hi <= t.max for lo, hi in args):
        return None
    if name == "min":
        return min(lo for lo, _ in args), min(hi for _, hi in args)
    if name == "max":
        return max(lo for lo, _ in args), max(hi for _, hi in args)
    (lo, hi), = args
    return (lo, hi) if lo >= 0 else (-hi, -lo) if hi <= 0 else (0, max(-lo, hi))
