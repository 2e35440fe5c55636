"""What the checker produces, and what both of its halves (check: the module, check_body: the
function bodies) read: the result tables the lowering consumes (`Checked`, `FunctionInfo`,
`Symbol`, `CallTarget`, `GlobalVar`), the program kinds and their ctx types, and the compiler's
view of host-side Structs.  A module of its own so the two halves and the lowering depend on it
and not on each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import syntax as S
from .typesys import INTS, ArrayT, MapT, PtrT, StructT, Type

PROGRAM_KINDS = {"iouring", "syscall", "socket_filter", "tracepoint", "loop_step", "raw_tracepoint",
                 "tp_btf", "fentry", "fexit", "kprobe", "kretprobe"}


@dataclass
class Symbol:
    """What a name means: kind is local, const, map, struct, int_type, helper, prep, func,
    decorator, builtin (range/print/sizeof/Struct/ArrayMap/HashMap) or module."""

    kind: str
    type: Type | None = None
    value: object = None


@dataclass
class CallTarget:
    kind: str  # helper, prep, subprog, cast, ctor, print, sizeof, lookup
    target: object = None


@dataclass
class FunctionInfo:
    node: S.FunctionDef
    kind: str | None  # program kind, None for a subprogram
    section: str | None
    params: list[tuple[str, Type]]
    ret: Type
    locals: dict[str, Type] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    # Parameters that receive a program's ctx → the program kinds whose ctx (known once every
    # call site is checked); lowering keeps their field accesses at constant offsets.
    ctx_params: dict[str, frozenset[str]] = field(default_factory=dict)
    # Rules of a subprogram that depend on which programs call it, checked after the call graph
    # is complete: ("kind", span, helper, kinds, what) and ("ctx", span, param, rule, kinds, message, hint).
    deferred: list[tuple] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.node.name


@dataclass(frozen=True)
class GlobalVar:
    """A module-level variable in `.data`/`.bss`, or `.rodata` when `const` (set by the host
    before loading).  `init` is an integer's value, or a struct's or an array's bytes (0: all
    zeros, which puts it in `.bss`)."""

    name: str
    type: Type
    init: int | bytes
    const: bool
    line: int


@dataclass
class Checked:
    """The typed program: the module plus side tables the lowering reads."""

    module: S.Module
    structs: dict[str, StructT]
    maps: dict[str, tuple[MapT, int]]  # the type and the line it is declared on (0: unknown)
    consts: dict[str, int]
    functions: dict[str, FunctionInfo]  # programs first, then subprograms, in source order
    types: dict[S.Expr, Type] = field(default_factory=dict)
    values: dict[S.Expr, int] = field(default_factory=dict)  # expressions folded to constants
    symbols: dict[S.Name, Symbol] = field(default_factory=dict)
    calls: dict[S.Call, CallTarget] = field(default_factory=dict)
    loops: dict[S.For, tuple[int, int, int]] = field(default_factory=dict)
    globals: dict[str, "GlobalVar"] = field(default_factory=dict)
    in_bounds: set = field(default_factory=set)  # Subscripts whose variable index is proven in range
    # An array's value written as a list → its elements, one per array element: `[a, b]`, or a
    # list repeated `[0] * n` (each element node as many times as it is repeated).
    lists: dict[S.Expr, tuple[S.Expr, ...]] = field(default_factory=dict)
    warnings: list = field(default_factory=list)  # Diagnostics that do not stop compilation

    @property
    def programs(self) -> list[FunctionInfo]:
        return [f for f in self.functions.values() if f.kind]


def ctx_type_kind(t: Type) -> str | None:
    """The program kind whose ctx `t` is, for the library's ctx structs (a subprogram parameter
    of one of these types receives the program's ctx); None for any other type."""
    from .. import iou, types as T, uring
    target = t.target if isinstance(t, PtrT) else t
    for cls, kind in ((uring.IoUringCtx, "iouring"), (T.SkBuff, "socket_filter"),
                      (iou.IouCtx, "loop_step")):
        if target is struct_from_ctypes(cls):
            return kind
    return None


CTX_TYPE_NAMES = {"iouring": "IoUringCtx", "socket_filter": "SkBuff", "loop_step": "IouCtx"}


_STRUCT_CACHE: dict[type, StructT] = {}


def struct_from_ctypes(cls) -> StructT:
    """The compiler's view of a host-side Struct (the library's own, or a notebook's)."""
    import ctypes
    if cls not in _STRUCT_CACHE:
        def conv(ct):
            if isinstance(ct, type) and issubclass(ct, ctypes.Array):
                return ArrayT(conv(ct._type_), ct._length_)
            if isinstance(ct, type) and issubclass(ct, ctypes.Structure):
                return struct_from_ctypes(ct)
            size = ctypes.sizeof(ct)
            signed = ct(-1).value == -1
            return INTS[f"{'i' if signed else 'u'}{size * 8}"]
        members = [(n, conv(ct), 0) for n, ct in cls._fields_]
        _STRUCT_CACHE[cls] = StructT.layout(cls.__name__, members, btf_name=getattr(cls, "_btf_name_", ""))
    return _STRUCT_CACHE[cls]


def describe(node) -> str:
    """A construct's name as a user would say it, for error messages."""
    names = {"BinOp": "an arithmetic expression", "Call": "a call", "Constant": "a constant",
             "If": "an if statement", "For": "a for loop", "While": "a while loop",
             "ExprStmt": "an expression statement", "Return": "return", "Delete": "del",
             "AugAssign": "an augmented assignment", "Subscript": "a subscript",
             "Attribute": "an attribute", "Compare": "a comparison", "BoolOp": "and/or",
             "UnaryOp": "a unary expression", "Pass": "pass", "Break": "break",
             "Continue": "continue", "Name": "a name", "IfExp": "a conditional expression",
             "ListDisplay": "a list", "Global": "a global statement"}
    return names.get(type(node).__name__, type(node).__name__)
