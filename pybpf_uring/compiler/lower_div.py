"""Integer division and modulo with the DSL's semantics, for every cpu.

- `x // 0 == 0` and `x % 0 == x`, as the BPF instructions define them, and `MIN // -1` wraps to
  MIN (`MIN % -1` is 0), as the kernel's sdiv does.  LLVM calls all three undefined and would
  optimise on that assumption, so a divisor that is not a known constant reaches the division
  through llvm.bpf.passthrough (`fl.opaque`): LLVM knows nothing of it and emits the one BPF
  instruction, whose own result for 0 and -1 is the DSL's -- no branch, no second division.
- Signed `//` and `%` floor like Python: the quotient rounds towards -inf and the remainder takes
  the divisor's sign.  cpu v4 has signed division (`sdiv`); v1-v3 do not (LLVM refuses it), so
  there it is built from unsigned division of the magnitudes.  The floor step is C's: from the
  truncating q and r, `q - 1` and `r + b` when r is not 0 and a and b differ in sign -- and for
  `//` when b is not 0, since a zero divisor leaves q at 0 (its r + b adds nothing).  A signed
  divisor is made opaque shared (one value to LLVM however often it is divided by), so `a // b`
  and `a % b` share the magnitudes and the division; an unsigned one is made opaque per use,
  which keeps BPF's own mod instruction instead of a multiply and a subtract.
- A constant divisor is divided as it is: LLVM turns it into its multiply-and-shift sequence.
"""
from __future__ import annotations

import llvmlite.ir as ir

from .typesys import IntT


def divide(fl, op: str, a: ir.Value, b: ir.Value, t: IntT, const: int | None) -> ir.Value:
    bld = fl.b
    ty = a.type
    if t.signed and t.bits < 32:  # BPF divides 32 or 64 bits wide; narrow values are exact in 32
        wide = ir.IntType(32)
        r = divide(fl, op, bld.sext(a, wide), bld.sext(b, wide), IntT(32, True), const)
        return bld.trunc(r, ty)
    if const is not None:
        c = t.wrap(const)
        if c == 0:  # never a division LLVM could call undefined
            return ir.Constant(ty, 0) if op == "//" else a
        if t.signed and c == -1:
            return bld.neg(a) if op == "//" else ir.Constant(ty, 0)
        return core(fl, op, a, b, t, c)
    return core(fl, op, a, b, t, None)


def core(fl, op: str, a: ir.Value, b: ir.Value, t: IntT, const: int | None) -> ir.Value:
    """The division by a constant that is neither 0 nor (when signed) -1, or by a variable b
    that reaches the division instruction opaque."""
    bld = fl.b
    if not t.signed:
        d = b if const is not None else fl.opaque(b)
        return bld.udiv(a, d) if op == "//" else bld.urem(a, d)
    hide = (lambda v: v) if const is not None else (lambda v: fl.opaque(v, shared=True))
    if fl.ml.cpu == "v4":
        d = hide(b)
        q, r = bld.sdiv(a, d), bld.srem(a, d)
    else:
        q, r = truncating_via_unsigned(bld, a, b, hide)
    zero = ir.Constant(a.type, 0)
    if const is None:
        adjust = bld.and_(bld.icmp_signed("!=", r, zero), bld.icmp_signed("<", bld.xor(a, b), zero))
        if op == "//":
            adjust = bld.and_(adjust, bld.icmp_signed("!=", b, zero))
    else:  # a constant divisor's sign is known: only a remainder of the other sign adjusts
        adjust = bld.icmp_signed("<" if const > 0 else ">", r, zero)
    if op == "//":
        return bld.sub(q, bld.zext(adjust, a.type))
    return bld.select(adjust, bld.add(r, b), r)


def truncating_via_unsigned(bld: ir.IRBuilder, a: ir.Value, b: ir.Value, hide):
    """C's truncating signed quotient and remainder from udiv/urem of |a| and |b| (a zero b is
    a zero |b|, and |MIN| divides as 2**63 unsigned, so MIN // -1 wraps to MIN)."""
    zero = ir.Constant(a.type, 0)
    a_neg, b_neg = bld.icmp_signed("<", a, zero), bld.icmp_signed("<", b, zero)
    ua = bld.select(a_neg, bld.neg(a), a)
    ub = hide(bld.select(b_neg, bld.neg(b), b))
    uq, ur = bld.udiv(ua, ub), bld.urem(ua, ub)
    q = bld.select(bld.xor(a_neg, b_neg), bld.neg(uq), uq)
    r = bld.select(a_neg, bld.neg(ur), ur)
    return q, r
