"""Lowering: the checked program → LLVM IR (llvmlite.ir), one function per program/subprogram.

Shapes follow what clang emits for the same C at -O2, so LLVM's BPF backend produces the same
code: locals are allocas in the entry block (mem2reg turns scalars into registers), structs and
arrays are byte arrays addressed with i8 GEPs at the checker's C offsets, helpers are calls
through `inttoptr (ID)`, maps are BTF-defined globals in `.maps`, subprograms are internal
noinline functions in `.text` (BPF-to-BPF calls).  Semantics the DSL defines differently from C
are made explicit here: division by zero gives 0 (modulo gives the dividend) as on BPF, signed
`//` and `%` floor like Python, variable shift counts are masked to the width, and a variable
array index outside the array reads 0 and writes nothing.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import llvmlite.ir as ir

from . import syntax as S
from .builtins import (BPF_ANY, BPF_NOEXIST, CTX, INT, MAP_DELETE_ELEM, MAP_LOOKUP_ELEM,
                       MAP_UPDATE_ELEM, PREPS, TRACE_PRINTK, TYPE_SIZE)
from .check import Checked, FunctionInfo
from .debuginfo import DebugInfo
from .typesys import BOOL, I64, NONE, U64, ArrayT, BoolT, IntT, MapT, PtrT, StructT, Type

DATA_LAYOUT = "e-m:e-p:64:64-i64:64-i128:128-n32:64-S128"
I8P = ir.IntType(8).as_pointer()
I1, I8, I32, I64_IR = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
CPUS = ("v1", "v2", "v3", "v4")
# program kinds whose ctx is checked field by field (the RFC's io_uring ctx, the kernel's __sk_buff)
FIELD_EXACT_CTX = frozenset({"iouring", "socket_filter"})


@dataclass(frozen=True)
class LoweredModule:
    ir: str            # LLVM IR text, before optimisation
    cpu: str
    path: str
    frames: dict       # function name → bytes of all its stack slots (an upper bound before
                       # LLVM shares slots; spills may add a little)


def lower(checked: Checked, cpu: str = "v3") -> LoweredModule:
    return ModuleLowering(checked, cpu).run()


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


class ModuleLowering:
    def __init__(self, checked: Checked, cpu: str) -> None:
        self.c, self.cpu = checked, cpu
        self.m = ir.Module(name=checked.module.source.path)
        self.m.triple = "bpfel"
        self.m.data_layout = DATA_LAYOUT
        self.dbg = DebugInfo(self.m, checked.module.source)
        self.maps: dict[str, ir.GlobalVariable] = {}
        self.globals: dict[str, ir.GlobalVariable] = {}
        self.funcs: dict[str, ir.Function] = {}
        self.kfuncs: dict[str, ir.Function] = {}
        self.frames: dict[str, int] = {}

    def run(self) -> LoweredModule:
        for name, (mt, line) in self.c.maps.items():
            self.declare_map(name, mt, line)
        for g in self.c.globals.values():
            self.declare_global(g)
        for info in self.c.functions.values():
            self.declare_function(info)
        for info in self.c.functions.values():
            FunctionLowering(self, info).run()
        for info in self.c.programs:
            if info.kind == "loop_step":
                self.struct_ops(info)
        self.license()
        self.dbg.finish()
        return LoweredModule(str(self.m), self.cpu, self.c.module.source.path, self.frames)

    def declare_map(self, name: str, mt: MapT, line: int) -> None:
        """libbpf's BTF-defined map: a struct of four pointers whose BTF carries the facts."""
        ty = ir.LiteralStructType([I8P] * 4)
        gv = ir.GlobalVariable(self.m, ty, name)
        gv.initializer = ir.Constant(ty, None)
        gv.section = ".maps"
        gv.align = 8
        self.dbg.map_variable(gv, name, mt, line)
        self.maps[name] = gv

    def declare_global(self, g) -> None:
        """A module-level variable: `.rodata` when Const (its loads are volatile, so the value
        the host sets before loading is the one read), else `.data`, or `.bss` when zero."""
        ty = ir_type(g.type)
        gv = ir.GlobalVariable(self.m, ty, g.name)
        gv.initializer = ir.Constant(ty, g.type.wrap(g.init) if isinstance(g.type, IntT) else None)
        gv.global_constant = g.const
        gv.align = g.type.align
        self.dbg.global_variable(gv, g)
        self.globals[g.name] = gv

    def kfunc(self, k) -> ir.Function:
        """The extern declaration of a kernel function, in `.ksyms` as libbpf expects."""
        if k.symbol not in self.kfuncs:
            ret = I8P if k.ret is None else ir_type(k.ret)
            args = [I8P if p.kind == CTX else I64_IR if p.kind == TYPE_SIZE else ir_type(p.type)
                    for p in k.params]
            fn = ExternFunction(self.m, ir.FunctionType(ret, args), k.symbol)
            fn.section = ".ksyms"
            self.dbg.kfunc(fn, k)
            self.kfuncs[k.symbol] = fn
        return self.kfuncs[k.symbol]

    def struct_ops(self, info: FunctionInfo) -> None:
        """`struct io_uring_bpf_ops NAME_ops` in `.struct_ops.link`: the loader creates the
        struct_ops map from it (with ring_fd set) and links it."""
        ty = ir.LiteralStructType([I8P, I32, ir.ArrayType(I8, 4), I8P])
        gv = ir.GlobalVariable(self.m, ty, f"{info.name}_ops")
        fn = self.funcs[info.name]
        gv.initializer = ir.Constant(ty, [fn.bitcast(I8P), ir.Constant(I32, 0),
                                          ir.Constant(ir.ArrayType(I8, 4), None), ir.Constant(I8P, None)])
        gv.section = ".struct_ops.link"
        gv.align = 8
        self.dbg.struct_ops_variable(gv, info)

    def declare_function(self, info: FunctionInfo) -> None:
        ret = ir.VoidType() if info.ret == NONE else ir_type(info.ret)
        fnty = ir.FunctionType(ret, [ir_type(t) for _, t in info.params])
        fn = ir.Function(self.m, fnty, info.name)
        fn.attributes.add("nounwind")  # or LLVM emits .eh_frame
        if info.kind:
            fn.section = info.section
        else:
            fn.linkage = "internal"
            fn.attributes.add("noinline")  # a real BPF-to-BPF call, as the user wrote it
        self.funcs[info.name] = fn

    def license(self) -> None:
        data = bytearray(b"GPL\0")
        ty = ir.ArrayType(I8, len(data))
        gv = ir.GlobalVariable(self.m, ty, "_license")
        gv.initializer = ir.Constant(ty, data)
        gv.section = "license"
        gv.align = 1


class FunctionLowering:
    def __init__(self, ml: ModuleLowering, info: FunctionInfo) -> None:
        self.ml, self.c, self.info = ml, ml.c, info
        self.fn = ml.funcs[info.name]
        self.entry = self.fn.append_basic_block("entry")  # the only block placed up front
        self.b = ir.IRBuilder(self.entry)
        self.slots: dict[str, ir.Value] = {}  # local name → alloca (or the pointer of a ref param)
        self.loops: list[tuple[ir.Block, ir.Block]] = []  # (continue target, break target)
        self.scratch: dict[tuple, ir.AllocaInstr] = {}
        self.passthrough_seq = 0

    # ----- setup ----------------------------------------------------------------------
    def run(self) -> None:
        info = self.info
        self.ml.dbg.function(self.fn, info)
        self.b.debug_metadata = self.ml.dbg.location(info.node.span, self.fn)
        for (name, t), arg in zip(info.params, self.fn.args):
            arg.name = name
        for name, t in info.locals.items():
            self.slots[name] = self.alloca(t, name)
        for (name, t), arg in zip(info.params, self.fn.args):
            self.b.store(arg, self.slots[name], align=t.align)
        for name, t in info.locals.items():
            if name not in dict(info.params) and isinstance(t, (IntT, BoolT, PtrT)):
                self.b.store(ir.Constant(ir_type(t), None), self.slots[name], align=t.align)
        body = self.new_block("body")
        self.b.branch(body)
        self.enter(body)
        self.block(info.node.body)
        if not self.b.block.is_terminated:
            self.b.ret_void() if info.ret == NONE else self.b.ret(ir.Constant(ir_type(info.ret), 0))

    def new_block(self, name: str) -> ir.Block:
        """A block placed in the function only when code is emitted into it (as clang does), so
        the layout follows the source: a loop's exit comes after its body."""
        return ir.Block(parent=self.fn, name=name)

    def enter(self, block: ir.Block) -> None:
        if block not in self.fn.blocks:
            self.fn.blocks.append(block)
        self.b.position_at_end(block)

    def alloca(self, t: Type, name: str = "") -> ir.AllocaInstr:
        with self.b.goto_block(self.entry):
            if self.entry.instructions:
                self.b.position_after(self.entry.instructions[-1]) if not self.entry.is_terminated \
                    else self.b.position_before(self.entry.terminator)
            slot = self.b.alloca(ir_type(t), name=name)
        slot.align = max(t.align, 1)
        frames = self.ml.frames
        frames[self.info.name] = frames.get(self.info.name, 0) + max(t.size, 1)
        return slot

    def temp(self, t: Type, key: object) -> ir.AllocaInstr:
        """A stack slot for a helper argument, reused by every call site of the same kind."""
        k = (t.name if not isinstance(t, StructT) else id(t), key)
        if k not in self.scratch:
            self.scratch[k] = self.alloca(t)
        return self.scratch[k]

    # ----- statements -----------------------------------------------------------------
    def block(self, body) -> None:
        for stmt in body:
            if self.b.block.is_terminated:
                return  # code after return/break/continue never runs
            self.b.debug_metadata = self.ml.dbg.location(stmt.span, self.fn)
            getattr(self, "stmt_" + type(stmt).__name__)(stmt)

    def stmt_Pass(self, s) -> None:
        pass

    def stmt_Break(self, s) -> None:
        self.b.branch(self.loops[-1][1])

    def stmt_Continue(self, s) -> None:
        self.b.branch(self.loops[-1][0])

    def stmt_Return(self, s: S.Return) -> None:
        if s.value is None:
            self.b.ret_void()
        else:
            self.b.ret(self.value(s.value, self.info.ret))

    def stmt_ExprStmt(self, s: S.ExprStmt) -> None:
        self.call(s.value)

    def stmt_Delete(self, s: S.Delete) -> None:
        m = self.c.types[s.target.value]
        self.helper(MAP_DELETE_ELEM, I64_IR, [self.map_ptr(s.target.value), self.key_ptr(s.target.index, m)])

    def stmt_Assign(self, s: S.Assign) -> None:
        target = s.target
        if s.value is None:
            t = self.c.types.get(target) or self.info.locals[target.id]
            if isinstance(t, (StructT, ArrayT)):
                self.memset(self.slots[target.id], t)
            return
        if isinstance(target, S.Subscript) and isinstance(self.c.types.get(target.value), MapT):
            m = self.c.types[target.value]
            key = self.key_ptr(target.index, m)
            self.map_update(target.value, key, self.value_ptr(s.value, m.value), BPF_ANY)
            return
        t = self.c.types[target]
        guards: list[ir.Value] = []
        addr = self.address(target, guards)
        with self.guarded(guards):
            self.store_into(addr, t, s.value, self.exact(target))

    def store_into(self, addr: ir.Value, t: Type, value: S.Expr, exact: bool = False) -> None:
        if isinstance(t, (StructT, ArrayT)):
            call = self.c.calls.get(value) if isinstance(value, S.Call) else None
            if call is not None and call.kind == "ctor":
                self.construct(addr, value)
            else:
                self.memcpy(addr, self.aggregate(value), t)
            return
        self.store(self.value(value, t), addr, t, exact)

    def stmt_AugAssign(self, s: S.AugAssign) -> None:
        target = s.target
        if isinstance(target, S.Subscript) and isinstance(self.c.types.get(target.value), MapT):
            self.map_augassign(s, self.c.types[target.value])
            return
        t = self.c.types[target]
        guards: list[ir.Value] = []
        addr = self.address(target, guards)
        exact = self.exact(target)
        with self.guarded(guards):
            self.store(self.binop(s.op, self.load(addr, t, exact), t, s.value, t), addr, t, exact)

    def stmt_If(self, s: S.If) -> None:
        cond = self.condition(s.test)
        then = self.new_block("if.then")
        after = self.new_block("if.end")
        other = self.new_block("if.else") if s.orelse else after
        self.b.cbranch(cond, then, other)
        for block, body in ((then, s.body), (other, s.orelse)):
            if block is after:
                continue
            self.enter(block)
            self.block(body)
            if not self.b.block.is_terminated:
                self.b.branch(after)
        self.enter(after)

    def stmt_For(self, s: S.For) -> None:
        start, stop, step = self.c.loops[s]
        t = self.info.locals[s.target.id]
        counter = self.alloca(I64, "range")
        self.b.store(ir.Constant(I64_IR, start), counter, align=8)
        head, body, latch, after = (self.new_block(n) for n in
                                    ("for.cond", "for.body", "for.inc", "for.end"))
        self.b.branch(head)
        self.enter(head)
        i = self.b.load(counter, align=8)
        self.b.cbranch(self.b.icmp_signed("<" if step > 0 else ">", i, ir.Constant(I64_IR, stop)),
                       body, after)
        self.enter(body)
        self.store(self.convert(i, I64, t), self.slots[s.target.id], t)
        self.loop(latch, after, s.body)
        self.enter(latch)
        self.b.store(self.b.add(self.b.load(counter, align=8), ir.Constant(I64_IR, step)), counter, align=8)
        self.b.branch(head)
        self.enter(after)

    def stmt_While(self, s: S.While) -> None:
        head, body, after = (self.new_block(n) for n in ("while.cond", "while.body", "while.end"))
        self.b.branch(head)
        self.enter(head)
        self.b.cbranch(self.condition(s.test), body, after)
        self.enter(body)
        self.loop(head, after, s.body)
        self.enter(after)

    def loop(self, cont: ir.Block, brk: ir.Block, body) -> None:
        self.loops.append((cont, brk))
        self.block(body)
        if not self.b.block.is_terminated:
            self.b.branch(cont)
        self.loops.pop()

    # ----- memory ---------------------------------------------------------------------
    def typed_ptr(self, addr: ir.Value, t: Type) -> ir.Value:
        return self.b.bitcast(addr, ir_type(t).as_pointer())

    def load(self, addr: ir.Value, t: Type, exact: bool = False) -> ir.Value:
        ld = self.b.load(self.typed_ptr(addr, t), align=t.align)
        if exact:
            ld.__class__ = VolatileLoad
        return ld

    def store(self, value: ir.Value, addr: ir.Value, t: Type, exact: bool = False) -> None:
        st = self.b.store(value, self.typed_ptr(addr, t), align=t.align)
        if exact:
            st.__class__ = VolatileStore

    def exact(self, e: S.Expr) -> bool:
        """Whether `e` is a field of a ctx checked field by field: then each access must stay
        exactly as written (LLVM would merge `ctx.wait_idx = 1; ctx.wait_nr = 1` into one
        8-byte store), which volatile guarantees."""
        if self.info.kind not in FIELD_EXACT_CTX:
            return False
        while isinstance(e, (S.Attribute, S.Subscript)):
            e = e.value
        return isinstance(e, S.Name) and e.id == self.info.params[0][0]

    def byte_ptr(self, v: ir.Value) -> ir.Value:
        return v if v.type == I8P else self.b.bitcast(v, I8P)

    def offset(self, base: ir.Value, off: ir.Value | int) -> ir.Value:
        base = self.byte_ptr(base)
        if isinstance(off, int):
            if off == 0:
                return base
            off = ir.Constant(I64_IR, off)
        return self.b.gep(base, [off], inbounds=True)

    def memcpy(self, dst: ir.Value, src: ir.Value, t: Type) -> None:
        """Copy a struct or array; both sides hold a `t`, so both are `t.align` aligned, which
        lets the backend copy in words rather than bytes."""
        fn = self.ml.m.declare_intrinsic("llvm.memcpy", [I8P, I8P, I64_IR])
        call = self.b.call(fn, [self.byte_ptr(dst), self.byte_ptr(src), ir.Constant(I64_IR, t.size),
                                ir.Constant(I1, 0)], arg_attrs={0: (), 1: ()})
        call.arg_attributes[0].align = call.arg_attributes[1].align = t.align

    def memset(self, dst: ir.Value, t: Type) -> None:
        fn = self.ml.m.declare_intrinsic("llvm.memset", [I8P, I64_IR])
        call = self.b.call(fn, [self.byte_ptr(dst), ir.Constant(I8, 0), ir.Constant(I64_IR, t.size),
                                ir.Constant(I1, 0)], arg_attrs={0: ()})
        call.arg_attributes[0].align = t.align

    def address(self, e: S.Expr, guards: list[ir.Value] | None = None) -> ir.Value:
        """The address of an lvalue (a local, a field, an array element, ref[0]).  Each variable
        array index adds `index < length` to `guards`: the access happens only when all hold,
        so a program never touches memory outside the array (and the verifier sees why)."""
        if isinstance(e, S.Name):
            return self.slots[e.id] if e.id in self.slots else self.byte_ptr(self.ml.globals[e.id])
        if isinstance(e, S.Attribute):
            st = self.struct_of(e.value)
            return self.offset(self.base_address(e.value, guards), st.field(e.attr).offset)
        if isinstance(e, S.Subscript):
            base_t = self.c.types[e.value]
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

    def struct_of(self, e: S.Expr) -> StructT:
        t = self.c.types[e]
        return t.target if isinstance(t, PtrT) else t

    def read(self, e: S.Expr, t: Type) -> ir.Value:
        """Load an lvalue; outside its array bounds the value is 0."""
        guards: list[ir.Value] = []
        addr = self.address(e, guards)
        exact = self.exact(e)
        if not guards:
            return self.load(addr, t, exact)
        return self.either(functools.reduce(self.b.and_, guards), lambda: self.load(addr, t, exact))

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
        if e.id not in self.slots:  # a global; a Const one is re-read as the host set it
            return self.load(self.address(e), t, exact=self.c.globals[e.id].const)
        return self.b.load(self.slots[e.id], align=t.align)

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
        return self.b.load(result)

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
        return self.binop(e.op, self.value(e.left, t if e.op not in ("<<", ">>") else None), t, e.right, t)

    def binop(self, op: str, a: ir.Value, t: IntT, right: S.Expr, rt: Type) -> ir.Value:
        if a.type != ir_type(t):
            a = self.convert(a, self.c.types.get(right) if False else t, t)
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
        from .lower_div import divide
        return divide(self, op, a, b, t, self.c.values.get(right))

    # ----- calls ----------------------------------------------------------------------
    def expr_Call(self, e: S.Call, t: Type) -> ir.Value:
        return self.call(e)

    def call(self, e: S.Call) -> ir.Value | None:
        target = self.c.calls[e]
        return getattr(self, "call_" + target.kind)(e, target.target)

    def helper(self, id_: int, ret: ir.Type, args: list[ir.Value]) -> ir.Value:
        fnty = ir.FunctionType(ret, [a.type for a in args])
        callee = ir.Constant(I64_IR, id_).inttoptr(fnty.as_pointer())
        callee.function_type = fnty  # llvmlite calls only Functions; a helper is an address
        return self.b.call(callee, args)

    def call_helper(self, e: S.Call, h) -> ir.Value:
        args = []
        for a, p in zip(e.args, h.params):
            if p.kind == CTX:
                args.append(self.value(a))
            elif p.kind == INT:
                args.append(self.value(a, U64 if not p.type.signed else I64))
            else:
                t = self.c.types[a]
                addr = self.base_address(a)
                size = (t.target if isinstance(t, PtrT) else t).size
                args += [self.byte_ptr(addr), ir.Constant(I64_IR, size)]
        return self.convert(self.helper(h.id, I64_IR, args), I64, h.ret)

    def call_kfunc(self, e: S.Call, target) -> ir.Value:
        k, ret = target
        args = []
        for a, p in zip(e.args, k.params):
            if p.kind == CTX:
                args.append(self.value(a))
            elif p.kind == INT:
                args.append(self.value(a, p.type))
            else:
                args.append(ir.Constant(I64_IR, ret.target.size))
        result = self.b.call(self.ml.kfunc(k), args)
        return result

    def call_prep(self, e: S.Call, name: str) -> None:
        consts, fields = PREPS[name]
        sqe = e.args[0]
        base = self.base_address(sqe)
        st = self.struct_of(sqe)
        self.memset(base, st)  # from a zeroed SQE, as uring.py's host versions and liburing do
        for fname, v in consts.items():
            f = st.field(fname)
            self.store(ir.Constant(ir_type(f.type), f.type.wrap(v)), self.offset(base, f.offset), f.type)
        for fname, a in zip(fields, e.args[1:]):
            f = st.field(fname)
            self.store(self.value(a, f.type), self.offset(base, f.offset), f.type)

    def call_cast(self, e: S.Call, t: IntT) -> ir.Value:
        if e in self.c.values:
            return ir.Constant(ir_type(t), self.c.values[e])
        return self.value(e.args[0], t)

    def call_subprog(self, e: S.Call, name: str) -> ir.Value:
        callee = self.c.functions[name]
        args = []
        for a, (_, pt) in zip(e.args, callee.params):
            if isinstance(pt, PtrT):
                args.append(self.byte_ptr(self.base_address(a)))
            else:
                args.append(self.value(a, pt))
        return self.b.call(self.ml.funcs[name], args)

    def call_lookup(self, e: S.Call, m: MapT) -> ir.Value:
        return self.lookup(e.func.value, self.key_ptr(e.args[0], m))

    def call_print(self, e: S.Call, _) -> None:
        """print(...) → bpf_trace_printk with a format built at compile time, kept on the stack
        (a .rodata string would need a global data map)."""
        fmt, values = [], []
        for a in e.args:
            t = self.c.types[a]
            if a in self.c.values or not isinstance(t, (IntT, BoolT)):
                if isinstance(a, S.Constant) and isinstance(a.value, str):
                    fmt.append(a.value.replace("%", "%%"))
                    continue
            it = t if isinstance(t, IntT) else U64
            fmt.append({(True, 64): "%lld", (False, 64): "%llu"}.get((it.signed, it.bits),
                                                                      "%d" if it.signed else "%u"))
            values.append(self.value(a, I64 if it.signed else U64))
        data = (" ".join(fmt) + "\n").encode() + b"\0"
        data += b"\0" * (-len(data) % 8)
        buf = self.alloca(ArrayT(U64, len(data) // 8))
        for i in range(0, len(data), 8):
            word = int.from_bytes(data[i:i + 8], "little")
            self.store(ir.Constant(I64_IR, word), self.offset(buf, i), U64)
        self.helper(TRACE_PRINTK, I64_IR, [self.byte_ptr(buf), ir.Constant(I64_IR, len(data))] + values)

    def call_ctor(self, e: S.Call, st: StructT) -> ir.Value:
        tmp = self.alloca(st)
        self.construct(tmp, e)
        return tmp

    def construct(self, addr: ir.Value, e: S.Call) -> None:
        st: StructT = self.c.calls[e].target
        self.memset(addr, st)
        for kw in e.keywords:
            f = st.field(kw.name)
            self.store_into(self.offset(addr, f.offset), f.type, kw.value)

    def aggregate(self, e: S.Expr) -> ir.Value:
        """The address of a struct or array value (a local, a field, a constructed temporary,
        a copy out of a map or a reference)."""
        t = self.c.types[e]
        if isinstance(e, S.Call):
            return self.call(e) if self.c.calls[e].kind == "ctor" else self.call(e)
        if isinstance(t, PtrT):
            return self.value(e)
        if isinstance(e, S.Subscript) and isinstance(self.c.types[e.value], MapT):
            m = self.c.types[e.value]
            tmp = self.alloca(t)
            ref = self.call_lookup_key(e, m)
            found = self.b.icmp_unsigned("!=", ref, ir.Constant(I8P, None))
            with self.b.if_else(found) as (then, otherwise):
                with then:
                    self.memcpy(tmp, ref, t)
                with otherwise:
                    self.memset(tmp, t)
            return tmp
        guards: list[ir.Value] = []
        addr = self.address(e, guards)
        if not guards:
            return addr
        tmp = self.alloca(t)  # out of bounds, a copy reads as zeros
        self.memset(tmp, t)
        with self.guarded(guards):
            self.memcpy(tmp, addr, t)
        return tmp

    # ----- maps -----------------------------------------------------------------------
    def map_ptr(self, e: S.Expr) -> ir.Value:
        return self.byte_ptr(self.ml.maps[e.id])

    def key_ptr(self, key: S.Expr, m: MapT) -> ir.Value:
        return self.value_ptr(key, m.key, "key")

    def value_ptr(self, e: S.Expr, t: Type, role: str = "value") -> ir.Value:
        if isinstance(t, (StructT, ArrayT)):
            return self.byte_ptr(self.aggregate(e))
        slot = self.temp(t, role)
        self.store(self.value(e, t), slot, t)
        return self.byte_ptr(slot)

    def call_lookup_key(self, e: S.Subscript, m: MapT) -> ir.Value:
        return self.lookup(e.value, self.key_ptr(e.index, m))

    def lookup(self, map_expr: S.Expr, key: ir.Value) -> ir.Value:
        return self.helper(MAP_LOOKUP_ELEM, I8P, [self.map_ptr(map_expr), key])

    def map_read(self, e: S.Subscript, m: MapT) -> ir.Value:
        """m[k]: the value, or zero when the key is missing."""
        ref = self.call_lookup_key(e, m)
        found = self.b.icmp_unsigned("!=", ref, ir.Constant(I8P, None))
        return self.either(found, lambda: self.load(ref, m.value))

    def either(self, cond: ir.Value, compute) -> ir.Value:
        """`compute()` when cond holds, else zero of the same type."""
        before = self.b.block
        then = self.new_block("then")
        join = self.new_block("join")
        self.b.cbranch(cond, then, join)
        self.enter(then)
        v = compute()
        then_end = self.b.block
        self.b.branch(join)
        self.enter(join)
        phi = self.b.phi(v.type)
        phi.add_incoming(v, then_end)
        phi.add_incoming(ir.Constant(v.type, None), before)
        return phi

    def map_update(self, map_expr: S.Expr, key: ir.Value, value: ir.Value, flags: int) -> None:
        self.helper(MAP_UPDATE_ELEM, I64_IR, [self.map_ptr(map_expr), key, value, ir.Constant(I64_IR, flags)])

    def map_augassign(self, s: S.AugAssign, m: MapT) -> None:
        """m[k] op= v: in place when the key exists, else m[k] = 0 op v (a missing key reads 0)."""
        target = s.target
        key = self.key_ptr(target.index, m)  # evaluated once, as Python does
        ref = self.lookup(target.value, key)
        found = self.b.icmp_unsigned("!=", ref, ir.Constant(I8P, None))
        t = m.value
        with self.b.if_else(found) as (then, otherwise):
            with then:
                self.store(self.binop(s.op, self.load(ref, t), t, s.value, t), ref, t)
            with otherwise:
                slot = self.temp(t, "value")
                self.store(self.binop(s.op, ir.Constant(ir_type(t), 0), t, s.value, t), slot, t)
                self.map_update(target.value, key, self.byte_ptr(slot), BPF_NOEXIST)


class ExternFunction(ir.Function):
    """A declaration with debug info: LLVM wants `declare !dbg !N ...`, where llvmlite prints
    the attachment after the prototype (where only a definition may carry it)."""

    def descr_prototype(self, buf):
        text: list[str] = []
        md = self.metadata
        self.metadata = {}
        try:
            super().descr_prototype(text)
        finally:
            self.metadata = md
        attachments = " ".join(f"!{k} {v.get_reference()}" for k, v in md.items())
        buf.append(text[0].replace("declare ", f"declare {attachments} ", 1) if attachments else text[0])


class VolatileLoad(ir.LoadInstr):
    """llvmlite's load, printed `load volatile` (llvmlite has no volatile flag)."""

    def descr(self, buf):
        text: list[str] = []
        super().descr(text)
        buf.append(text[0].replace("load ", "load volatile ", 1))


class VolatileStore(ir.StoreInstr):
    def descr(self, buf):
        text: list[str] = []
        super().descr(text)
        buf.append(text[0].replace("store ", "store volatile ", 1))


def common(a: Type, b: Type) -> IntT:
    from .typesys import common_int
    a = U64 if isinstance(a, BoolT) else a
    b = U64 if isinstance(b, BoolT) else b
    return common_int(a, b)
