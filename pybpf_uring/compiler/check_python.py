"""Checking the constructs a program writes as Python writes them: conditional expressions
(`a if c else b`), lists as arrays' values (`x: u8[4] = [1, 2, 3, 4]`), `global` statements,
and the builtins `min`, `max`, `abs` and `len`.

A mixin of `check_body.BodyChecker` (which owns the function's locals and the general
expression rules), kept apart so the body checker stays one statement kind per method.
Values follow C where Python has no fixed widths: a conditional expression and min/max take
their operands' common type under C's usual conversions (`?:`), with the integer literals
taking the other operands' type, as in arithmetic.
"""
from __future__ import annotations

from . import syntax as S
from .builtins import PYTHON_BUILTINS
from .check_loops import nodes
from .checked import CallTarget
from .typesys import BOOL, I64, U64, ArrayT, BoolT, IntT, PtrT, StructT, Type, common_int

# What `global NAME` says when NAME is a module-level name of another kind.
NOT_A_GLOBAL = {
    "const": "a constant is folded into the code; to change it at run time, declare a global "
             "with a type: {name}: u64 = {value}",
    "map": "a map is shared already: write its elements (m[k] = v) without a global statement",
}


class PythonRules:
    # ----- global statements --------------------------------------------------------------
    def stmt_Global(self, s: S.Global) -> None:
        """Python's `global`: the names are the module's annotated globals everywhere in the
        function (which an assignment writes with or without it)."""
        params = {p.name for p in self.info.node.params}
        for name in s.names:
            sym = self.mod.global_symbol(name)
            if name in params:
                self.error(s.span, f"name {name!r} is parameter and global",
                           f"rename the parameter, or drop {name!r} from the global statement")
            elif sym is None:
                self.error(s.span, f"global {name!r} is not declared at module level", self.mod.global_hint(name))
                self.locals.setdefault(name, I64)   # its uses are not reported as unassigned too
            elif sym.kind != "global":
                hint = NOT_A_GLOBAL.get(sym.kind, "a global statement names a module-level variable "
                                                  "declared with a type (n: u64 = 0)")
                self.error(s.span, f"{name!r} is a module-level {self.kind_word(sym.kind)}, not a global variable",
                           hint.format(name=name, value=sym.value))
            else:
                self.used_before_global(s, name)

    def used_before_global(self, s: S.Global, name: str) -> None:
        """Python refuses a name used before its function's `global` statement for it."""
        where = (s.span.line, s.span.col)
        for n in nodes(*self.info.node.body):
            if isinstance(n, S.Name) and n.id == name and (n.span.line, n.span.col) < where:
                self.error(n.span, f"name {name!r} is used prior to global declaration",
                           f"put `global {name}` at the top of {self.info.name}")
                return

    # ----- conditional expressions ---------------------------------------------------------
    def expr_IfExp(self, e: S.IfExp, want) -> Type:
        """`a if c else b`: C's `c ? a : b`, each side checked where the test narrows it
        (`r.n if r is not None else 0`)."""
        self.condition(e.test)
        yes, no = self.narrowing(e.test)
        sides = ((e.then, yes), (e.otherwise, no))
        constant = [self.fold(x) is not None for x, _ in sides]
        types: list[Type | None] = [None, None]
        order = (1, 0) if constant[0] and not constant[1] else (0, 1)
        for k in order:
            other = types[1 - k]
            hint = other if constant[k] and isinstance(other, IntT) else want
            types[k] = self.side(*sides[k], hint)
        ta, tb = types
        if ta == BOOL and tb == BOOL:
            return BOOL
        if not all(isinstance(t, (IntT, BoolT)) for t in types):
            self.error(e.span, f"a conditional expression chooses between integers or bools, not {ta} and {tb}",
                       "use an if statement to choose between structs, arrays or references")
            return I64
        ta, tb = (U64 if t == BOOL else t for t in types)
        t = common_int(ta, tb)
        if not any(constant):
            self.mixed_signs("conditional expression", (e.then, e.otherwise), (ta, tb), t)
        return t

    def side(self, e: S.Expr, narrowed: set[str], want) -> Type:
        saved = set(self.nonnull)
        self.nonnull |= narrowed
        try:
            return self.expr(e, want)
        finally:
            self.nonnull = saved

    def mixed_signs(self, what: str, exprs, types, t: IntT) -> None:
        """A signed operand of an unsigned result: C's conversions make a negative value a
        large one, where Python keeps it negative."""
        signed = next((x for x, u in zip(exprs, types) if isinstance(u, IntT) and u.signed), None)
        if t.signed or signed is None:
            return
        self.mod.errors.warn(signed.span, f"the {what} mixes {' and '.join(sorted({str(u) for u in types}))}; "
                             f"its value is a {t}, so a negative {self.source_text(signed)} becomes a large value",
                             "convert the operands to one signed type, e.g. i64(...)")

    # ----- lists ---------------------------------------------------------------------------
    def list_parts(self, e: S.Expr) -> tuple[tuple[S.Expr, ...], int] | None:
        return self.mod.list_parts(e, self.scope)  # check.py: a global's list is read alike

    def list_value(self, e: S.Expr, want: Type, what: str) -> None:
        """A list stored into an array of as many elements, each converted to the element
        type.  The count is checked before the repeated list is built, so `[0] * 10**9` is an
        error, not a billion elements."""
        elts, times = self.list_parts(e)
        count = len(elts) * times
        self.record(e, want)
        if not isinstance(want, ArrayT):
            self.error(e.span, f"{what} has type {want}; a list is only the value of an array",
                       f"an array is declared with its type: x: u32[{count}] = [...]")
            return
        if count != want.length:
            self.error(e.span, f"{want} needs {want.length} values, got {count}",
                       f"list every element, or repeat one: [0] * {want.length}")
            times = 1
        for i, elt in enumerate(elts):
            self.no_pointer_on_stack(elt, e, "a list")
            self.convert(elt, want.elem, f"element {i}")
        if count == want.length:
            self.out.lists[e] = elts * times

    def expr_ListDisplay(self, e: S.ListDisplay, want) -> Type:
        self.error(e.span, "a list is only the value of an array",
                   f"declare the array with its type: x: u32[{len(e.elts)}] = [...]")
        for elt in e.elts:
            self.expr(elt)
        return I64

    # ----- builtins ------------------------------------------------------------------------
    def is_python_builtin(self, e: S.Call) -> bool:
        """`min(...)` and the others, unless the module or the function binds the name."""
        return isinstance(e.func, S.Name) and e.func.id in PYTHON_BUILTINS and \
            e.func.id not in self.scope and self.global_kind(e.func.id) is None

    def note_lengths(self, stmt: S.Stmt) -> None:
        """`len(a)` of a fixed-size array is a constant: record each one a statement holds
        before the statement is checked, so it folds wherever a constant is needed
        (`range(len(a))`, `len(a) - 1`, an index)."""
        roots = [v for f in vars(stmt).values() for v in (f if isinstance(f, tuple) else (f,))
                 if isinstance(v, S.Expr)]
        saved = self.nonnull
        self.nonnull = set(self.locals)  # only the type counts: `len(r.a) if r is not None else 0`
        try:
            for n in nodes(*roots):
                if isinstance(n, S.Call) and self.is_python_builtin(n) and n.func.id == "len" \
                        and len(n.args) == 1 and not n.keywords and n not in self.mod.lengths:
                    t = self.expr(n.args[0])
                    t = t.target if isinstance(t, PtrT) else t
                    if isinstance(t, ArrayT):
                        self.mod.lengths[n] = t.length
        finally:
            self.nonnull = saved

    def python_builtin(self, e: S.Call, statement: bool) -> Type:
        name = e.func.id
        if statement:
            self.error(e.span, f"{name}() has no effect here", f"use its value: x = {name}(...)")
        if e.keywords:
            self.error(e.keywords[0].span, f"{name}()'s keyword arguments are not available in BPF programs",
                       f"{name}() takes {PYTHON_BUILTINS[name]}")
        if name == "len":
            t = self.expr(e.args[0]) if len(e.args) == 1 else None
            if len(e.args) != 1 or not isinstance(getattr(t, "target", t), ArrayT):
                self.error(e.span, f"len() takes one fixed-size array, not {t if len(e.args) == 1 else f'{len(e.args)} arguments'}",
                           "the length of an array is its type's: u8[64] has 64 elements; a map's is its max_entries")
            return I64
        want = 2 if name in ("min", "max") else 1
        if len(e.args) < want or name == "abs" and len(e.args) != 1:
            self.error(e.span, f"{name}() takes {PYTHON_BUILTINS[name]}, got {len(e.args)} argument"
                       f"{'s' * (len(e.args) != 1)}",
                       "for the elements of an array, loop over it" if name != "abs" else "")
            for a in e.args:
                self.expr(a)
            return I64
        constant = [self.fold(a) is not None for a in e.args]
        wrong = [(a, t) for a, c in zip(e.args, constant) if not c
                 and not isinstance(t := self.expr(a), (IntT, BoolT))]
        for a, t in wrong:   # one error an argument, with what to pass instead
            inner, src = t.target if isinstance(t, PtrT) else t, self.source_text(a)
            self.error(a.span, f"{name}() takes integers, not {t}",
                       f"pass a field of it: {src}.{inner.fields[0].name}" if isinstance(inner, StructT) else
                       f"pass the value it refers to: {src}[0], once {src} is tested against None"
                       if isinstance(inner, IntT) else "")
        if wrong:
            return I64
        self.no_pointer_arithmetic(*e.args)
        types = [self.int_operand(a, None) for a, c in zip(e.args, constant) if not c]
        t = types[0] if types else I64
        for u in types[1:]:
            t = common_int(t, u) if isinstance(t, IntT) and isinstance(u, IntT) else I64
        for a, c in zip(e.args, constant):
            if c:
                self.int_operand(a, t)
        if not isinstance(t, IntT):
            return I64
        self.out.calls[e] = CallTarget(name, t)
        if name == "abs":  # unsigned, so that abs of the type's minimum is exact, as in Python
            return IntT(t.bits, False)
        self.mixed_signs(f"{name}()", [a for a, c in zip(e.args, constant) if not c], types, t)
        return t
