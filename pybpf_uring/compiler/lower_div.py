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
    special = [(ir.Constant(ty, 0), ir.Constant(ty, 0) if op == "//" else a)]
    if t.signed and fl.ml.cpu == "v4":
        special.append((ir.Constant(ty, -1), bld.neg(a) if op == "//" else ir.Constant(ty, 0)))
    done = fl.new_block("div.end")
    general = fl.new_block("div")
    incoming = []
    for value, result in special:
        nxt = fl.new_block("div.check")
        bld.cbranch(bld.icmp_signed("==", b, value), done, nxt)
        incoming.append((result, bld.block))
        fl.enter(nxt)
    bld.branch(general)
    fl.enter(general)
    r = core(fl, op, a, b, t, None)
    incoming.append((r, bld.block))
    bld.branch(done)
    fl.enter(done)
    phi = bld.phi(ty)
    for value, block in incoming:
        phi.add_incoming(value, block)
    return phi


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
