"""Integer division and modulo with the DSL's semantics, for every cpu.

- `x // 0 == 0` and `x % 0 == x`, as the BPF instructions define them (LLVM would call it
  undefined and optimise on that assumption, so a non-constant divisor is guarded).
- Signed `//` and `%` floor like Python: the quotient rounds towards -inf and the remainder takes
  the divisor's sign.  cpu v4 has signed division (`sdiv`); v1-v3 do not (LLVM refuses it), so
  there it is built from unsigned division of the magnitudes.
- `MIN // -1` wraps to MIN, as the kernel's sdiv does.
"""
from __future__ import annotations

import llvmlite.ir as ir

from .typesys import IntT


def divide(fl, op: str, a: ir.Value, b: ir.Value, t: IntT, const: int | None) -> ir.Value:
    bld = fl.b
    ty = a.type
    zero, one = ir.Constant(ty, 0), ir.Constant(ty, 1)
    if const is not None and t.wrap(const) != 0:
        b_safe, is_zero = b, None
    else:
        is_zero = bld.icmp_unsigned("==", b, zero)
        b_safe = bld.select(is_zero, one, b)
    if not t.signed:
        r = bld.udiv(a, b_safe) if op == "//" else bld.urem(a, b_safe)
    else:
        r = signed_floor(fl, op, a, b_safe, t, const)
    if is_zero is None:
        return r
    return bld.select(is_zero, zero if op == "//" else a, r)


def signed_floor(fl, op: str, a: ir.Value, b: ir.Value, t: IntT, const: int | None) -> ir.Value:
    bld = fl.b
    ty = a.type
    zero = ir.Constant(ty, 0)
    if t.bits < 32:  # BPF divides 32 or 64 bits wide; narrow values are exact in 32
        wide = ir.IntType(32)
        r = signed_floor(fl, op, bld.sext(a, wide), bld.sext(b, wide), IntT(32, True), const)
        return bld.trunc(r, ty)
    minus_one = const is not None and t.wrap(const) == -1
    if minus_one:  # no remainder, and MIN // -1 must wrap rather than trap or be undefined
        return bld.neg(a) if op == "//" else zero
    if fl.ml.cpu == "v4":
        if const is None:  # guard MIN // -1: make the divisor 1 and negate afterwards
            is_m1 = bld.icmp_signed("==", b, ir.Constant(ty, -1))
            b = bld.select(is_m1, ir.Constant(ty, 1), b)
        q, r = bld.sdiv(a, b), bld.srem(a, b)
    else:
        q, r = truncating_via_unsigned(bld, a, b)
    # floor: when the remainder is non-zero and the signs differ, step the quotient down and
    # move the remainder into the divisor's sign
    adjust = bld.and_(bld.icmp_signed("!=", r, zero),
                      bld.icmp_signed("<", bld.xor(r, b), zero))
    if op == "//":
        result = bld.sub(q, bld.zext(adjust, ty))
        if fl.ml.cpu == "v4" and const is None:
            result = bld.select(is_m1, bld.neg(result), result)
        return result
    return bld.select(adjust, bld.add(r, b), r)  # a divisor guarded from -1 to 1 leaves r = 0


def truncating_via_unsigned(bld: ir.IRBuilder, a: ir.Value, b: ir.Value):
    """C's truncating signed quotient and remainder from udiv/urem of |a| and |b|."""
    ty = a.type
    zero = ir.Constant(ty, 0)
    a_neg, b_neg = bld.icmp_signed("<", a, zero), bld.icmp_signed("<", b, zero)
    ua = bld.select(a_neg, bld.neg(a), a)
    ub = bld.select(b_neg, bld.neg(b), b)
    uq, ur = bld.udiv(ua, ub), bld.urem(ua, ub)
    q = bld.select(bld.xor(a_neg, b_neg), bld.neg(uq), uq)
    r = bld.select(a_neg, bld.neg(ur), ur)
    return q, r
