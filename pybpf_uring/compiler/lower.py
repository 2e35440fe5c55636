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

from collections import Counter
from dataclasses import dataclass, field

import llvmlite.ir as ir

from . import syntax as S
from .builtins import CTX, MAP_DELETE_ELEM, TYPE_SIZE
from .checked import Checked, FunctionInfo
from .debuginfo import DebugInfo
from .lower_calls import CallLowering
from .lower_values import I8, I8P, I32, I64_IR, CtxAliasing, ValueLowering, ir_type, untyped
from .typesys import I64, NONE, U64, ArrayT, BoolT, IntT, MapT, PtrT, StructT, Type
from ..uapi import BPF_ANY

DATA_LAYOUT = "e-m:e-p:64:64-i64:64-i128:128-n32:64-S128"
CPUS = ("v1", "v2", "v3", "v4")


def machine_params(info: FunctionInfo) -> list:
    """The function's parameters as the kernel passes them: a struct_ops program gets one
    pointer to its arguments as u64s (what libbpf's BPF_PROG unpacks), the others their own."""
    if info.kind == "loop_step":
        return [("ctx", PtrT(U64))]
    return info.params


@dataclass(frozen=True)
class LoweredModule:
    ir: str            # LLVM IR text, before optimisation
    cpu: str
    path: str
    frames: dict       # function name → bytes of all its stack slots (an upper bound before
                       # LLVM shares slots; spills may add a little)
    spans: dict = field(default_factory=dict)  # function name → its def, where emit's errors point


def lower(checked: Checked, cpu: str = "v3") -> LoweredModule:
    return ModuleLowering(checked, cpu).run()


class ModuleLowering:
    def __init__(self, checked: Checked, cpu: str) -> None:
        self.c, self.cpu = checked, cpu
        self.m = ir.Module(name=checked.module.source.path)
        self.m.triple = "bpfel"
        self.m.data_layout = DATA_LAYOUT
        self.dbg = DebugInfo(self.m, [checked.module.source,
                                      *(f.node.span.source for f in checked.functions.values())])
        self.maps: dict[str, ir.GlobalVariable] = {}
        self.globals: dict[str, ir.GlobalVariable] = {}
        self.funcs: dict[str, ir.Function] = {}
        self.kfuncs: dict[str, ir.Function] = {}
        self.frames: dict[str, int] = {}
        self.ctx_aliasing = CtxAliasing(self.m)

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
        self.ctx_aliasing.finish()
        self.dbg.finish()
        return LoweredModule(str(self.m), self.cpu, self.c.module.source.path, self.frames,
                             {name: f.node.span for name, f in self.c.functions.items()})

    def declare_map(self, name: str, mt: MapT, line: int) -> None:
        """libbpf's BTF-defined map: a struct of pointers (type, max_entries, and key and value
        but for a ring buffer) whose BTF carries the facts."""
        ty = ir.LiteralStructType([I8P] * (4 if mt.keyed else 2))
        gv = untyped(ir.GlobalVariable(self.m, ty, name))
        gv.initializer = ir.Constant(ty, None)
        gv.section = ".maps"
        gv.align = 8
        self.dbg.map_variable(gv, name, mt, line)
        self.maps[name] = gv

    def declare_global(self, g) -> None:
        """A module-level variable: `.rodata` when Const (its loads are volatile, so the value
        the host sets before loading is the one read), else `.data`, or `.bss` when zero."""
        ty = ir_type(g.type)
        gv = untyped(ir.GlobalVariable(self.m, ty, g.name))
        gv.initializer = ir.Constant(ty, g.type.wrap(g.init) if isinstance(g.type, IntT)
                                     else bytearray(g.init) if g.init else None)
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
        fnty = ir.FunctionType(ret, [ir_type(t) for _, t in machine_params(info)])
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


class FunctionLowering(ValueLowering, CallLowering):
    def __init__(self, ml: ModuleLowering, info: FunctionInfo) -> None:
        self.ml, self.c, self.info = ml, ml.c, info
        self.fn = ml.funcs[info.name]
        self.placed = {id(b) for b in self.fn.blocks}  # blocks in the function (alive while it is)
        self.entry = self.fn.append_basic_block("entry")  # the only block placed up front
        self.b = ir.IRBuilder(self.entry)
        self.slots: dict[str, ir.Value] = {}  # local name → alloca (or the pointer of a ref param)
        self.loops: list[tuple[ir.Block, ir.Block]] = []  # (continue target, break target)
        self.temps: list[ir.AllocaInstr] = []  # helper-argument slots of the current statement
        self.direct: dict[str, ir.Value] = {}  # locals used as SSA values, never through a slot
        self.ctx_structs: dict[ir.Value, StructT] = {}  # a ctx pointer (static_offsets) → its struct
        self.passthrough_seq = 0
        # lower_div's divisors shared by the divisions of one expression
        self.known_divisors: dict[tuple, tuple] = {}  # divisor → (outcome, value tested), in a split
        self.division_counts: dict[S.Expr, Counter | None] = {}  # expression → its divisions by divisor

    # ----- setup ----------------------------------------------------------------------
    def run(self) -> None:
        info = self.info
        params = machine_params(info)
        self.ml.dbg.function(self.fn, info, params)
        self.b.debug_metadata = self.ml.dbg.location(info.node.span, self.fn)
        for (name, t), arg in zip(params, self.fn.args):
            arg.name = name
        for name, t in info.locals.items():
            self.slots[name] = self.alloca(t, name)
        if info.kind == "loop_step":  # the arguments arrive as an array of u64 (BPF_PROG's ctx)
            array = self.static_offsets(self.fn.args[0], machine_params(info)[0][1])
            values = [self.load(self.offset(array, 8 * i), t) for i, (_, t) in enumerate(info.params)]
        else:
            values = list(self.fn.args)
        for (name, t), v in zip(info.params, values):
            self.b.store(v, self.slots[name], align=t.align)
        if info.kind == "loop_step":
            self.direct[info.params[0][0]] = values[0]
        elif info.kind:  # the ctx: never reassigned, so used as the value itself
            self.direct[info.params[0][0]] = self.static_offsets(self.fn.args[0], info.params[0][1])
        for (name, t), arg in zip(info.params, self.fn.args):
            if not info.kind and info.ctx_params.get(name, {"loop_step"}) != {"loop_step"}:
                self.direct[name] = self.static_offsets(arg, t)  # a ctx passed on: the same rules
        for name, t in info.locals.items():
            if name not in dict(info.params) and isinstance(t, (IntT, BoolT, PtrT)):
                self.b.store(ir.Constant(ir_type(t), None), self.slots[name], align=t.align)
        body = self.new_block("body")
        self.b.branch(body)
        self.enter(body)
        self.block(info.node.body)
        if not self.b.block.is_terminated:
            self.b.ret_void() if info.ret == NONE else self.b.ret(ir.Constant(ir_type(info.ret), 0))

    def static_offsets(self, ctx: ir.Value, t: Type) -> ir.Value:
        """The ctx through `llvm.preserve.static.offset` (clang's preserve_static_offset): the
        BPF backend then keeps every field access at its constant offset from the ctx register.
        The verifier refuses any other ctx access ("dereference of modified ctx ptr"), and LLVM
        would otherwise turn `if c: v = ctx.a else: v = ctx.b` into one load at ctx + select.
        A struct ctx's field accesses get TBAA tags (`CtxAliasing`)."""
        fn = self.ml.m.declare_intrinsic("llvm.preserve.static.offset", (), ir.FunctionType(I8P, [I8P]))
        ptr = self.b.call(fn, [ctx])
        if isinstance(t, PtrT) and isinstance(t.target, StructT):
            self.ctx_structs[ptr] = t.target
        return ptr

    def new_block(self, name: str) -> ir.Block:
        """A block placed in the function only when code is emitted into it (as clang does), so
        the layout follows the source: a loop's exit comes after its body."""
        return ir.Block(parent=self.fn, name=name)

    def enter(self, block: ir.Block) -> None:
        if id(block) not in self.placed:  # by id: `in fn.blocks` compares each, quadratic in an elif chain
            self.placed.add(id(block))
            self.fn.blocks.append(block)
        self.b.position_at_end(block)

    def alloca(self, t: Type, name: str = "") -> ir.AllocaInstr:
        with self.b.goto_block(self.entry):
            if self.entry.instructions:
                self.b.position_after(self.entry.instructions[-1]) if not self.entry.is_terminated \
                    else self.b.position_before(self.entry.terminator)
            slot = untyped(self.b.alloca(ir_type(t), name=name))
        slot.align = max(t.align, 1)
        frames = self.ml.frames
        frames[self.info.name] = frames.get(self.info.name, 0) + max(t.size, 1)
        return slot

    def temp(self, t: Type) -> ir.AllocaInstr:
        """A stack slot for one helper argument (a map key or value), live until the end of the
        statement: its own slot, so no other key read on the way can overwrite it, and lifetime
        markers let LLVM share the stack between statements, as clang's locals do."""
        slot = self.alloca(t)
        self.lifetime("start", slot)
        self.temps.append(slot)
        return slot

    def lifetime(self, which: str, slot: ir.Value) -> None:
        fn = self.ml.m.declare_intrinsic(f"llvm.lifetime.{which}", [I8P], ir.FunctionType(ir.VoidType(), [I8P]))
        self.b.call(fn, [slot])

    # ----- statements -----------------------------------------------------------------
    def block(self, body) -> None:
        for stmt in body:
            if self.b.block.is_terminated:
                return  # code after return/break/continue never runs
            self.b.debug_metadata = self.ml.dbg.location(stmt.span, self.fn)
            first = len(self.temps)
            getattr(self, "stmt_" + type(stmt).__name__)(stmt)
            if not self.b.block.is_terminated:
                for slot in self.temps[first:]:
                    self.lifetime("end", slot)
            del self.temps[first:]

    def stmt_Pass(self, s) -> None:
        pass

    stmt_Global = stmt_Pass  # the checker resolved the names

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
            value = self.value_ptr(s.value, m.value)  # Python evaluates the value before the key
            self.map_update(target.value, self.key_ptr(target.index, m), value, BPF_ANY)
            return
        t = self.c.types[target]
        guards: list[ir.Value] = []
        addr = self.address(target, guards)
        with self.guarded(guards):
            self.store_into(addr, t, s.value)

    def store_into(self, addr: ir.Value, t: Type, value: S.Expr) -> None:
        if isinstance(t, (StructT, ArrayT)):
            call = self.c.calls.get(value) if isinstance(value, S.Call) else None
            if call is not None and call.kind == "ctor":
                self.construct(addr, value)
            else:
                self.memcpy(addr, self.aggregate(value), t)
            return
        self.store(self.value(value, t), addr, t, field=True)

    def stmt_AugAssign(self, s: S.AugAssign) -> None:
        target = s.target
        if isinstance(target, S.Subscript) and isinstance(self.c.types.get(target.value), MapT):
            self.map_augassign(s, self.c.types[target.value])
            return
        t = self.c.types[target]
        guards: list[ir.Value] = []
        addr = self.address(target, guards)
        with self.guarded(guards):
            self.store(self.binop(s.op, self.load(addr, t, field=True), t, s.value), addr, t, field=True)

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
        i = self.load(counter, I64)
        self.b.cbranch(self.b.icmp_signed("<" if step > 0 else ">", i, ir.Constant(I64_IR, stop)),
                       body, after)
        self.enter(body)
        self.store(self.convert(i, I64, t), self.slots[s.target.id], t)
        self.loop(latch, after, s.body)
        self.enter(latch)
        self.store(self.b.add(self.load(counter, I64), ir.Constant(I64_IR, step)), counter, I64)
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
