"""Checking one function body: statements in source order, expressions bottom-up.

Split from check.py, which owns module-level declarations; this module owns the rules that
apply inside a function (locals, conversions, loop bounds, map and helper calls, ctx access).
"""
from __future__ import annotations

import inspect

from . import syntax as S
from .. import uring
from .builtins import CQ_INTRINSICS, CTX, INT, PREPS, Helper, Kfunc
from .check_ints import IntRules
from .check_loops import Cost, LoopRules
from .check_trace import READ_ONLY_CTX, TracingRules, read_only
from .check_maps import delete_error, element_error, element_write_error, map_key, map_method
from .check_python import PythonRules
from .checked import CTX_TYPE_NAMES, PROGRAM_KINDS, CallTarget, FunctionInfo, Symbol, ctx_type_kind, describe
from ..limits import MAX_COPY_STORES, MAX_PRINT_ARGS, copy_stores
from .parse import local_names
from .typesys import (BOOL, I32, I64, NONE, STR, U32, U64, ArrayT, BoolT, IntT, MapT, PtrT,
                      StructT, Type, common_int)

ARITH = {"+", "-", "*", "//", "%", "&", "|", "^", "<<", ">>"}
TERMINATORS = (S.Return, S.Break, S.Continue)
NO_VARIABLE_CTX_INDEX = frozenset({"syscall", "socket_filter"}) | READ_ONLY_CTX


class BodyChecker(LoopRules, IntRules, PythonRules, TracingRules):
    def __init__(self, mod, info: FunctionInfo) -> None:
        self.mod, self.info, self.out = mod, info, mod.out
        self.locals = info.locals
        self.loop_depth = 0
        self.nonnull: set[str] = set()
        self.ranges: dict[str, tuple[int, int]] = {}  # range() loop variables: (min, max)
        self.position: tuple[tuple, int] = ((), 0)  # (block, index) of the statement being checked
        self.loop_walks: dict[S.Stmt, Cost] = {}  # a bounded loop → the verifier's walk of it
        self.too_large: set[S.Stmt] = set()  # the loops and statements reported past a limit
        # The names that hold a program's ctx → its program kind: a program's ctx parameter, or
        # a subprogram's parameters of a ctx type (IoUringCtx, SkBuff, IouCtx).
        if info.kind:
            self.ctxs = {info.params[0][0]: info.kind} if info.params else {}
        else:
            self.ctxs = {n: k for n, t in info.params if (k := ctx_type_kind(t))}
        self.kind = info.kind or next(iter(self.ctxs.values()), None)
        self.pointer_locals: dict[str, str] = {}  # locals assigned a kernel pointer (check_trace)
        self.scope = bound_names(mod, info)

    def error(self, span, message: str, hint: str = "") -> None:
        self.mod.error(span, message, hint)

    def run(self) -> None:
        if len(set(self.ctxs.values())) > 1:
            self.error(self.info.node.span, f"{self.info.name} takes the ctx of more than one program kind",
                       "a subprogram takes the ctx of the one kind of program that calls it")
        for name, t in self.info.params:
            self.locals[name] = t
            if isinstance(t, PtrT):
                self.nonnull.add(name)
        self.find_pointer_locals(self.info.node.body)
        self.block(self.info.node.body)

    def block(self, body) -> None:
        for k, stmt in enumerate(body):
            self.position = (body, k)
            self.note_lengths(stmt)
            handler = getattr(self, "stmt_" + type(stmt).__name__, None)
            if handler is None:
                self.error(stmt.span, f"{describe(stmt)} is not allowed inside a function")
            else:
                handler(stmt)

    # ----- statements -----------------------------------------------------------------
    def stmt_Pass(self, s: S.Pass) -> None:
        pass

    def stmt_Break(self, s) -> None:
        if not self.loop_depth:
            self.error(s.span, f"'{type(s).__name__.lower()}' outside a loop")

    stmt_Continue = stmt_Break

    def stmt_Return(self, s: S.Return) -> None:
        ret = self.info.ret
        if s.value is None:
            if ret != NONE:
                self.error(s.span, f"{self.info.name} must return a {ret}", "write `return 0`")
            return
        if ret == NONE:
            self.error(s.value.span, f"{self.info.name} returns None", "declare `-> i64` to return a value")
            return
        self.convert(s.value, ret, "return value")

    def stmt_ExprStmt(self, s: S.ExprStmt) -> None:
        if not isinstance(s.value, S.Call):
            self.error(s.value.span, f"{describe(s.value)} has no effect here",
                       "assign it, or call a helper or subprogram")
            return
        self.call(s.value, statement=True)

    def stmt_Delete(self, s: S.Delete) -> None:
        t = s.target
        if not (isinstance(t, S.Subscript) and isinstance(self.expr_type_of_base(t.value), MapT)):
            self.error(s.span, "del works only on a map element", "write `del m[key]`")
            return
        m = self.expr(t.value)
        delete_error(self, m, s.span)
        if m.keyed:
            map_key(self, m, t.index)

    def stmt_Assign(self, s: S.Assign) -> None:
        target = s.target
        if isinstance(target, S.Name):
            self.assign_name(s, target)
            return
        if s.annotation is not None:
            self.error(s.annotation.span, "only a plain name can be annotated")
        if isinstance(target, S.Subscript) and isinstance(self.expr_type_of_base(target.value), MapT):
            m = self.expr(target.value)
            if not element_error(self, m, target.span):
                map_key(self, m, target.index)
                self.convert(s.value, m.value, "map value")
            return
        t = self.lvalue(target)
        if t is not None:
            root = target
            while isinstance(root, (S.Attribute, S.Subscript)):
                root = root.value
            if isinstance(root, S.Name) and root.id in self.locals and not isinstance(self.locals[root.id], PtrT):
                self.no_pointer_on_stack(s.value, s.value, f"local {root.id}")
            self.convert(s.value, t, "assigned value")
            self.whole_copy(target, s.value, t)

    def whole_copy(self, target: S.Expr, value: S.Expr, t: Type) -> None:
        """A struct or array assigned whole is one copy (or zeroing), which the BPF backend
        writes as at most MAX_COPY_STORES loads and stores; a larger one it could only call
        memcpy for.  Only a global or a map value can be that large (a local is on the
        512-byte stack), and an element at a time in a loop is what works instead."""
        if not isinstance(t, (StructT, ArrayT)) or copy_stores(t.size) <= MAX_COPY_STORES:
            return
        dst = self.source_text(target)
        if isinstance(t, StructT):
            hint = f"assign its fields one at a time ({dst}.{t.fields[0].name} = ...), an array field in a loop"
        elif isinstance(value, (S.ListDisplay, S.BinOp)):
            hint = f"fill it an element at a time in a loop: for i in range({t.length}): {dst}[i] = ..."
        else:
            hint = (f"copy it an element at a time in a loop: for i in range({t.length}): "
                    f"{dst}[i] = {self.source_text(value)}[i]")
        self.error(value.span, f"a whole {t} ({t.size} bytes) is too large to assign at once: the BPF "
                   f"backend copies at most {MAX_COPY_STORES} words of up to 8 bytes in one go, and "
                   f"{t.size} bytes take {copy_stores(t.size)}", hint)

    def assign_name(self, s: S.Assign, target: S.Name) -> None:
        name = target.id
        if name in self.ctxs:
            self.error(target.span, "the ctx parameter cannot be reassigned")
            return
        if self.ref_param(name):
            self.defer_ctx(target.span, name, PROGRAM_KINDS, "the ctx parameter cannot be reassigned",
                           f"{self.info.name} receives the program's ctx as {name!r}")
        g = self.module_symbol(name)
        if g is not None and g.kind == "global":
            if g.value.const:
                self.error(target.span, f"{name!r} is a read-only global (Const)",
                           "the host sets it before loading; keep a copy in a local to change it")
            elif s.annotation is not None:
                self.error(s.annotation.span, f"{name!r} is a global of type {g.type}; "
                           "assign it without an annotation")
            else:
                self.out.symbols[target] = g
                self.out.types[target] = g.type
                self.convert(s.value, g.type, "assigned value")
                self.whole_copy(target, s.value, g.type)
            return
        declared = self.mod.resolve_type(s.annotation) if s.annotation is not None else None
        current = self.locals.get(name)
        if declared is not None and current is not None and declared != current:
            self.error(s.annotation.span, f"{name!r} is already a {current}; a local keeps one type")
            return
        want = declared or current
        if s.value is None:
            if want is None:
                return
        elif want is None:
            got = self.expr(s.value)
            if got in (NONE, STR) or isinstance(got, MapT):
                self.error(s.value.span, f"cannot store {describe(s.value)} of type {got} in a local")
                return
            want = BOOL if got == BOOL else got
        else:
            self.convert(s.value, want, "assigned value")
        self.locals[name] = want
        self.out.symbols[target] = Symbol("local", want)
        self.out.types[target] = want
        if isinstance(want, PtrT):
            refined = self.out.types.get(s.value)
            if isinstance(refined, PtrT) and not refined.nullable:
                self.nonnull.add(name)
            else:
                self.nonnull.discard(name)

    def stmt_AugAssign(self, s: S.AugAssign) -> None:
        target = s.target
        self.no_pointer_arithmetic(target, s.value)
        if isinstance(target, S.Subscript) and isinstance(self.expr_type_of_base(target.value), MapT):
            m = self.expr(target.value)
            if element_error(self, m, target.span):
                return
            map_key(self, m, target.index)
            if not isinstance(m.value, IntT):
                self.error(s.span, f"{s.op}= needs an integer map value, not {m.value}")
                return
            self.convert(s.value, m.value, "operand")
            return
        if isinstance(target, S.Name) and target.id not in self.locals \
                and self.global_kind(target.id) != "global":
            self.unassigned(target)
            return
        t = self.lvalue(target)
        if t is None:
            return
        if not isinstance(t, IntT):
            self.error(s.span, f"{s.op}= needs an integer, not {t}")
            return
        self.arith_operand(s.op, s.value, t)

    def stmt_If(self, s: S.If) -> None:
        self.condition(s.test)
        yes, no = self.narrowing(s.test)
        saved = set(self.nonnull)
        self.nonnull |= yes
        self.block(s.body)
        self.nonnull = saved | no
        self.block(s.orelse)
        self.nonnull = saved
        if s.body and isinstance(s.body[-1], TERMINATORS) and not s.orelse:
            self.nonnull |= no

    # ----- expressions ----------------------------------------------------------------
    def record(self, e: S.Expr, t: Type, value: int | None = None) -> Type:
        self.out.types[e] = t
        if value is not None:
            self.out.values[e] = value
        return t

    def expr(self, e: S.Expr, want: Type | None = None) -> Type:
        """Type `e`; an integer constant takes `want` when it fits."""
        value = self.fold(e) if not isinstance(e, S.Call) or self.is_sizeof(e) or self.is_python_builtin(e) else None
        if value is not None:
            if isinstance(e, (S.BinOp, S.UnaryOp)):
                self.visit_const_parts(e)
            elif e in self.mod.lengths:  # len(a) is a constant; `a` is still checked where it stands
                self.expr(e.args[0])
            t = want if isinstance(want, IntT) else (BOOL if isinstance(e, S.Constant)
                                                      and type(e.value) is bool else default_int(value))
            if isinstance(t, IntT) and not t.min <= value <= t.max:
                self.error(e.span, f"{value} does not fit in {t}",
                           f"write {t.name}({value}) to wrap it explicitly" if t.name else "")
            return self.record(e, t, value)
        handler = getattr(self, "expr_" + type(e).__name__, None)
        if handler is None:
            self.error(e.span, f"{describe(e)} is not allowed here")
            return self.record(e, I64)
        return self.record(e, handler(e, want))

    def visit_const_parts(self, e) -> None:
        if isinstance(e, S.BinOp) and e.op in ("//", "%") and self.fold(e.right) == 0:
            self.error(e.right.span, "division by zero")

    def expr_Constant(self, e: S.Constant, want) -> Type:
        if isinstance(e.value, str):
            return STR
        if e.value is None:
            return NONE
        self.error(e.span, f"{e.value!r} is not a value a BPF program can use")
        return I64

    def expr_Name(self, e: S.Name, want) -> Type:
        if e.id in self.locals:
            self.out.symbols[e] = Symbol("local", self.locals[e.id])
            if isinstance(self.locals[e.id], PtrT) and e.id not in self.nonnull and \
                    self.locals[e.id].nullable:
                return self.locals[e.id]
            t = self.locals[e.id]
            return PtrT(t.target) if isinstance(t, PtrT) and e.id in self.nonnull else t
        if e.id in self.scope:
            self.unassigned(e)
            return I64
        sym = self.mod.global_symbol(e.id)
        if sym is None:
            self.mod.undefined_name(e.span, f"name {e.id!r} is not defined", self.undefined_hint(e.id))
            return I64
        self.out.symbols[e] = sym
        if sym.kind in ("map", "global"):
            return sym.type
        self.error(e.span, f"{e.id!r} is a {sym.kind} and cannot be used as a value")
        return I64

    def undefined_hint(self, name: str) -> str:
        return self.mod.undefined_hint(name, self.scope | self.locals.keys())

    def expr_BinOp(self, e: S.BinOp, want) -> Type:
        self.no_pointer_arithmetic(e.left, e.right)
        if e.op not in ARITH:
            self.error(e.span, f"operator {e.op!r} is not supported")
            return I64
        a_const, b_const = self.fold(e.left) is not None, self.fold(e.right) is not None
        if e.op in ("<<", ">>"):
            t = self.int_operand(e.left, want if a_const else None)
            self.int_operand(e.right, None if not b_const else U64 if isinstance(t, IntT) else None)
            count = self.fold(e.right)
            if isinstance(t, IntT) and count is not None and not 0 <= count < t.bits:
                self.error(e.right.span, f"shift count {count} is out of range for {t} (0 to {t.bits - 1})")
            return t
        if a_const and not b_const:
            t = self.int_operand(e.right, want)
            self.int_operand(e.left, t)
        elif b_const and not a_const:
            t = self.int_operand(e.left, want)
            self.int_operand(e.right, t)
        else:
            ta, tb = self.int_operand(e.left, want), self.int_operand(e.right, want)
            t = common_int(ta, tb) if isinstance(ta, IntT) and isinstance(tb, IntT) else I64
        if e.op in ("//", "%") and self.fold(e.right) == 0:
            self.error(e.right.span, "division by zero")
        return t

    def int_operand(self, e: S.Expr, want) -> Type:
        t = self.expr(e, want)
        if t == BOOL:
            return self.record(e, U64 if want is None else want)
        if not isinstance(t, IntT):
            self.error(e.span, f"expected an integer, not {t}")
            return I64
        return t

    def arith_operand(self, op: str, e: S.Expr, t: IntT) -> None:
        self.int_operand(e, U64 if op in ("<<", ">>") else t)

    def expr_UnaryOp(self, e: S.UnaryOp, want) -> Type:
        if e.op == "not":
            self.condition(e.operand)
            return BOOL
        self.no_pointer_arithmetic(e.operand)
        return self.int_operand(e.operand, want)

    def expr_BoolOp(self, e: S.BoolOp, want) -> Type:
        for v in e.values:
            self.condition(v)
        return BOOL

    def expr_Compare(self, e: S.Compare, want) -> Type:
        operands = (e.left,) + e.comparators
        for op, a, b in zip(e.ops, operands, operands[1:]):
            if op in ("is", "is not"):
                if not (isinstance(b, S.Constant) and b.value is None):
                    self.error(b.span, f"'{op}' compares only with None", "use == or != for integers")
                elif not isinstance(self.expr(a), PtrT):
                    self.error(a.span, "only a map reference from m.lookup(k) can be None")
                self.record(b, NONE)
                continue
            ca, cb = self.fold(a) is not None, self.fold(b) is not None
            ta = self.int_operand(a, None) if not ca else None
            tb = self.int_operand(b, ta) if not cb or ta is not None else None
            if ta is None:
                ta = self.int_operand(a, tb)
            if tb is None:  # two constants (`1 < 2`): each typed as itself
                tb = self.int_operand(b, None)
            if not (ca or cb):
                self.signedness_warning(op, a, b, ta, tb)
        return BOOL

    def condition(self, e: S.Expr) -> None:
        t = self.expr(e)
        if not isinstance(t, (IntT, BoolT, PtrT)):
            self.error(e.span, f"a condition must be an integer, bool or reference, not {t}")

    def narrowing(self, test: S.Expr) -> tuple[set[str], set[str]]:
        """Names of map references proven non-None when `test` is true, and when it is false."""
        if isinstance(test, S.Name) and isinstance(self.locals.get(test.id), PtrT):
            return {test.id}, set()
        if isinstance(test, S.UnaryOp) and test.op == "not":
            yes, no = self.narrowing(test.operand)
            return no, yes
        if isinstance(test, S.Compare) and len(test.ops) == 1 and isinstance(test.left, S.Name) \
                and test.ops[0] in ("is", "is not"):
            names = {test.left.id}
            return (names, set()) if test.ops[0] == "is not" else (set(), names)
        if isinstance(test, S.BoolOp) and test.op == "and":
            return set().union(*(self.narrowing(v)[0] for v in test.values)), set()
        if isinstance(test, S.BoolOp) and test.op == "or":  # false only when every operand is
            return set(), set().union(*(self.narrowing(v)[1] for v in test.values))
        return set(), set()

    def expr_Attribute(self, e: S.Attribute, want) -> Type:
        if missing := self.mod.missing_attribute(e, self.scope):
            self.mod.undefined_name(e.span, *missing)
            return I64
        sym = self.mod.callee_symbol(e, self.scope)
        if sym.kind != "unknown":  # a module's name that is not a constant (those are folded)
            self.error(e.span, f"{self.source_text(e)!r} is a {sym.kind} and cannot be used as a value")
            return I64
        base = self.expr(e.value)
        if isinstance(base, PtrT) and base.nullable:
            self.error(e.value.span, f"{self.source_text(e.value)} may be None here",
                       f"check first: `if {self.source_text(e.value)} is not None:`")
        st = base.target if isinstance(base, PtrT) else base
        if not isinstance(st, StructT):
            self.error(e.span, f"{base} has no attribute {e.attr!r}")
            return I64
        f = st.field(e.attr)
        if f is None:
            names = ", ".join(x.name for x in st.fields)
            near = self.mod.near(e.attr, [x.name for x in st.fields])
            if st.field(f"__data_loc_{e.attr}") is not None:   # a tracepoint's string
                near = (f"{e.attr} is a string stored after the record: ctx.__data_loc_{e.attr} is its "
                        "offset in the record (low 16 bits) and length (high 16 bits);")
            self.mod.undefined_name(e.span, f"struct {st.name} has no field {e.attr!r}",
                                    f"{near + ' ' if near else ''}its fields are: {names}")
            return I64
        return f.type

    def expr_Subscript(self, e: S.Subscript, want) -> Type:
        base = self.expr(e.value)
        if isinstance(base, MapT):
            if element_error(self, base, e.span):
                return I64
            map_key(self, base, e.index)
            return base.value
        if isinstance(base, PtrT):
            if base.nullable:
                self.error(e.value.span, f"{self.source_text(e.value)} may be None here",
                           f"check first: `if {self.source_text(e.value)} is not None:`")
            if isinstance(base.target, IntT):
                if self.fold(e.index) != 0:
                    self.error(e.index.span, "a reference to an integer is read and written as ref[0]")
                self.expr(e.index, U64)
                return base.target
            base = base.target
        if not isinstance(base, ArrayT):
            self.error(e.span, f"{base} cannot be indexed")
            return I64
        idx = self.fold(e.index)
        self.no_pointer_arithmetic(e.index)
        self.int_operand(e.index, U64 if idx is not None else None)
        if idx is not None and not 0 <= idx < base.length:
            self.error(e.index.span, f"index {idx} is out of range for {base} (0 to {base.length - 1})")
        known = self.ranges.get(e.index.id) if isinstance(e.index, S.Name) else None
        if known is not None and 0 <= known[0] and known[1] < base.length:
            self.out.in_bounds.add(e)  # a range() loop variable that stays inside the array
        if idx is None:
            message = ("the ctx cannot be indexed by a variable (the verifier rejects "
                       "a ctx access at a variable offset)")
            hint = (f"copy it to the stack first: `local = {self.source_text(e.value)}` "
                    f"then `local[{self.source_text(e.index)}]`")
            root = self.root_name(e.value)
            if self.ctxs.get(root) in NO_VARIABLE_CTX_INDEX:
                self.error(e.index.span, message, hint)
            elif self.ref_param(root):
                self.defer_ctx(e.index.span, root, NO_VARIABLE_CTX_INDEX, message,
                               f"{self.info.name} receives the program's ctx as {root!r}; {hint}")
        return base.elem

    def variable_index(self, e: S.Expr) -> bool:
        """Whether an lvalue has an index that needs a run-time bounds check."""
        while isinstance(e, (S.Attribute, S.Subscript)):
            if isinstance(e, S.Subscript) and self.fold(e.index) is None and e not in self.out.in_bounds:
                return True
            e = e.value
        return False

    def root_name(self, e: S.Expr) -> str | None:
        while isinstance(e, (S.Attribute, S.Subscript)):
            e = e.value
        return e.id if isinstance(e, S.Name) else None

    def ref_param(self, name: str | None) -> bool:
        """A subprogram's struct parameter that is not of a ctx type: it may still receive a
        program's ctx (a @syscall program's `Args`), which is known once every call is checked."""
        return self.info.kind is None and name not in self.ctxs and \
            isinstance(dict(self.info.params).get(name), PtrT)

    def defer_ctx(self, span, param: str, kinds: frozenset[str], message: str, hint: str = "") -> None:
        """An error if `param` turns out to carry the ctx of a program of one of `kinds`."""
        self.info.deferred.append(("ctx", span, param, kinds, message, hint))

    def lvalue(self, e: S.Expr) -> Type | None:
        """The type of an assignable location: a local, a struct field, an array element."""
        if isinstance(e, S.Name):
            g = self.module_symbol(e.id)
            if g is not None and g.kind == "global":
                if g.value.const:
                    self.error(e.span, f"{e.id!r} is a read-only global (Const)")
                return self.expr(e)
            if e.id not in self.locals:
                self.unassigned(e)
                return None
            return self.expr(e)
        if isinstance(e, (S.Attribute, S.Subscript)):
            t = self.expr(e)
            element_write_error(self, e)
            root = self.root_name(e)
            skb_message = ("a socket filter may write only ctx.cb[0] to ctx.cb[4]; the kernel refuses "
                           f"writes to the other __sk_buff fields ({self.source_text(e)} is one)")
            skb_hint = "keep the value in a local, or in ctx.cb[...] to pass it along"
            if self.ctxs.get(root) in READ_ONLY_CTX:
                self.error(e.span, read_only(self.ctxs[root]))
            elif self.ctxs.get(root) == "socket_filter" and not skb_writable(e):
                self.error(e.span, skb_message, skb_hint)
            elif self.ref_param(root):
                for kind in sorted(READ_ONLY_CTX):
                    self.defer_ctx(e.span, root, frozenset({kind}), read_only(kind),
                                   f"{self.info.name} receives it as {root!r}; write to a copy instead")
                if not skb_writable(e):
                    self.defer_ctx(e.span, root, frozenset({"socket_filter"}), skb_message,
                                   f"{self.info.name} receives the socket filter's ctx as {root!r}; {skb_hint}")
            return t
        self.error(e.span, f"cannot assign to {describe(e)}")
        return None

    def expr_type_of_base(self, e: S.Expr) -> Type | None:
        if isinstance(e, S.Name):
            sym = self.module_symbol(e.id)
            return sym.type if sym is not None and sym.kind == "map" else None
        return None

    def convert(self, e: S.Expr, want: Type, what: str) -> None:
        """`e` is stored into a location of type `want`: integers convert as in C (wrapping),
        structs and arrays copy when their types match, references only to the same type, and a
        list fills an array of its length."""
        if self.list_parts(e) is not None:
            self.list_value(e, want, what)
            return
        got = self.expr(e, want)
        if isinstance(want, IntT) and isinstance(got, (IntT, BoolT)):
            if want.bits < 64:
                self.no_pointer_arithmetic(e)
            self.narrowing_warning(e, got, want)
            return
        if got == want:
            return
        if isinstance(got, PtrT) and got.target == want:   # copy out of a reference: `c: Pair = ctx`
            if got.nullable:   # a lookup's reference, read before its None test: the verifier refuses it
                self.error(e.span, f"{self.source_text(e)} may be None here",
                           f"check first: `if {self.source_text(e)} is not None:`")
            return
        if isinstance(want, PtrT) and isinstance(got, PtrT) and got.target == want.target:
            return
        self.error(e.span, f"{what} has type {got}, expected {want}")

    def fold(self, e: S.Expr) -> int | None:
        """The constant value of `e` in this function: its own names are never constants."""
        return self.mod.fold(e, self.scope)

    def module_symbol(self, name: str) -> Symbol | None:
        """What `name` means at module level, unless this function binds it: then it is the
        function's local wherever it appears (Python's rule), and None here."""
        return None if name in self.scope else self.mod.global_symbol(name)

    def global_kind(self, name: str) -> str | None:
        sym = self.module_symbol(name)
        return sym.kind if sym is not None else None

    def unassigned(self, e: S.Name) -> None:
        """A name the function binds, used before its first assignment (Python's
        UnboundLocalError).  When the module has the name too, say why it is not used."""
        if e.id in {p.name for p in self.info.node.params}:
            return  # a parameter whose annotation was already an error
        self.error(e.span, f"{e.id!r} is used before it is assigned",
                   self.hidden_hint(e.id) or f"assign it first, e.g. {e.id} = 0")

    def hidden_hint(self, name: str) -> str:
        """Why a module-level name of this function's local is not what the code reaches; ""
        when the module has no such name."""
        hidden = self.mod.global_symbol(name)
        if hidden is None:
            return ""
        fn = self.info.name
        how = f"a parameter of {fn}" if name in {p.name for p in self.info.node.params} else f"assigned in {fn}"
        return (f"{name!r} is {how}, so it is {fn}'s local variable everywhere in {fn}, as in Python, "
                f"and hides the module-level {KIND_WORDS.get(hidden.kind, hidden.kind)} {name!r}; "
                "give the local another name")

    def kind_word(self, kind: str) -> str:
        return KIND_WORDS.get(kind, kind)

    def source_text(self, e: S.Expr) -> str:
        s = e.span
        if s.line != s.end_line:
            return "..."
        return s.source.line(s.line)[s.col - 1:s.end_col - 1]

    # ----- calls ----------------------------------------------------------------------
    def is_sizeof(self, e: S.Call) -> bool:
        return isinstance(e.func, S.Name) and self.global_kind(e.func.id) == "builtin" \
            and self.module_symbol(e.func.id).value == "sizeof"

    def expr_Call(self, e: S.Call, want) -> Type:
        return self.call(e, statement=False)

    def call(self, e: S.Call, statement: bool) -> Type:
        if isinstance(e.func, S.Attribute) and isinstance(self.expr_type_of_base(e.func.value), MapT):
            return self.map_method(e)
        if isinstance(e.func, S.Name) and e.func.id == "print" and "print" not in self.scope \
                and self.global_kind("print") is None:
            if not statement:
                self.error(e.span, "print() is a statement; it has no value")
            return self.print_call(e)
        if self.is_python_builtin(e):
            return self.python_builtin(e, statement)
        sym = self.mod.callee_symbol(e.func, self.scope)
        if e.keywords and sym.kind != "struct":
            self.error(e.keywords[0].span, "keyword arguments are only for Struct constructors",
                       "pass the arguments by position")
        handler = getattr(self, "call_" + sym.kind, None)
        if handler is None and self.mod.undefined(e.func):
            self.mod.undefined_name(e.func.span, f"name {e.func.id!r} is not defined",
                                    self.undefined_hint(e.func.id))
            return I64
        if handler is None and (missing := self.mod.missing_attribute(e.func, self.scope)):
            self.mod.undefined_name(e.func.span, *missing)
            return I64
        if handler is None:
            name = self.source_text(e.func)
            self.error(e.func.span, f"{name!r} cannot be called in a BPF program",
                       "call a helper, a prep_* function, a cast like u32(x), a Struct, "
                       "or a function of this module")
            return I64
        return handler(e, sym)

    def call_local(self, e: S.Call, sym: Symbol) -> Type:
        name = e.func.id
        self.error(e.func.span, f"{name!r} is a local variable of {self.info.name}; it cannot be called",
                   self.hidden_hint(name) or "call a function defined at module level")
        return I64

    def call_int_type(self, e: S.Call, sym: Symbol) -> Type:
        if len(e.args) != 1:
            self.error(e.span, f"{sym.type}() takes one argument")
            return sym.type
        self.out.calls[e] = CallTarget("cast", sym.type)
        if sym.type.bits < 64:   # the low bits of a kernel pointer are computed (shifts or a mask)
            self.no_pointer_arithmetic(e.args[0])
        v = self.fold(e.args[0])
        if v is not None:
            self.record(e.args[0], I64 if default_int(v) == I64 else default_int(v), v)
            self.out.values[e] = sym.type.wrap(v)
            return sym.type
        self.int_operand(e.args[0], None)
        return sym.type

    def call_struct(self, e: S.Call, sym: Symbol) -> Type:
        st: StructT = sym.type
        self.out.calls[e] = CallTarget("ctor", st)
        if e.args:
            self.error(e.args[0].span, f"{st.name}(...) takes keyword arguments",
                       f"write {st.name}({st.fields[0].name}=...)")
        for kw in e.keywords:
            f = st.field(kw.name)
            if f is None:
                self.error(kw.span, f"struct {st.name} has no field {kw.name!r}")
            else:
                self.no_pointer_on_stack(kw.value, e, f"a {st.name}")
                self.convert(kw.value, f.type, f"field {kw.name}")
        return st

    def call_builtin(self, e: S.Call, sym: Symbol) -> Type:
        if sym.value == "sizeof":  # one argument that is no type: folding it said why
            if len(e.args) != 1 or e.keywords:
                self.error(e.span, "sizeof() takes one type", "e.g. sizeof(Pair)")
            return I64
        self.error(e.span, f"{sym.value}(...) is only allowed at module level")
        return I64

    def call_helper(self, e: S.Call, sym: Symbol) -> Type:
        h: Helper = sym.value
        self.out.calls[e] = CallTarget("helper", h)
        for a, p in self.kernel_call(e, h.name, h.params, h.programs, "available in"):
            self.ref_argument(h.name, a, p.struct)
        return h.ret

    def call_kfunc(self, e: S.Call, sym: Symbol) -> Type:
        k: Kfunc = sym.value
        ret = k.ret or I64
        for a, _ in self.kernel_call(e, k.name, k.params, k.programs, "a kernel function of"):
            t = self.mod.resolve_type(a, self.scope)  # TYPE_SIZE: the view the call returns
            ret = PtrT(t if t is not None else U64, nullable=True)
        self.out.calls[e] = CallTarget("kfunc", (k, ret))
        return ret

    def kernel_call(self, e: S.Call, name: str, params, programs, what: str):
        """The rules shared by helpers and kfuncs: the program kinds that may call it, the
        argument count, the ctx and integer arguments.  Yields the other (argument, param)."""
        if programs and self.kind is None:  # a subprogram without a ctx: its callers decide
            self.info.deferred.append(("kind", e.func.span, name, programs, what))
        elif programs and self.kind not in programs:
            where = f"{article(self.kind)} program" if self.info.kind else \
                f"a subprogram that takes {article(self.kind)} program's ctx"
            self.error(e.func.span, f"{name}() cannot be called from {where}",
                       f"it is {what} @{', @'.join(sorted(programs))} programs")
        if len(e.args) != len(params):
            self.error(e.span, f"{name}() takes {len(params)} arguments, got {len(e.args)}")
            return
        for a, p in zip(e.args, params):
            if p.kind == CTX:
                if self.ctx_argument(name, a, programs):
                    self.expr(a)
            elif p.kind == INT:
                self.convert(a, p.type, "argument")
            else:
                yield a, p

    def ctx_argument(self, name: str, a: S.Expr, programs) -> bool:
        """The ctx a helper or kfunc takes: the program's own, or a subprogram's ctx parameter."""
        if isinstance(a, S.Name) and a.id in self.ctxs:
            return True
        mine = [n for n, k in self.ctxs.items() if not programs or k in programs]
        if mine or self.info.kind:
            self.error(a.span, f"{name}() needs the program's ctx here", f"pass {mine[0] if mine else 'ctx'}")
        else:
            want = CTX_TYPE_NAMES[min(programs)] if programs else "the program's ctx type"
            self.error(a.span, f"{name}() needs the program's ctx here",
                       f"give {self.info.name} a parameter `ctx: {want}` and pass the program's ctx to it")
        return False

    def ref_argument(self, helper: str, a: S.Expr, struct: str | None) -> None:
        t = self.expr(a)
        target = t.target if isinstance(t, PtrT) else t
        if not isinstance(a, (S.Name, S.Attribute, S.Subscript)) or isinstance(t, MapT):
            self.error(a.span, f"{helper}() needs a variable to pass by address")
        elif self.variable_index(a):
            self.error(a.span, "an element at a variable index cannot be passed by address",
                       "copy it to a local first")
        elif struct is not None and getattr(target, "name", None) != struct:
            self.error(a.span, f"{helper}() needs a {struct}, not {target}",
                       f"e.g. `buf = {struct}()` then {helper}(..., buf)")
        elif not isinstance(target, (StructT, ArrayT, IntT)):
            self.error(a.span, f"{helper}() needs a struct, array or integer variable")

    def call_cq(self, e: S.Call, sym: Symbol) -> Type:
        """cq_reap(cq, cqe) -> i32 and cq_wait(lp, cq, n) on a mainline CQ view."""
        name = sym.value
        if self.kind is None:  # a subprogram without a ctx: its callers decide
            self.info.deferred.append(("kind", e.func.span, name, CQ_INTRINSICS[name], "available in"))
        elif self.kind not in CQ_INTRINSICS[name]:
            self.error(e.func.span, f"{name}() works on a @loop_step program's CQ region",
                       "in an @iouring program use reap_cqe(ctx, cq, cqe) and ctx.wait_nr")
        want = {"cq_reap": ("cq", "cqe"), "cq_wait": ("lp", "cq", "n")}[name]
        if len(e.args) != len(want):
            self.error(e.span, f"{name}() takes {len(want)} arguments: {', '.join(want)}")
            return I32 if name == "cq_reap" else NONE
        self.out.calls[e] = CallTarget("cq", name)
        for a, role in zip(e.args, want):
            if role == "cq":
                self.cq_view(a)
            elif role == "cqe":
                self.ref_argument(name, a, "Cqe")
            elif role == "lp":
                t = self.expr(a)
                if getattr(getattr(t, "target", None), "name", None) != "IouLoopParams":
                    self.error(a.span, f"{name}() needs the loop's IouLoopParams here")
            else:
                self.convert(a, U32, "n")
        return I32 if name == "cq_reap" else NONE

    def cq_view(self, a: S.Expr) -> None:
        t = self.expr(a)
        st = t.target if isinstance(t, PtrT) else None
        ring = st.field("ring") if isinstance(st, StructT) else None
        cqes = st.field("cqes") if isinstance(st, StructT) else None
        if isinstance(t, PtrT) and t.nullable:
            self.error(a.span, f"{self.source_text(a)} may be None here",
                       f"check first: `if {self.source_text(a)} is None: return IOU_LOOP_STOP`")
            return
        if not (ring and getattr(ring.type, "name", None) == "CqRing" and isinstance(cqes.type if cqes else None, ArrayT)
                and getattr(cqes.type.elem, "name", None) == "Cqe"):
            self.error(a.span, "expected the CQ region's view: get_region(ctx, IOU_REGION_CQ, View) "
                       "where View has `ring: CqRing` and `cqes: Cqe[N]`")

    def call_prep(self, e: S.Call, sym: Symbol) -> Type:
        consts, fields = PREPS[sym.value]
        self.out.calls[e] = CallTarget("prep", sym.value)
        # the parameters as the host-side prep (uring.py) names them, one per SQE field
        params = list(inspect.signature(getattr(uring, sym.value)).parameters)
        if len(e.args) != len(params):
            self.error(e.span, f"{sym.value}() takes {len(params)} arguments "
                       f"({', '.join(params)}), got {len(e.args)}",
                       f"the same arguments as liburing's io_uring_{sym.value}")
            return NONE
        self.ref_argument(sym.value, e.args[0], "Sqe")
        sqe = self.out.types.get(e.args[0])
        st = sqe.target if isinstance(sqe, PtrT) else sqe
        for a, fname, pname in zip(e.args[1:], fields, params[1:]):
            f = st.field(fname) if isinstance(st, StructT) else None
            self.convert(a, f.type if f else U64, pname)
        return NONE

    def call_func(self, e: S.Call, sym: Symbol) -> Type:
        d: S.FunctionDef = sym.value
        if d.decorators:
            self.error(e.func.span, f"{d.name} is a program; programs cannot call each other",
                       "move the shared code into an undecorated function and call that")
            return I64
        callee = self.mod.function(d, None, None) if d.name not in self.out.functions \
            else self.out.functions[d.name]
        if d.name not in self.info.calls:
            self.info.calls.append(d.name)
        self.out.calls[e] = CallTarget("subprog", d.name)
        if callee is None:
            return I64
        if len(e.args) != len(callee.params):
            self.error(e.span, f"{d.name}() takes {len(callee.params)} arguments, got {len(e.args)}")
            return callee.ret
        for a, (pname, pt) in zip(e.args, callee.params):
            if ctx_type_kind(pt):
                self.ctx_parameter(callee, a, pname, pt)
            elif isinstance(pt, PtrT):
                got = self.expr(a)
                target = got.target if isinstance(got, PtrT) else got
                if target != pt.target or not isinstance(a, (S.Name, S.Attribute, S.Subscript)):
                    self.error(a.span, f"argument {pname} must be a {pt.target} variable, not {got}")
                elif self.variable_index(a):
                    self.error(a.span, "an element at a variable index cannot be passed by reference",
                               "copy it to a local first")
                else:
                    self.mod.ref_edges.append((self.info.name, a.id if isinstance(a, S.Name) else None,
                                               d.name, pname, a.span))
            else:
                self.no_pointer_arithmetic(a, where=f"passed to {d.name}, which could compute with it")
                self.convert(a, pt, f"argument {pname}")
        return callee.ret

    def ctx_parameter(self, callee: FunctionInfo, a: S.Expr, pname: str, pt: PtrT) -> None:
        """A subprogram's parameter of a ctx type gets the calling program's ctx, as it is:
        the program's ctx parameter, or the caller's own ctx parameter passed on."""
        kind = ctx_type_kind(pt)
        ctx_type = CTX_TYPE_NAMES[kind]
        self.expr(a)
        if isinstance(a, S.Name) and self.ctxs.get(a.id) == kind:
            self.mod.ref_edges.append((self.info.name, a.id, callee.name, pname, a.span))
            return
        if self.kind is not None and self.kind != kind:
            where = f"{article(self.kind)} program" if self.info.kind else \
                f"{self.info.name}, which takes {article(self.kind)} program's ctx"
            self.error(a.span, f"{callee.name}() takes the ctx of {article(kind)} program ({pname}: {ctx_type}); "
                       f"it cannot be called from {where}",
                       f"call {callee.name}() from @{kind} programs only")
            return
        mine = next((n for n, k in self.ctxs.items() if k == kind), None)
        if mine is not None or self.info.kind:
            self.error(a.span, f"{callee.name}() needs the program's ctx for its parameter {pname}",
                       f"pass {mine or 'ctx'} itself")
            return
        self.error(a.span, f"{callee.name}() needs the program's ctx for its parameter {pname}",
                   f"give {self.info.name} a parameter `ctx: {ctx_type}` and pass the program's ctx to it")

    def map_method(self, e: S.Call) -> Type:
        return map_method(self, e)  # check_maps.py: every map kind's methods

    def print_call(self, e: S.Call) -> Type:
        self.out.calls[e] = CallTarget("print")
        ints = 0
        for a in e.args:
            t = self.expr(a)
            if t == STR:
                continue
            if not isinstance(t, (IntT, BoolT)):
                self.error(a.span, f"print() shows strings and integers, not {t}")
            ints += 1
        if ints > MAX_PRINT_ARGS:
            self.error(e.span, f"print() shows at most {MAX_PRINT_ARGS} integers (bpf_trace_printk); "
                       f"got {ints}", "split it into several print() calls")
        return NONE


# A module-level symbol's kind as a message names it.
KIND_WORDS = {"const": "constant", "func": "function", "int_type": "type", "builtin": "builtin",
              "prep": "prep function", "kfunc": "kernel function", "cq": "function", "module": "module"}


def bound_names(mod, info: FunctionInfo) -> frozenset[str]:
    """The names local to a function, found before its body is checked, as Python's compiler
    finds them (`parse.local_names`), except the module's annotated globals that are not
    parameters: assigning one writes it (BPF code has no `global` statement)."""
    params = {p.name for p in info.node.params}
    return frozenset(n for n in local_names(info.node)
                     if n in params or getattr(mod.global_symbol(n), "kind", None) != "global")


def article(kind: str) -> str:
    """`an @iouring`, `a @syscall`: a program kind as a message names it."""
    return f"{'an' if kind[0] in 'aeiou' else 'a'} @{kind}"


def skb_writable(e: S.Expr) -> bool:
    """Whether a location in a socket filter's ctx is in cb[]: the kernel's
    sk_filter_is_valid_access lets BPF_PROG_TYPE_SOCKET_FILTER write cb[0..4] and nothing else."""
    while isinstance(e.value, (S.Attribute, S.Subscript)):
        e = e.value
    return isinstance(e, S.Attribute) and e.attr == "cb"


def default_int(value: int) -> IntT:
    return I64 if value <= I64.max else U64
