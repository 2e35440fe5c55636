"""Lowering of memory and values: addresses of lvalues with their bounds guards, loads and
stores, conversions, operators and comparisons.

A mixin of `lower.FunctionLowering`, which owns the builder and the function's slots.
"""
from __future__ import annotations

import contextlib
import functools
import itertools

import llvmlite.ir as ir

from . import syntax as S
from .lower_div import divide, known_divisor, shared_divisor, split
from .typesys import BOOL, INTS, U64, ArrayT, BoolT, IntT, MapT, PtrT, StructT, Type, common_int

I8P = ir.PointerType()  # opaque `ptr`, as LLVM 22 has them: no bitcasts between a GEP and its load
I1, I8, I32, I64_IR = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)


def untyped(v: ir.Value) -> ir.Value:
    """`v` (an alloca or a global) referenced as an opaque `ptr`, like every address here.
    llvmlite gives a slot or a global a typed pointer (`[20 x i8]*` for a struct), checks a store
    through it against its pointee, and cannot bitcast it away (a typed pointer compares equal
    to `ptr`, so the cast is skipped): a field written at offset 0 of a struct global would be
    refused.  LLVM itself only ever sees `ptr`."""
    v.type = I8P
    return v


def ir_type(t: Type) -> ir.Type:
    if isinstance(t, IntT):
        return ir.IntType(t.bits)
    if isinstance(t, BoolT):
        return I1
    if isinstance(t, PtrT):
        return I8P
    if isinstance(t, (StructT, ArrayT)):
        return ir.ArrayType(I8, t.size)
    raise AssertionError(f"no LLVM type for {t}")


class CtxAliasing:
    """Struct-path TBAA tags (`!tbaa`) on the ctx's scalar fields, as clang tags `ctx->field`.

    A ctx field is read and written through llvm.bpf.getelementptr.and.load/store (see
    `FunctionLowering.static_offsets`): calls that hide their offset from LLVM's alias analysis,
    so without a tag a store to one field clobbers every other one, and `ctx.out = ctx.a // ctx.b`
    then `ctx.b = ctx.a % ctx.b` reloads ctx.a and ctx.b and divides twice.  A tag names the
    struct and the field's offset; TBAA then says what C's struct-path TBAA says -- two scalar
    fields of one struct at different offsets never overlap -- and no more:
    - only a scalar field read or written whole at a constant offset from the ctx is tagged; a
      word copy spanning fields, a variable index, a memcpy, a helper or a call are not, and an
      untagged access may alias anything;
    - each ctx struct has a TBAA root of its own, so tags of two different structs (one memory
      seen as two types) may alias each other too.
    """

    def __init__(self, m: ir.Module) -> None:
        self.m = m
        self.accesses: dict[StructT, list[tuple[ir.Instruction, int]]] = {}

    def tag(self, instr: ir.Instruction, struct: StructT, offset: int) -> None:
        self.accesses.setdefault(struct, []).append((instr, offset))

    def finish(self) -> None:
        """Attach the tags, once every access is known: a struct's type node lists the offsets
        accessed (LLVM's verifier walks from the struct by offset to the field's type)."""
        for n, (struct, accesses) in enumerate(self.accesses.items()):
            root = self.m.add_metadata([f"pybpf_uring ctx {n} {struct.name}"])
            scalar = self.m.add_metadata([f"{struct.name} field", root, ir.Constant(I64_IR, 0)])
            offsets = sorted({off for _, off in accesses})
            base = self.m.add_metadata([struct.name, *itertools.chain.from_iterable(
                (scalar, ir.Constant(I64_IR, off)) for off in offsets)])
            tags = {off: self.m.add_metadata([base, scalar, ir.Constant(I64_IR, off)]) for off in offsets}
            for instr, off in accesses:
                instr.set_metadata("tbaa", tags[off])


class ValueLowering:
    # ----- memory ---------------------------------------------------------------------
    def load(self, addr: ir.Value, t: Type, volatile: bool = False, field: bool = False) -> ir.Value:
        """`field`: `addr` is an lvalue of type `t` (a whole variable, field or element)."""
        ld = self.b.load(addr, typ=ir_type(t), align=t.align)
        if volatile:
            ld.__class__ = VolatileLoad
        if field:
            self.tag_ctx_field(ld, addr, t)
        return ld

    def store(self, value: ir.Value, addr: ir.Value, t: Type, field: bool = False) -> None:
        st = self.b.store(value, addr, align=t.align)
        if field:
            self.tag_ctx_field(st, addr, t)

    def tag_ctx_field(self, instr: ir.Instruction, addr: ir.Value, t: Type) -> None:
        """Tag an access to a scalar lvalue at a constant offset from a ctx (`CtxAliasing`)."""
        field = self.ctx_field(addr)
        if field is not None and isinstance(t, (IntT, BoolT, PtrT)):
            self.ml.ctx_aliasing.tag(instr, *field)

    def ctx_field(self, addr: ir.Value) -> tuple[StructT, int] | None:
        """(the ctx's struct, the offset) when `addr` is a constant offset from a ctx."""
        offset = 0
        while isinstance(addr, ir.GEPInstr) and isinstance(addr.indices[0], ir.Constant):
            offset += addr.indices[0].constant
            addr = addr.pointer
        struct = self.ctx_structs.get(addr)
        return None if struct is None else (struct, offset)

    def offset(self, base: ir.Value, off: ir.Value | int) -> ir.Value:
        if isinstance(off, int):
            if off == 0:
                return base
            off = ir.Constant(I64_IR, off)
        return self.b.gep(base, [off], inbounds=True, source_etype=I8)

    def memcpy(self, dst: ir.Value, src: ir.Value, t: Type) -> None:
        """Copy a struct or array; both sides hold a `t`, so both are `t.align` aligned, which
        lets the backend copy in words rather than bytes.  A copy to or from the ctx is loads
        and stores of words (`copy_words`): the backend expands a memcpy after LLVM has shared
        the field's address between statements (`arr = ctx.data` ... `ctx.data = arr`), a
        pointer moved off the ctx, which the verifier refuses ("dereference of modified ctx
        ptr"), where each load and store stays at its constant offset from the ctx."""
        if self.ctx_field(dst) is not None or self.ctx_field(src) is not None:
            self.copy_words(dst, src, t)
            return
        fn = self.ml.m.declare_intrinsic("llvm.memcpy", [I8P, I8P, I64_IR])
        call = self.b.call(fn, [dst, src, ir.Constant(I64_IR, t.size), ir.Constant(I1, 0)],
                           arg_attrs={0: (), 1: ()})
        call.arg_attributes[0].align = call.arg_attributes[1].align = t.align

    def copy_words(self, dst: ir.Value, src: ir.Value | None, t: Type) -> None:
        """Copy `t` (zero it when `src` is None) in loads and stores of its alignment."""
        word = INTS[f"u{8 * t.align}"]
        for off in range(0, t.size, t.align):
            v = ir.Constant(ir_type(word), 0) if src is None else self.load(self.offset(src, off), word)
            self.store(v, self.offset(dst, off), word)

    def memset(self, dst: ir.Value, t: Type) -> None:
        if self.ctx_field(dst) is not None:  # the ctx: as in memcpy
            self.copy_words(dst, None, t)
            return
        fn = self.ml.m.declare_intrinsic("llvm.memset", [I8P, I64_IR])
        call = self.b.call(fn, [dst, ir.Constant(I8, 0), ir.Constant(I64_IR, t.size), ir.Constant(I1, 0)],
                           arg_attrs={0: ()})
        call.arg_attributes[0].align = t.align

    def address(self, e: S.Expr, guards: list[ir.Value] | None = None) -> ir.Value:
        """The address of an lvalue (a local, a field, an array element, ref[0]).  Each variable
        array index adds `index < length` to `guards`: the access happens only when all hold,
        so a program never touches memory outside the array (and the verifier sees why)."""
        if isinstance(e, S.Name):
            return self.slots[e.id] if e.id in self.slots else self.ml.globals[e.id]
        if isinstance(e, S.Attribute):
            st = self.struct_of(e.value)
            return self.offset(self.base_address(e.value, guards), st.field(e.attr).offset)
        if isinstance(e, S.Subscript):
            base_t = self.c.types[e.value]
            if isinstance(base_t, MapT):  # a part of m[k]: read from a copy of the value (zero if missing)
                return self.aggregate(e)
            base = self.base_address(e.value, guards)
            if isinstance(base_t, PtrT) and isinstance(base_t.target, IntT):
                return base
            arr = base_t.target if isinstance(base_t, PtrT) else base_t
            if e.index in self.c.values:
                return self.offset(base, self.c.values[e.index] * arr.elem.size)
            if e in self.c.in_bounds:
                idx = self.convert(self.value(e.index), self.c.types[e.index], U64)
                return self.offset(base, self.b.mul(idx, ir.Constant(I64_IR, arr.elem.size)))
            idx = self.opaque(self.convert(self.value(e.index), self.c.types[e.index], U64))
            if guards is None:
                raise AssertionError("a variable index needs a bounds guard")
            guards.append(self.b.icmp_unsigned("<", idx, ir.Constant(I64_IR, arr.length)))
            return self.offset(base, self.b.mul(idx, ir.Constant(I64_IR, arr.elem.size)))
        return self.aggregate(e)

    def opaque(self, v: ir.Value) -> ir.Value:
        """`v` through `llvm.bpf.passthrough`, which LLVM cannot see through: a bounds check
        LLVM could prove (`x % 40 < 40`) stays in the code, because the verifier cannot prove it
        (it does not track ranges through `%`) and needs the comparison on this register."""
        self.passthrough_seq += 1
        fn = self.ml.m.declare_intrinsic("llvm.bpf.passthrough", [v.type, v.type],
                                         ir.FunctionType(v.type, [I32, v.type]))
        return self.b.call(fn, [ir.Constant(I32, self.passthrough_seq), v])

    def guarded(self, guards: list[ir.Value]):
        """A block that runs only when every bounds guard holds."""
        if not guards:
            return contextlib.nullcontext()
        return self.b.if_then(functools.reduce(self.b.and_, guards))

    def base_address(self, e: S.Expr, guards: list[ir.Value] | None = None) -> ir.Value:
        t = self.c.types[e]
        if isinstance(t, PtrT):
            return self.value(e)
        return self.address(e, guards)

    def in_ctx(self, e: S.Expr) -> bool:
        """Whether `e` is the program's ctx or a part of it (a field, an array in it)."""
        while isinstance(e, (S.Attribute, S.Subscript)):
            e = e.value
        return isinstance(e, S.Name) and e.id in self.direct

    def struct_of(self, e: S.Expr) -> StructT:
        t = self.c.types[e]
        return t.target if isinstance(t, PtrT) else t

    def read(self, e: S.Expr, t: Type) -> ir.Value:
        """Load an lvalue; outside its array bounds the value is 0."""
        guards: list[ir.Value] = []
        addr = self.address(e, guards)
        if not guards:
            return self.load(addr, t, field=True)
        return self.either(functools.reduce(self.b.and_, guards), lambda: self.load(addr, t, field=True))

    # ----- values ---------------------------------------------------------------------
    def value(self, e: S.Expr, want: Type | None = None) -> ir.Value:
        """The value of a scalar expression, converted to `want` when given."""
        t = self.c.types[e]
        if e in self.c.values and isinstance(t, (IntT, BoolT)):
            v = ir.Constant(ir_type(t), t.wrap(self.c.values[e]) if isinstance(t, IntT) else self.c.values[e])
        else:
            v = getattr(self, "expr_" + type(e).__name__)(e, t)
        return v if want is None else self.convert(v, t, want)

    def convert(self, v: ir.Value, src: Type, dst: Type) -> ir.Value:
        if isinstance(src, PtrT) and isinstance(dst, (StructT, IntT)):
            return self.load(v, dst) if not isinstance(dst, StructT) else v
        if src == dst or not isinstance(dst, (IntT, BoolT)):
            return v
        if isinstance(dst, BoolT):
            return self.truth(v, src)
        to = ir.IntType(dst.bits)
        if isinstance(src, BoolT):
            return self.b.zext(v, to)
        if src.bits > dst.bits:
            return self.b.trunc(v, to)
        if src.bits < dst.bits:
            return self.b.sext(v, to) if src.signed else self.b.zext(v, to)
        return v

    def truth(self, v: ir.Value, t: Type) -> ir.Value:
        if isinstance(t, BoolT):
            return v
        if isinstance(t, PtrT):
            return self.b.icmp_unsigned("!=", v, ir.Constant(I8P, None))
        return self.b.icmp_unsigned("!=", v, ir.Constant(v.type, 0))

    def condition(self, e: S.Expr) -> ir.Value:
        return self.truth(self.value(e), self.c.types[e])

    def expr_Name(self, e: S.Name, t: Type) -> ir.Value:
        if isinstance(t, MapT):
            return self.map_ptr(e)
        if e.id in self.direct:
            return self.direct[e.id]
        if e.id not in self.slots:  # a global; a Const one is re-read as the host set it
            return self.load(self.address(e), t, volatile=self.c.globals[e.id].const)
        return self.load(self.slots[e.id], t)

    def expr_Attribute(self, e: S.Attribute, t: Type) -> ir.Value:
        return self.read(e, t)

    def expr_Subscript(self, e: S.Subscript, t: Type) -> ir.Value:
        if isinstance(self.c.types[e.value], MapT):
            return self.map_read(e, self.c.types[e.value])
        return self.read(e, t)

    def expr_UnaryOp(self, e: S.UnaryOp, t: Type) -> ir.Value:
        if e.op == "not":
            return self.b.not_(self.condition(e.operand))
        v = self.value(e.operand, t)
        return {"-": self.b.neg, "~": self.b.not_, "+": lambda x: x}[e.op](v)

    def expr_BoolOp(self, e: S.BoolOp, t: Type) -> ir.Value:
        """Short-circuit: later operands run only when the earlier ones did not decide."""
        result = self.alloca(BOOL)
        done = self.new_block("bool.end")
        for v in e.values[:-1]:
            c = self.condition(v)
            self.b.store(c, result)
            nxt = self.new_block("bool.next")
            self.b.cbranch(c, nxt, done) if e.op == "and" else self.b.cbranch(c, done, nxt)
            self.enter(nxt)
        self.b.store(self.condition(e.values[-1]), result)
        self.b.branch(done)
        self.enter(done)
        return self.load(result, BOOL)

    def expr_IfExp(self, e: S.IfExp, t: Type) -> ir.Value:
        """Branches, each side converted to the expression's type, joined by a phi: only the
        chosen side runs, as Python says; LLVM turns side-effect-free ones into a select, as it
        does clang's `?:`."""
        then, other, done = self.new_block("cond.then"), self.new_block("cond.else"), self.new_block("cond.end")
        self.b.cbranch(self.condition(e.test), then, other)
        incoming = []
        for block, side in ((then, e.then), (other, e.otherwise)):
            self.enter(block)
            incoming.append((self.value(side, t), self.b.block))
            self.b.branch(done)
        self.enter(done)
        phi = self.b.phi(ir_type(t))
        for v, block in incoming:
            phi.add_incoming(v, block)
        return phi

    def expr_Compare(self, e: S.Compare, t: Type) -> ir.Value:
        operands = (e.left,) + e.comparators
        result = None
        for op, a, b in zip(e.ops, operands, operands[1:]):
            c = self.compare(op, a, b)
            result = c if result is None else self.b.and_(result, c)
        return result

    def compare(self, op: str, a: S.Expr, b: S.Expr) -> ir.Value:
        if op in ("is", "is not"):
            return self.b.icmp_unsigned("==" if op == "is" else "!=", self.value(a), ir.Constant(I8P, None))
        ta, tb = self.c.types[a], self.c.types[b]
        t = common(ta, tb)
        va, vb = self.value(a, t), self.value(b, t)
        return (self.b.icmp_signed if t.signed else self.b.icmp_unsigned)(op, va, vb)

    def expr_BinOp(self, e: S.BinOp, t: Type) -> ir.Value:
        shared = shared_divisor(self, e)
        if shared is not None:  # divisions by one divisor in e share its tests
            return split(self, shared, lambda: self.expr_BinOp(e, t))
        return self.binop(e.op, self.value(e.left, t if e.op not in ("<<", ">>") else None), t, e.right)

    def binop(self, op: str, a: ir.Value, t: IntT, right: S.Expr) -> ir.Value:
        if op in ("<<", ">>"):
            count = self.value(right, t)
            if right not in self.c.values:
                count = self.b.and_(count, ir.Constant(count.type, t.bits - 1))  # BPF masks too
            return self.b.shl(a, count) if op == "<<" else \
                (self.b.ashr(a, count) if t.signed else self.b.lshr(a, count))
        b = self.value(right, t)
        simple = {"+": self.b.add, "-": self.b.sub, "*": self.b.mul, "&": self.b.and_,
                  "|": self.b.or_, "^": self.b.xor}
        if op in simple:
            return simple[op](a, b)
        known = known_divisor(self, right, t)
        if known is not None:  # inside `split`: the outcome of the tests and the value tested
            return divide(self, op, a, known[1], t, None, known[0])
        return divide(self, op, a, b, t, self.c.values.get(right))


class VolatileLoad(ir.LoadInstr):
    """llvmlite's load, printed `load volatile` (llvmlite has no volatile flag): a Const global
    is read from memory, never folded to the value it had when compiled."""

    def descr(self, buf):
        text: list[str] = []
        super().descr(text)
        buf.append(text[0].replace("load ", "load volatile ", 1))


def common(a: Type, b: Type) -> IntT:
    a = U64 if isinstance(a, BoolT) else a
    b = U64 if isinstance(b, BoolT) else b
    return common_int(a, b)
