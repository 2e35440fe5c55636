"""Lowering of calls and maps: helpers by ID, kfuncs, subprograms, inlined preps and casts,
print(), struct constructors, and the map operations (lookups, reads that give 0 when a key
is missing, updates, in-place `m[k] op= v`, setdefault, and a ring buffer's records).

A mixin of `lower.FunctionLowering`.
"""
from __future__ import annotations

import llvmlite.ir as ir

from . import syntax as S
from .builtins import (CTX, INT, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, PREPS, RINGBUF_DISCARD, RINGBUF_OUTPUT,
                       RINGBUF_RESERVE, RINGBUF_SUBMIT, TRACE_PRINTK)
from .lower_values import I8P, I32, I64_IR, ir_type
from .typesys import I64, U8, U32, U64, ArrayT, BoolT, IntT, MapT, PtrT, StructT, Type
from ..uapi import BPF_NOEXIST, EINVAL, ENOENT


class CallLowering:
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
                args += [addr, ir.Constant(I64_IR, size)]
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

    def call_cq(self, e: S.Call, name: str) -> ir.Value | None:
        """The RFC's reap and wait on a mainline CQ view (`ring: CqRing`, `cqes: Cqe[N]`)."""
        if name == "cq_wait":  # lp.cq_wait_idx = cq.ring.cq_head + n
            lp, cq, n = e.args
            head = self.load(self.cq_field(cq, "cq_head"), U32)
            wait = self.struct_of(lp).field("cq_wait_idx")
            self.store(self.b.add(head, self.value(n, U32)), self.offset(self.base_address(lp), wait.offset), U32)
            return None
        cq, cqe = e.args
        head = self.load(self.cq_field(cq, "cq_head"), U32)
        tail = self.load(self.cq_field(cq, "cq_tail"), U32, volatile=True)  # the kernel moves it
        mask = self.load(self.cq_field(cq, "cq_ring_mask"), U32)
        cqes = self.struct_of(cq).field("cqes")
        index = self.opaque(self.b.zext(self.b.and_(head, mask), I64_IR))  # bounded for the verifier
        inside = self.b.icmp_unsigned("<", index, ir.Constant(I64_IR, cqes.type.length))
        empty = self.b.icmp_unsigned("==", head, tail)
        result = self.b.select(empty, ir.Constant(I32, -ENOENT), ir.Constant(I32, -EINVAL))
        before = self.b.block
        take, done = self.new_block("cq.take"), self.new_block("cq.done")
        self.b.cbranch(self.b.and_(self.b.not_(empty), inside), take, done)
        self.enter(take)
        slot = self.offset(self.base_address(cq), self.b.add(ir.Constant(I64_IR, cqes.offset),
                                                               self.b.mul(index, ir.Constant(I64_IR, cqes.type.elem.size))))
        self.memcpy(self.base_address(cqe), slot, cqes.type.elem)
        self.store(self.b.add(head, ir.Constant(I32, 1)), self.cq_field(cq, "cq_head"), U32)
        self.b.branch(done)
        self.enter(done)
        phi = self.b.phi(I32)
        phi.add_incoming(ir.Constant(I32, 0), take)
        phi.add_incoming(result, before)
        return phi

    def cq_field(self, cq: S.Expr, name: str) -> ir.Value:
        view = self.struct_of(cq)
        ring = view.field("ring")
        return self.offset(self.base_address(cq), ring.offset + ring.type.field(name).offset)

    def call_prep(self, e: S.Call, name: str) -> None:
        consts, fields = PREPS[name]
        sqe = e.args[0]
        base = self.base_address(sqe)
        st = self.struct_of(sqe)
        self.memset(base, st)  # from a zeroed SQE, as uring.py's host versions and liburing do
        for fname, v in consts.items():
            if v == 0:
                # already 0; a byte store of 0 there would also let LLVM merge it into the
                # memset at the store's alignment, 1: 64 byte stores instead of 8 words
                continue
            f = st.field(fname)
            self.store(ir.Constant(ir_type(f.type), f.type.wrap(v)), self.offset(base, f.offset), f.type)
        for fname, a in zip(fields, e.args[1:]):
            f = st.field(fname)
            self.store(self.value(a, f.type), self.offset(base, f.offset), f.type)

    def call_cast(self, e: S.Call, t: IntT) -> ir.Value:
        if e in self.c.values:
            return ir.Constant(ir_type(t), self.c.values[e])
        return self.value(e.args[0], t)

    def call_min(self, e: S.Call, t: IntT) -> ir.Value:
        """min/max: every argument once, left to right, in the common type `t`; each step a
        compare and a select, as clang emits `a < b ? a : b` (LLVM makes them smin/umin)."""
        op = "<" if self.c.calls[e].kind == "min" else ">"
        compare = self.b.icmp_signed if t.signed else self.b.icmp_unsigned
        values = [self.value(a, t) for a in e.args]
        best = values[0]
        for v in values[1:]:
            best = self.b.select(compare(op, v, best), v, best)
        return best

    call_max = call_min

    def call_abs(self, e: S.Call, t: IntT) -> ir.Value:
        """abs(x): `x < 0 ? -x : x` in x's width, read as unsigned (the checker's type), so abs
        of the type's minimum is exact: abs(i8(-128)) is 128; an unsigned x is its own."""
        x = self.value(e.args[0], t)
        if not t.signed:
            return x
        return self.b.select(self.b.icmp_signed("<", x, ir.Constant(x.type, 0)), self.b.neg(x), x)

    def call_log2(self, e: S.Call, t: IntT) -> ir.Value:
        """log2(v): the log2 histogram bucket of v, 64 - ctlz(v): 0 for 0, k for 2**(k-1) <= v <
        2**k.  The backend expands ctlz into shifts and a popcount, straight-line code."""
        v = self.value(e.args[0], U64)
        ctlz = self.ml.m.declare_intrinsic("llvm.ctlz", [I64_IR], ir.FunctionType(I64_IR, [I64_IR, ir.IntType(1)]))
        bits = self.b.call(ctlz, [v, ir.Constant(ir.IntType(1), 0)])
        return self.b.trunc(self.b.sub(ir.Constant(I64_IR, 64), bits), ir_type(t))

    def call_linear(self, e: S.Call, params: tuple[int, int, int]) -> ir.Value:
        """linear(v, lo, hi, step): v's bucket, packed as bpf/hist.py reads it: the bucket's
        lower bound (lo or hi, flagged, for the values outside), the step above it."""
        from ..bpf.hist import LINEAR_ABOVE, LINEAR_BELOW
        lo, hi, step = params
        v = self.value(e.args[0], U64)

        def c(n: int) -> ir.Constant:
            return ir.Constant(I64_IR, n)
        inside = self.b.add(self.b.mul(self.b.udiv(self.b.sub(v, c(lo)), c(step)), c(step)), c(lo))
        bucket = self.b.select(self.b.icmp_unsigned(">=", v, c(hi)), c(hi | LINEAR_ABOVE), inside)
        bucket = self.b.select(self.b.icmp_unsigned("<", v, c(lo)), c(lo | LINEAR_BELOW), bucket)
        return self.b.or_(bucket, c(step << 32))

    def call_subprog(self, e: S.Call, name: str) -> ir.Value:
        callee = self.c.functions[name]
        args = []
        for a, (_, pt) in zip(e.args, callee.params):
            if isinstance(pt, PtrT) and isinstance(a, S.Name):
                args.append(self.base_address(a))  # a local by reference, or the ctx passed on
            elif isinstance(pt, PtrT):
                args.append(self.off_ctx(a, self.base_address(a), pt.target))
            else:
                args.append(self.value(a, pt))
        return self.b.call(self.ml.funcs[name], args)

    def call_lookup(self, e: S.Call, m: MapT) -> ir.Value:
        return self.lookup(e.func.value, self.key_ptr(e.args[0], m))

    def call_setdefault(self, e: S.Call, m: MapT) -> ir.Value:
        """m.setdefault(k, v): the value's reference, after inserting v if k was missing (with
        BPF_NOEXIST, so a key another CPU inserted meanwhile keeps its value).  NULL still when
        the insert failed (a full map), which the checker makes the program test."""
        key = self.key_ptr(e.args[0], m)
        value = self.value_ptr(e.args[1], m.value)  # both arguments before the call, as Python
        ref = self.lookup(e.func.value, key)
        before = self.b.block
        insert, join = self.new_block("setdefault.insert"), self.new_block("setdefault.end")
        self.b.cbranch(self.b.icmp_unsigned("==", ref, ir.Constant(I8P, None)), insert, join)
        self.enter(insert)
        self.map_update(e.func.value, key, value, BPF_NOEXIST)
        again = self.lookup(e.func.value, key)
        self.b.branch(join)
        self.enter(join)
        phi = self.b.phi(I8P)
        phi.add_incoming(ref, before)
        phi.add_incoming(again, insert)
        return phi

    def call_ringbuf_output(self, e: S.Call, m: MapT) -> ir.Value:
        """rb.output(v): bpf_ringbuf_output(rb, &v, sizeof v, 0) -- a copy of v becomes a record."""
        t = self.c.types[e.args[0]]
        data = t.target if isinstance(t, PtrT) else U8 if isinstance(t, BoolT) else t
        addr = self.value_ptr(e.args[0], data)
        return self.helper(RINGBUF_OUTPUT, I64_IR, [self.map_ptr(e.func.value), addr,
                                                    ir.Constant(I64_IR, data.size), ir.Constant(I64_IR, 0)])

    def call_ringbuf_reserve(self, e: S.Call, target) -> ir.Value:
        """rb.reserve(T): bpf_ringbuf_reserve(rb, sizeof(T), 0), a reference to the record or NULL."""
        _, t = target
        return self.helper(RINGBUF_RESERVE, I8P, [self.map_ptr(e.func.value), ir.Constant(I64_IR, t.size),
                                                  ir.Constant(I64_IR, 0)])

    def call_ringbuf_submit(self, e: S.Call, m: MapT, helper: int = RINGBUF_SUBMIT) -> None:
        self.helper(helper, I64_IR, [self.value(e.args[0]), ir.Constant(I64_IR, 0)])

    def call_ringbuf_discard(self, e: S.Call, m: MapT) -> None:
        self.call_ringbuf_submit(e, m, RINGBUF_DISCARD)

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
        self.helper(TRACE_PRINTK, I64_IR, [buf, ir.Constant(I64_IR, len(data))] + values)

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

    def fill(self, addr: ir.Value, t: ArrayT, e: S.Expr) -> None:
        """An array from a list of as many values (the checker counted them), element by
        element in order; a repeated element (`[f(x)] * 4`) is evaluated once, as Python
        repeats the value, and copied; a list of zeros is a memset."""
        elts = self.c.lists[e]
        if all(self.c.values.get(x) == 0 for x in elts):
            self.memset(addr, t)
            return
        first: dict[int, ir.Value] = {}
        for i, elt in enumerate(elts):
            slot = self.offset(addr, i * t.elem.size)
            if id(elt) in first:
                self.memcpy(slot, first[id(elt)], t.elem)
            else:
                self.store_into(slot, t.elem, elt)
                first[id(elt)] = slot

    def aggregate(self, e: S.Expr) -> ir.Value:
        """The address of a struct or array value (a local, a field, a constructed temporary,
        a copy out of a map or a reference)."""
        t = self.c.types[e]
        if isinstance(e, S.Call):  # a constructed temporary, or a reference a kfunc returned
            return self.call(e)
        if e in self.c.lists:  # built apart first, as Python builds the list, so
            tmp = self.alloca(t)           # `a = [a[1], a[0]]` swaps
            self.fill(tmp, t, e)
            return tmp
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
        return self.ml.maps[e.id]

    def key_ptr(self, key: S.Expr, m: MapT) -> ir.Value:
        return self.value_ptr(key, m.key)

    def value_ptr(self, e: S.Expr, t: Type) -> ir.Value:
        if isinstance(t, (StructT, ArrayT)):
            return self.off_ctx(e, self.aggregate(e), t)
        slot = self.temp(t)
        self.store(self.value(e, t), slot, t)
        return slot

    def off_ctx(self, e: S.Expr, addr: ir.Value, t: Type) -> ir.Value:
        """`addr`, or a stack copy of it when `e` lies in the ctx: a helper's key or value and a
        subprogram's struct or array take a stack or map pointer, and the verifier refuses the
        ctx there.  Python passes these by value anyway: `h[ctx] = 1` and `f(ctx.b)` see the
        ctx's bytes as they are at the call.  The copy is loads and stores of the type's
        alignment, not a memcpy: each load stays at a constant offset from the ctx (see
        `static_offsets`), where a memcpy is expanded after LLVM has shared the field's address
        between statements.  The copy's address goes through `opaque`: LLVM would otherwise
        hand a callee that only reads its argument the ctx pointer again."""
        if not self.in_ctx(e):
            return addr
        copy = self.temp(t)
        self.copy_words(copy, addr, t)
        return self.opaque(copy)

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
                self.store(self.binop(s.op, self.load(ref, t), t, s.value), ref, t)
            with otherwise:
                slot = self.temp(t)
                self.store(self.binop(s.op, ir.Constant(ir_type(t), 0), t, s.value), slot, t)
                self.map_update(target.value, key, slot, BPF_NOEXIST)
