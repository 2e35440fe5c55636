"""Checker: resolves names, infers and checks types, and enforces the rules of BPF programs.

Algorithm.  A module pass records imports (resolved against pybpf_uring's own objects),
folds module-level integer constants, lays out structs, and declares maps.  Then every program
and every subprogram it calls (transitively; recursion is an error) is checked statement by
statement in source order.  Scopes are Python's: a name a function binds anywhere (a
parameter, an assignment, a loop variable) is its local throughout the function and hides a
module-level name, which the function then cannot use; the one exception is an annotated
global (`n: u64 = 0`), which a function writes by assigning it, as C does, since BPF code has
no `global` statement.  The first assignment fixes a local's type (its annotation, or the type
of the value; a bare integer literal is i64).
Expressions are typed bottom-up; an integer constant takes the type of what it meets.
Results go to side tables keyed by node (`Checked`), never onto the nodes.  Every error is
collected, and the stage ends with one CompileError listing them all.
"""
from __future__ import annotations

import builtins
import difflib
import importlib
import mmap
import operator
from functools import lru_cache

from . import syntax as S
from .builtins import CQ_INTRINSICS, HELPERS, KFUNCS, PREPS, PYTHON_BUILTINS, fold_builtin
from .check_body import BodyChecker
from . import check_trace
from .check_trace import INTRINSICS
from .check_maps import RecordRules
from .check_loops import Cost, nodes
from .check_stack import check_stack
from .checked import (PROGRAM_KINDS, Checked, FunctionInfo, GlobalVar, Symbol, describe,
                      struct_from_ctypes)
from .depth import on_deep_stack
from ..diagnostics import Collector, Span
from ..limits import (MAX_CALL_DEPTH, MAX_HELPER_ARGS, MAX_MAP_ENTRIES, MAX_RINGBUF_BYTES, MAX_TYPE_SIZE,
                      ringbuf_size_problem)
from .typesys import (ARRAY_KINDS, I64, INTS, MAP_TYPES, NONE, RINGBUF, TYPE_SIZE_WHY, ArrayT, IntT, MapT,
                      PtrT, StructT, Type)

LIBRARY_MODULES = ("pybpf_uring", "pybpf_uring.uring", "pybpf_uring.iou")
# Each map kind's arguments, as its declaration is written (and as an error says to write it).
MAP_FORMS = {kind: "value_type, max_entries" if kind in ARRAY_KINDS else "size_bytes" if kind == RINGBUF
             else "key_type, value_type, max_entries" for kind in MAP_TYPES}
DSL_BUILTINS = ("print", "range", *PYTHON_BUILTINS)  # Python's builtins a program uses as Python does
# How alike a name must be to be suggested for a misspelt one (difflib's ratio): 'totl' and
# 'total' are 0.89, 'mn' and 'min' 0.8, but 'missing' and 'min' only 0.6.
NEAR = 0.75


@on_deep_stack
def check(module: S.Module, only: set[str] | None = None, btf: str | None = None) -> Checked:
    """Check `module`; `only` limits the programs compiled (a decorated function's `.compile()`);
    `btf` is a BTF file describing the kernel tracing programs are for (None: this kernel)."""
    return ModuleChecker(module, btf).run(only)


class ModuleChecker:
    def __init__(self, module: S.Module, btf: str | None = None) -> None:
        self.module, self.btf = module, btf
        self.errors = Collector()
        self.globals: dict[str, Symbol] = {}
        self.out = Checked(module, {}, {}, {}, {})
        self.defs: dict[str, S.FunctionDef] = {}
        self.costs: dict[str, Cost] = {}  # function → the verifier's walk of it (check_loops)
        self.folded: dict[tuple[S.Expr, frozenset[str], bool], int | None] = {}
        self.lengths: dict[S.Call, int] = {}  # len() of a fixed-size array (check_python)
        # (caller, argument name or None, callee, parameter, span): a struct passed by reference
        self.ref_edges: list[tuple[str, str | None, str, str, Span]] = []
        self.undefined_spans: list[Span] = []  # names reported undefined (undefined_name)

    def error(self, span: Span | None, message: str, hint: str = "") -> None:
        """Each error is kept once (the Collector's rule): a constant expression is folded
        whenever a rule asks for its value, and every fold resolves the types in it
        (`sizeof(T)`) again.  An error about an expression on one line around a name already
        reported undefined is that error's consequence (the name was typed i64 to go on: "i64
        cannot be indexed"), and is dropped, as Python stops at the NameError."""
        if span is not None and any(around(span, u) for u in self.undefined_spans):
            return
        self.errors.error(span, message, hint)

    def undefined_name(self, span: Span, message: str, hint: str) -> None:
        """A name (or a module's attribute) defined nowhere: reported, and the expressions
        around it report nothing more."""
        self.error(span, message, hint)
        self.undefined_spans.append(span)

    # ----- module level ---------------------------------------------------------------
    def run(self, only: set[str] | None) -> Checked:
        for stmt in self.module.body:
            handler = getattr(self, "decl_" + type(stmt).__name__, None)
            if handler is None:
                self.error(stmt.span, f"{describe(stmt)} is not allowed at module level",
                           "a BPF module holds imports, integer constants, maps, Struct classes and functions")
            else:
                handler(stmt)
        programs = [d for d in self.defs.values() if d.decorators]
        if only is not None:
            programs = [d for d in programs if d.name in only]
        if not programs and not self.errors.diagnostics:
            self.error(None, f"{self.module.source.path}: no BPF program found",
                       "decorate a function with @syscall, @iouring, @socket_filter or @tracepoint(...)")
        for d in programs:
            self.program(d)
        self.check_call_graph()
        self.check_subprogram_contexts()
        self.errors.raise_if_any()
        self.out.warnings = self.errors.shown_warnings()
        return self.out

    def decl_Import(self, stmt: S.Import) -> None:
        if stmt.module == "__future__":
            return
        if not stmt.module:
            for name, alias in stmt.names:
                if name in LIBRARY_MODULES:
                    self.globals[alias] = Symbol("module", value=importlib.import_module(name))
                else:
                    self.error(stmt.span, f"cannot import {name!r} into a BPF module",
                               "import from pybpf_uring or pybpf_uring.uring")
            return
        if stmt.module not in LIBRARY_MODULES:
            self.error(stmt.span, f"cannot import from {stmt.module!r} in a BPF module",
                       "import from pybpf_uring or pybpf_uring.uring")
            return
        lib = importlib.import_module(stmt.module)
        for name, alias in stmt.names:
            if f"{stmt.module}.{name}" in LIBRARY_MODULES:  # from pybpf_uring import uring
                self.globals[alias] = Symbol("module", value=importlib.import_module(f"{stmt.module}.{name}"))
                continue
            sym = library_symbol(lib, name)
            if sym is None:
                self.error(stmt.span, f"{stmt.module} has no name {name!r}", did_you_mean(
                    name, [n for n, m in importable().items() if m == stmt.module or library_symbol(lib, n) is not None]))
            else:
                self.globals[alias] = sym
                if sym.kind == "struct":
                    self.out.structs.setdefault(sym.type.name, sym.type)

    def decl_Assign(self, stmt: S.Assign) -> None:
        if not isinstance(stmt.target, S.Name):
            self.error(stmt.target.span, "only names can be assigned at module level")
            return
        name, value = stmt.target.id, stmt.value
        if stmt.annotation is not None:
            self.declare_global(name, stmt)
            return
        if isinstance(value, S.Call) and self.callee_symbol(value.func).kind == "builtin" \
                and self.callee_symbol(value.func).value in MAP_TYPES:
            self.declare_map(name, stmt, value)
            return
        folded = self.fold(value) if value is not None else None
        if folded is None:
            self.error(value.span if value else stmt.span,
                       f"module-level {name!r} must be an integer constant or a map",
                       "e.g. MAX = 16, or hits = ArrayMap(u64, 4)")
            return
        self.globals[name] = Symbol("const", I64, folded)
        self.out.consts[name] = folded

    def declare_global(self, name: str, stmt: S.Assign) -> None:
        ann, const = stmt.annotation, False
        if isinstance(ann, S.Subscript) and self.callee_symbol(ann.value).value == "Const":
            ann, const = ann.index, True
        t = self.resolve_type(ann)
        if t is None:
            return
        init = 0 if stmt.value is None else self.initial_value(name, stmt.value, t)
        g = GlobalVar(name, t, init, const, stmt.span.line)
        self.globals[name] = Symbol("global", t, g)
        self.out.globals[name] = g

    def initial_value(self, name: str, e: S.Expr, t: Type) -> int | bytes:
        """A global's initial value: an integer's number, or a struct's or an array's bytes as
        the object's `.data` (`.rodata`) holds them, as clang lays out `__u64 h[2] = {1, 2}`.
        All zeros is 0, so the global goes to `.bss` as clang puts a zero one.  On an error it
        is 0 all the same: the global is declared, so its uses are not undefined names too."""
        if isinstance(t, IntT):
            v = self.fold(e)
            if v is None:
                self.error(e.span, f"global {name!r} needs a constant initial value", f"e.g. {name}: {t} = 0")
                return 0
            if not t.min <= v <= t.max:
                self.error(e.span, f"{v} does not fit in {t}")
                return 0
            return v
        buf = bytearray(t.size)
        if not self.initial_bytes(name, e, t, buf, 0):
            return 0
        return bytes(buf) if any(buf) else 0

    def initial_bytes(self, name: str, e: S.Expr, t: Type, buf: bytearray, offset: int) -> bool:
        """Writes the constant `e` of type `t` into `buf` at `offset`; False after an error.
        A repeated list (`[1, 2] * 4`) is checked and laid out once, then copied."""
        if isinstance(t, IntT):
            v = self.fold(e)
            if v is None:
                self.error(e.span, f"global {name!r} needs constant values: numbers, module-level constants "
                           "and expressions of them", f"write a constant here; the program or the host "
                           f"(live.globals.{name}) can set other values after loading")
                return False
            if not t.min <= v <= t.max:
                self.error(e.span, f"{v} does not fit in {t}")
                return False
            buf[offset:offset + t.size] = t.wrap(v).to_bytes(t.size, "little", signed=t.signed)
            return True
        if isinstance(t, ArrayT):
            parts = self.list_parts(e)
            if parts is None:
                self.error(e.span, f"the value of {t} is a list",
                           f"e.g. [0] * {t.length}, or every element listed: [1, 2, ...]")
                return False
            elts, times = parts
            if len(elts) * times != t.length:
                self.error(e.span, f"{t} needs {t.length} values, got {len(elts) * times}",
                           f"list every element, or repeat one: [0] * {t.length}")
                return False
            size = t.elem.size
            if not all([self.initial_bytes(name, x, t.elem, buf, offset + i * size) for i, x in enumerate(elts)]):
                return False
            block = bytes(buf[offset:offset + len(elts) * size])
            buf[offset:offset + t.size] = block * times
            return True
        if isinstance(t, StructT):
            sym = self.callee_symbol(e.func) if isinstance(e, S.Call) else None
            if sym is None or sym.kind != "struct" or sym.type is not t:
                self.error(e.span, f"the value of struct {t.name} is {t.name}(...)",
                           f"e.g. {t.name}({t.fields[0].name}=...), its fields by keyword, the others zero")
                return False
            if e.args:
                self.error(e.args[0].span, f"{t.name}(...) takes keyword arguments",
                           f"write {t.name}({t.fields[0].name}=...)")
                return False
            ok = True
            for kw in e.keywords:
                f = t.field(kw.name)
                if f is None:
                    self.error(kw.span, f"struct {t.name} has no field {kw.name!r}",
                               did_you_mean(kw.name, [x.name for x in t.fields]))
                    ok = False
                else:
                    ok = self.initial_bytes(name, kw.value, f.type, buf, offset + f.offset) and ok
            return ok
        self.error(e.span, f"a global of type {t} cannot have an initial value")
        return False

    def list_parts(self, e: S.Expr | None, local: frozenset[str] = frozenset()) -> \
            tuple[tuple[S.Expr, ...], int] | None:
        """A list as (the elements written, how many times Python repeats them): `[a, b]` is
        once, `[0] * 64` and `64 * [0]` a constant number of times; None for anything else.
        For a global's value, and in a function with the names it binds as `local` (fold)."""
        if isinstance(e, S.ListDisplay):
            return e.elts, 1
        if isinstance(e, S.BinOp) and e.op == "*":
            for items, count in ((e.left, e.right), (e.right, e.left)):
                n = self.fold(count, local, sizes=True)  # a count of elements is a size
                if isinstance(items, S.ListDisplay) and n is not None:
                    return items.elts, max(n, 0)
        return None

    def declare_map(self, name: str, stmt: S.Assign, call: S.Call) -> None:
        kind = self.callee_symbol(call.func).value
        form = MAP_FORMS[kind]
        want = form.count(",") + 1
        if len(call.args) != want or call.keywords:
            self.error(call.span, f"{kind} takes {want} positional argument{'s' * (want > 1)}",
                       f"write {kind}({form})")
            return
        *type_args, size = call.args
        types = [self.resolve_type(a) for a in type_args]
        entries = self.fold(size, sizes=True)
        if None in types:
            return
        if kind == RINGBUF:
            problem = "its size must be an integer constant" if entries is None else \
                ringbuf_size_problem(entries, mmap.PAGESIZE)
            if problem is not None:
                self.error(size.span, f"RingBuf: {problem}",
                           f"e.g. RingBuf({1 << 18}) (256 KiB): a power of 2, a multiple of {mmap.PAGESIZE}")
                entries = MAX_RINGBUF_BYTES   # declared all the same, so its uses are checked
            m = MapT(kind, NONE, NONE, entries)
            self.globals[name] = Symbol("map", m)
            self.out.maps[name] = (m, stmt.span.line)
            return
        if entries is None or entries <= 0:
            self.error(size.span, "max_entries must be a positive integer constant")
            entries = MAX_MAP_ENTRIES   # declared all the same, so its uses are checked as its kind's
        elif entries > MAX_MAP_ENTRIES:
            self.error(size.span, f"max_entries {entries} does not fit the kernel's 32-bit field "
                       f"(at most {MAX_MAP_ENTRIES})")
            entries = MAX_MAP_ENTRIES
        key, value = (INTS["u32"], types[0]) if kind in ARRAY_KINDS else types
        for t, node in zip((key, value), (type_args[0], type_args[-1])):
            if isinstance(t, PtrT):
                self.error(node.span, "map keys and values cannot be references")
                return
        m = MapT(kind, key, value, entries)
        self.globals[name] = Symbol("map", m)
        self.out.maps[name] = (m, stmt.span.line)

    def decl_ClassDef(self, stmt: S.ClassDef) -> None:
        bases = [self.callee_symbol(b) for b in stmt.bases]
        if len(bases) != 1 or bases[0].kind != "builtin" or bases[0].value != "Struct":
            self.error(stmt.span, f"class {stmt.name} must derive from Struct",
                       f"write `class {stmt.name}(Struct):` with annotated fields")
            return
        members = []
        for f in stmt.fields:
            t = self.resolve_type(f.annotation)
            if t is not None:
                members.append((f.name, t, f.span.line))
        if not members:
            self.error(stmt.span, f"struct {stmt.name} has no fields")
            return
        st = StructT.layout(stmt.name, members, stmt.span.line)
        if st.size > MAX_TYPE_SIZE:
            self.error(stmt.span, f"struct {stmt.name} is {st.size} bytes; a type has at most "
                       f"{MAX_TYPE_SIZE} bytes", TYPE_SIZE_WHY)
            return
        self.globals[stmt.name] = Symbol("struct", st)
        self.out.structs[stmt.name] = st

    def decl_FunctionDef(self, stmt: S.FunctionDef) -> None:
        if stmt.name in self.defs:
            self.error(stmt.span, f"function {stmt.name!r} is defined twice")
        self.defs[stmt.name] = stmt
        self.globals[stmt.name] = Symbol("func", value=stmt)

    # ----- types and constants ---------------------------------------------------------
    def callee_symbol(self, e: S.Expr, local: frozenset[str] = frozenset()) -> Symbol:
        """What a name (or `module.name`) means where `e` is written: `local` holds the names
        the enclosing function binds, which hide the module's (kind "local")."""
        if isinstance(e, S.Name):
            if e.id in local:
                return Symbol("local")
            return self.global_symbol(e.id) or Symbol("unknown")
        if isinstance(e, S.Attribute) and isinstance(e.value, S.Name) and e.value.id not in local:
            mod = self.globals.get(e.value.id)
            if mod is not None and mod.kind == "module":
                return library_symbol(mod.value, e.attr) or Symbol("unknown")
        return Symbol("unknown")

    def global_symbol(self, name: str) -> Symbol | None:
        """A module-level name: declared in the module, or (for a function compiled on its own)
        found among its globals at run time."""
        sym = self.globals.get(name)
        env = self.module.environment
        if sym is None and env is not None and name in env:
            sym = runtime_symbol(env[name], name)
            if sym is not None:
                self.globals[name] = sym
                if sym.kind == "map":
                    self.out.maps[name] = (sym.type, 0)
                elif sym.kind == "const":
                    self.out.consts[name] = sym.value
        return sym

    def undefined(self, e: S.Expr) -> bool:
        """Whether `e` is a plain name defined nowhere: not in the module, not imported, not
        one of Python's builtins (those the DSL lacks are "cannot be called", not undefined)."""
        return isinstance(e, S.Name) and self.global_symbol(e.id) is None \
            and not hasattr(builtins, e.id)

    def global_hint(self, name: str) -> str:
        """What to write for `global name` when the module declares no such global: the
        module's globals most alike, else the declaration."""
        return did_you_mean(name, self.out.globals) or f"declare it there with its type: {name}: u64 = 0"

    @staticmethod
    def near(name: str, candidates) -> str:
        """did_you_mean for the function checkers, which cannot import this module."""
        return did_you_mean(name, candidates)

    def undefined_hint(self, name: str, scope=()) -> str:
        """What to write for a name defined nowhere: its import when pybpf_uring has it, else
        the closest names in reach (Python's "did you mean"): the function's `scope`, the
        module's names, pybpf_uring's importable ones and the Python builtins the DSL maps."""
        home = importable().get(name)
        if home is not None:
            return f"import it: from {home} import {name}"
        env = self.module.environment or {}
        known = set(scope) | set(self.globals) | set(DSL_BUILTINS) | \
            {n for n, v in env.items() if runtime_symbol(v, n) is not None}
        return did_you_mean(name, known | set(importable()), lambda n: repr(n) + (
            "" if n in known else f" (from {importable()[n]} import {n})")) or \
            "assign it before use, or declare it at module level"

    def missing_attribute(self, e: S.Expr, local: frozenset[str] = frozenset()) -> tuple[str, str] | None:
        """For `module.name` where the imported module has no such name: Python's AttributeError
        message, and the module's closest names."""
        if isinstance(e, S.Attribute) and isinstance(e.value, S.Name) and e.value.id not in local:
            mod = self.globals.get(e.value.id)
            if mod is not None and mod.kind == "module" and not hasattr(mod.value, e.attr):
                lib = mod.value
                names = [n for n in dir(lib) if not n.startswith("_") and library_symbol(lib, n) is not None]
                return f"module {lib.__name__!r} has no attribute {e.attr!r}", did_you_mean(e.attr, names)
        return None

    def resolve_type(self, e: S.Expr, local: frozenset[str] = frozenset(), returns: bool = False) -> Type | None:
        """An annotation: an integer type, a struct, or `T[n]` (and None for a function's
        `returns`).  Annotations are read at module level, as Python evaluates a parameter's
        when the def runs; a type written as a value inside a body (`sizeof(T)`, a view's
        type) passes the function's `local` names."""
        if isinstance(e, S.Subscript):
            elem = self.resolve_type(e.value, local)
            n = self.fold(e.index, local, sizes=True)
            if elem is None:
                return None
            if n is None or n <= 0:
                self.error(e.index.span, "array length must be a positive integer constant")
                return None
            if elem.size * n > MAX_TYPE_SIZE:
                self.error(e.span, f"{elem}[{n}] is {elem.size * n} bytes; a type has at most "
                           f"{MAX_TYPE_SIZE} bytes", TYPE_SIZE_WHY)
                return None
            return ArrayT(elem, n)
        sym = self.callee_symbol(e, local)
        if sym.kind in ("int_type", "struct"):
            return sym.type
        if isinstance(e, S.Constant) and e.value is None:
            if returns:
                return NONE
            self.error(e.span, "None is not a type here",
                       "None is only a return type (a function that returns nothing); use u8, u16, "
                       "u32, u64, i8, i16, i32, i64, a Struct class, or T[n]")
            return None
        what = e.id if isinstance(e, S.Name) else describe(e)
        hint = "use u8, u16, u32, u64, i8, i16, i32, i64, a Struct class, or T[n]"
        if sym.kind == "local":
            hides = f", which hides the module's {e.id!r}; rename the local" if self.global_symbol(e.id) else ""
            hint = f"{e.id!r} is a local variable here{hides}"
        elif isinstance(e, S.Name) and e.id in INTS:
            hint = f"import it: from pybpf_uring import {e.id}"
        elif isinstance(e, S.Name) and e.id == "int":
            hint = "Python's int has no width in BPF: use i64 (or another fixed-width type)"
        self.error(e.span, f"{what!r} is not a type", hint)
        return None

    def fold(self, e: S.Expr, local: frozenset[str] = frozenset(), sizes: bool = False) -> int | None:
        """The value of a constant expression made of literals and module constants, or None.
        Inside a function, `local` holds the names it binds (parameters, assigned names, loop
        variables): those are its variables wherever they appear, as in Python, even where the
        module has a constant of the same name.  Remembered per node: the rules ask for the
        value of every operand, and recomputing it made a long chain `a + b + ...` quadratic.
        Where a size is wanted (`sizes`: an array's length, a map's max_entries), a `Const`
        global stands for the value it is declared with: sizes are fixed when compiling."""
        if e in self.lengths:
            return self.lengths[e]
        key = (e, local, sizes)
        if key not in self.folded:
            self.folded[key] = self.fold_once(e, local, sizes)
        return self.folded[key]

    def fold_once(self, e: S.Expr, local: frozenset[str], sizes: bool) -> int | None:
        if isinstance(e, S.Constant) and type(e.value) in (int, bool):
            return int(e.value)
        if isinstance(e, S.Name):
            sym = self.global_symbol(e.id) if e.id not in local else None
            if sizes and sym is not None and sym.kind == "global" and sym.value.const \
                    and isinstance(sym.value.type, IntT):
                return sym.value.init
            return sym.value if sym is not None and sym.kind == "const" else None
        if isinstance(e, S.Attribute):  # `uring.IOSQE_IO_LINK`: a constant of an imported module
            sym = self.callee_symbol(e, local)
            return sym.value if sym.kind == "const" else None
        if isinstance(e, S.UnaryOp) and e.op in ("-", "+", "~"):
            v = self.fold(e.operand, local, sizes)
            return None if v is None else {"-": -v, "+": v, "~": ~v}[e.op]
        if isinstance(e, S.BinOp):
            a, b = self.fold(e.left, local, sizes), self.fold(e.right, local, sizes)
            if a is None or b is None:
                return None
            return fold_binop(e.op, a, b)
        if isinstance(e, S.IfExp):
            test, a, b = (self.fold(x, local, sizes) for x in (e.test, e.then, e.otherwise))
            return None if None in (test, a, b) else a if test else b
        if isinstance(e, S.Call) and isinstance(e.func, S.Name) and e.func.id in PYTHON_BUILTINS \
                and e.func.id not in local and self.global_symbol(e.func.id) is None and not e.keywords:
            values = [self.fold(a, local, sizes) for a in e.args]
            return None if None in values else fold_builtin(e.func.id, values)
        if isinstance(e, S.Call) and self.callee_symbol(e.func, local).value == "sizeof" and len(e.args) == 1:
            t = self.resolve_type(e.args[0], local)
            return t.size if t is not None else None
        return None

    # ----- functions ------------------------------------------------------------------
    def program(self, d: S.FunctionDef) -> None:
        if len(d.decorators) != 1:
            self.error(d.decorators[1].span if d.decorators else d.span,
                       f"{d.name} has {len(d.decorators)} decorators; a program has exactly one")
            return
        kind, section = self.decorator(d.decorators[0], d.name)
        if kind is None:
            return
        self.function(d, kind, section)

    def decorator(self, e: S.Expr, name: str) -> tuple[str | None, str | None]:
        call = e if isinstance(e, S.Call) else None
        sym = self.callee_symbol(call.func if call else e)
        kind = sym.value if sym.kind == "decorator" else None
        if kind is None:
            self.error(e.span, "unknown decorator", "use @syscall, @iouring, @socket_filter, "
                       "@tracepoint(\"category/name\") or @loop_step")
            return None, None
        if kind in check_trace.TRACING_KINDS:
            section = check_trace.section(self, kind, e, call)
            return (kind, section) if section else (None, None)
        if call is not None:
            self.error(e.span, f"@{kind} takes no arguments", f"write @{kind}")
            return None, None
        return kind, {"iouring": f"iouring.s/{name}", "syscall": "syscall", "socket_filter": "socket",
                      "loop_step": f"struct_ops.s/{name}"}[kind]

    def function(self, d: S.FunctionDef, kind: str | None, section: str | None) -> FunctionInfo | None:
        if d.name in self.out.functions:
            return self.out.functions[d.name]
        params = []
        for p in d.params:
            if p.annotation is None and kind in check_trace.TRACING_KINDS and p is d.params[0]:
                t = check_trace.kernel_ctx(self, d, kind, section)   # the kernel's record
                if t is None:
                    return None   # said why; the body cannot be checked without its ctx
                params.append((p.name, PtrT(t)))
                continue
            if p.annotation is None:
                self.error(p.span, f"parameter {p.name!r} needs a type annotation",
                           f"e.g. {p.name}: u64")
                continue
            t = self.resolve_type(p.annotation)
            if t is None:
                continue
            if kind in check_trace.TRACING_KINDS and p is d.params[0]:
                check_trace.check_ctx(self, d, kind, section, t)
            params.append((p.name, PtrT(t) if isinstance(t, (StructT, ArrayT)) else t))
        ret = INTS["i64"] if d.returns is None and kind is None else \
            (self.resolve_type(d.returns, returns=True) if d.returns is not None else None)
        if ret is None and d.returns is None:
            self.error(d.span, f"program {d.name} needs a return type", f"write `def {d.name}(...) -> i32:`")
            return None
        if ret is None:
            return None
        if not isinstance(ret, (IntT,)) and ret != NONE:
            self.error(d.returns.span, "a function returns an integer type (or None for a subprogram)")
            return None
        if kind is not None:
            self.program_rules(d, kind, params, ret)
        if len(params) > MAX_HELPER_ARGS:
            self.error(d.params[MAX_HELPER_ARGS].span,
                       f"{d.name} takes {len(params)} parameters; BPF passes at most "
                       f"{MAX_HELPER_ARGS} in registers", "group them in a Struct and pass that")
        info = FunctionInfo(d, kind, section, params, ret)
        self.out.functions[d.name] = info
        body = BodyChecker(self, info)
        body.run()
        body.function_cost()
        RecordRules(self, info).run()
        if d.returns is not None and isinstance(ret, IntT):
            self.check_returns(info)
        for callee in info.calls:
            self.function(self.defs[callee], None, None)
        return info

    def check_returns(self, info: FunctionInfo) -> None:
        """A function declared to return an integer returns one on every path: where Python
        would fall off the end and return None, the BPF code would return whatever r0 holds
        (lowering makes it 0), which no reader of the source expects."""
        end = fall_through(info.node.body)
        if end is None:
            return
        span, how = end
        name = info.name
        self.error(span, f"{how}, {name} reaches its end without a return",
                   f"Python would return None there, and {name} is declared -> {info.ret}: add "
                   f"`return 0` (or the value you mean) at the end of {name}")

    def program_rules(self, d: S.FunctionDef, kind: str, params, ret: Type) -> None:
        if kind == "loop_step":
            names = [getattr(getattr(t, "target", None), "name", None) for _, t in params]
            if names != ["IouCtx", "IouLoopParams"]:
                self.error(d.span, "a @loop_step program takes the loop's ctx and its parameters",
                           f"write `def {d.name}(ctx: IouCtx, lp: IouLoopParams) -> i32:` "
                           "(from pybpf_uring.iou import IouCtx, IouLoopParams)")
            if not isinstance(ret, IntT):
                self.error(d.returns.span, "a program returns an integer", "write `-> i32`")
            return
        if len(params) != 1 or not isinstance(params[0][1], PtrT):
            want = {"iouring": "ctx: IoUringCtx", "syscall": "ctx: YourStruct",
                    "socket_filter": "ctx: SkBuff"}.get(kind, "ctx")
            self.error(d.span, f"a @{kind} program takes one ctx parameter", f"write `def {d.name}({want})`")
            return
        ctx = params[0][1].target
        if kind == "iouring" and getattr(ctx, "name", "") != "IoUringCtx":
            self.error(d.params[0].annotation.span, "an @iouring program's ctx is an IoUringCtx",
                       "from pybpf_uring.uring import IoUringCtx")
        if kind == "socket_filter" and getattr(ctx, "name", "") != "SkBuff":
            self.error(d.params[0].annotation.span, "a @socket_filter program's ctx is an SkBuff",
                       "from pybpf_uring import SkBuff")
        if not isinstance(ctx, StructT):
            self.error(d.params[0].annotation.span, "a program's ctx must be a Struct")
        if not isinstance(ret, IntT):
            self.error(d.returns.span, "a program returns an integer", "write `-> i32`")

    def check_call_graph(self) -> None:
        """No recursion (the verifier rejects it), at most MAX_CALL_DEPTH frames, and the stack
        of each frame and each chain of calls."""
        funcs = self.out.functions
        sites = self.call_sites()

        def deepest(name: str, path: tuple[str, ...]) -> tuple[str, ...]:
            """The longest chain of calls from `name`; a cycle is cut there, and reported."""
            if name not in funcs:   # its signature was refused, with its own error
                return ()
            if name in path:
                self.recursion(path[path.index(name):] + (name,), sites)
                return ()
            return (name,) + max((deepest(c, path + (name,)) for c in funcs[name].calls), key=len, default=())

        for p in self.out.programs:
            chain = deepest(p.name, ())
            if len(chain) > MAX_CALL_DEPTH:
                call = chain[MAX_CALL_DEPTH - 1:MAX_CALL_DEPTH + 1]
                self.error(sites.get(call, p.node.span), f"this call is frame {MAX_CALL_DEPTH + 1} of "
                           f"{' -> '.join(chain)}; the verifier allows {MAX_CALL_DEPTH} frames",
                           f"call {len(chain) - MAX_CALL_DEPTH} level(s) less deep: fold a function "
                           "into its caller")
        check_stack(self, sites)

    def call_sites(self) -> dict[tuple[str, str], Span]:
        """(caller, callee) → the span of the caller's first call of that subprogram."""
        sites: dict[tuple[str, str], Span] = {}
        for f in self.out.functions.values():
            for n in nodes(*f.node.body):
                target = self.out.calls.get(n) if isinstance(n, S.Call) else None
                if target is not None and target.kind == "subprog":
                    key = (f.name, target.target)
                    if key not in sites or (n.span.line, n.span.col) < (sites[key].line, sites[key].col):
                        sites[key] = n.span
        return sites

    def recursion(self, cycle: tuple[str, ...], sites: dict[tuple[str, str], Span]) -> None:
        """The call that closes `cycle` (f -> g -> f: g's call of f) is the error, and each
        other call of the cycle a note where it is, so the whole loop of calls is in view."""
        calls = list(zip(cycle, cycle[1:]))
        notes = [f"{sites[c].source.where(sites[c].line, sites[c].col)}: {c[0]} calls {c[1]}"
                 for c in calls[:-1] if c in sites]
        self.error(sites.get(calls[-1], self.out.functions[cycle[-2]].node.span),
                   f"recursion is not allowed in BPF programs: {' -> '.join(cycle)}",
                   "\n  note: ".join(notes + ["the verifier refuses a cycle of calls; rewrite it "
                                              "as a loop with a constant bound"]))

    def check_subprogram_contexts(self) -> None:
        """Rules that depend on a subprogram's callers: which parameters carry a program's ctx
        (a struct reference passed on from the program's ctx parameter, through any chain of
        subprograms), and which program kinds reach a subprogram that calls a helper of
        some kinds only."""
        funcs = self.out.functions
        carries: dict[tuple[str, str | None], set[str]] = {}

        def passed(caller: str, arg: str | None) -> set[str]:
            f = funcs[caller]
            if f.kind and f.params and arg == f.params[0][0]:
                return {f.kind}
            return carries.get((caller, arg), set())

        changed = True
        while changed:  # a fixpoint over the edges: chains of subprograms pass the ctx on
            changed = False
            for caller, arg, callee, param, _ in self.ref_edges:
                kinds, have = passed(caller, arg), carries.setdefault((callee, param), set())
                if not kinds <= have:
                    have |= kinds
                    changed = True
        for (name, param), kinds in carries.items():
            if kinds and name in funcs:
                funcs[name].ctx_params[param] = frozenset(kinds)
        for caller, arg, callee, param, span in self.ref_edges:
            if callee in funcs and funcs[callee].ctx_params.get(param) and not passed(caller, arg):
                # the verifier: "same insn cannot be used with different pointers"
                self.error(span, f"{callee}() gets the program's ctx as {param!r} at another call, "
                           "so every call must pass the ctx there",
                           f"the verifier lets each of {callee}'s instructions access one kind of "
                           "pointer; pass the ctx here, or give the other data its own function")
        reach: dict[str, set[str]] = {}
        for p in self.out.programs:
            todo = [p.name]
            while todo:
                n = todo.pop()
                if n in funcs and p.kind not in reach.setdefault(n, set()):
                    reach[n].add(p.kind)
                    todo += funcs[n].calls
        for f in funcs.values():
            for item in f.deferred:
                if item[0] == "kind":
                    self.deferred_kind(f, reach.get(f.name, set()), *item[1:])
                else:
                    _, span, param, kinds, message, hint = item
                    if f.ctx_params.get(param, frozenset()) & kinds:
                        self.error(span, message, hint)

    def deferred_kind(self, f: FunctionInfo, reached: set[str], span: Span, name: str,
                      kinds: frozenset[str], what: str) -> None:
        for kind in sorted(reached - kinds):
            caller = next(p.name for p in self.out.programs if p.kind == kind
                          and self.reaches(p.name, f.name))
            self.error(span, f"{name}() cannot be called from a @{kind} program",
                       f"{f.name} is called from the @{kind} program {caller}; "
                       f"{name}() is {what} @{', @'.join(sorted(kinds))} programs")

    def reaches(self, start: str, target: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            n = todo.pop()
            if n == target:
                return True
            if n not in seen:
                seen.add(n)
                todo += self.out.functions[n].calls
        return False


def fall_through(body) -> tuple[Span, str] | None:
    """Where control can run off the end of `body`, and on what condition; None when every
    path through it ends in a return (what follows a return is never reached)."""
    if returns_all(body):
        return None
    last = body[-1]
    if isinstance(last, S.If):
        if not returns_all(last.body):
            return fall_through(last.body)
        if not last.orelse:
            return last.test.span, f"when `{span_text(last.test.span)}` is false"
        return fall_through(last.orelse)
    what = "this loop" if isinstance(last, (S.For, S.While)) else "this statement"
    return last.span, f"after {what}"


def returns(stmt: S.Stmt) -> bool:
    """Whether every path through `stmt` returns."""
    if isinstance(stmt, S.Return):
        return True
    return isinstance(stmt, S.If) and returns_all(stmt.body) and returns_all(stmt.orelse)


def returns_all(body) -> bool:
    return any(returns(stmt) for stmt in body)


def span_text(span: Span) -> str:
    """The source a one-line span covers ("..." for more than one line)."""
    if span.line != span.end_line:
        return "..."
    return span.source.line(span.line)[span.col - 1:span.end_col - 1]


def did_you_mean(name: str, candidates, label=repr) -> str:
    """Python's "did you mean" for a misspelt name: the two candidates most alike, at least NEAR
    alike, each shown by `label`; "" when none is."""
    near = difflib.get_close_matches(name, sorted(set(candidates)), n=2, cutoff=NEAR)
    return "did you mean " + " or ".join(map(label, near)) + "?" if near else ""


def around(outer: Span, inner: Span) -> bool:
    """Whether `outer`, on one line, covers `inner` (an expression and one of its parts)."""
    return outer.source is inner.source and outer.line == outer.end_line == inner.line == inner.end_line \
        and outer.col <= inner.col and inner.end_col <= outer.end_col


@lru_cache(maxsize=None)
def importable() -> dict[str, str]:
    """Every name a BPF module can import → the first of LIBRARY_MODULES that has it."""
    out: dict[str, str] = {}
    for module in LIBRARY_MODULES:
        lib = importlib.import_module(module)
        for name in dir(lib):
            if not name.startswith("_") and name not in out and library_symbol(lib, name) is not None:
                out[name] = module
    return out


FOLDED_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv,
              "%": operator.mod, "&": operator.and_, "|": operator.or_, "^": operator.xor,
              "<<": lambda a, b: a << min(b, 128), ">>": operator.rshift}


def fold_binop(op: str, a: int, b: int) -> int | None:
    """`a op b` as Python computes it, or None where Python would raise (a zero divisor, a
    negative shift count): the checker reports those at the operator.  Only `op` is computed."""
    if op in ("//", "%") and b == 0 or op in ("<<", ">>") and b < 0 or op not in FOLDED_OPS:
        return None
    return FOLDED_OPS[op](a, b)


def library_symbol(lib, name: str) -> Symbol | None:
    """One of pybpf_uring's own names, imported by the module."""
    obj = getattr(lib, name, None)
    return None if obj is None else runtime_symbol(obj, name)


def runtime_symbol(obj, name: str) -> Symbol | None:
    """Classify a Python object by what it is at run time: pybpf_uring's own names, and a
    script's or notebook's maps, structs and integer constants."""
    from .. import decorators, types as T
    if isinstance(obj, T._Map):
        if obj.kind == RINGBUF:
            return Symbol("map", MapT(obj.kind, NONE, NONE, obj.max_entries))
        return Symbol("map", MapT(obj.kind, runtime_type(obj.key), runtime_type(obj.value), obj.max_entries))
    if isinstance(obj, T.IntType):
        return Symbol("int_type", INTS[obj.name])
    if obj is T.Struct:
        return Symbol("builtin", value="Struct")
    if isinstance(obj, type) and issubclass(obj, T._Map) and obj.kind in MAP_TYPES:
        return Symbol("builtin", value=obj.kind)
    if obj is T.sizeof:
        return Symbol("builtin", value="sizeof")
    if obj is T.Const:
        return Symbol("builtin", value="Const")
    if isinstance(obj, type) and issubclass(obj, T.Struct):
        return Symbol("struct", struct_from_ctypes(obj))
    if getattr(decorators, getattr(obj, "__name__", ""), None) is obj and obj.__name__ in PROGRAM_KINDS:
        return Symbol("decorator", value=obj.__name__)
    from .. import iou, types as host_types, uring
    helper_name = getattr(obj, "__name__", "")
    if helper_name in KFUNCS and getattr(iou, helper_name) is obj:
        return Symbol("kfunc", value=KFUNCS[helper_name])
    if helper_name in HELPERS and getattr(host_types, helper_name, getattr(uring, helper_name, None)) is obj:
        return Symbol("helper", value=HELPERS[helper_name])
    if helper_name in INTRINSICS and getattr(host_types, helper_name, None) is obj:
        return Symbol("intrinsic", value=helper_name)
    if helper_name in PREPS and getattr(uring, helper_name) is obj:
        return Symbol("prep", value=helper_name)
    if helper_name in CQ_INTRINSICS and getattr(iou, helper_name) is obj:
        return Symbol("cq", value=helper_name)
    if isinstance(obj, int) and not isinstance(obj, bool):
        return Symbol("const", I64, obj)
    return None


def runtime_type(t) -> Type:
    """A host-side type object (`u32`, `u32[4]`, a Struct class) as the compiler's type."""
    from .. import types as T
    if isinstance(t, T.IntType):
        return INTS[t.name]
    if isinstance(t, T.ArrayOf):
        return ArrayT(runtime_type(t.elem), t.length)
    return struct_from_ctypes(t)
