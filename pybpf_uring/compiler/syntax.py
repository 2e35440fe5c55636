"""The syntax tree the frontend produces: frozen dataclasses, each carrying its source span.

Nothing past the frontend imports lark; every later stage works on these nodes.  Nodes compare
by identity (`eq=False`) so later stages can key side tables (types, constants) by node.
Type annotations stay ordinary expressions (`u32`, `u32[4]`, `Pair`); the checker resolves them.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from ..diagnostics import Span

_dataclass = dataclass(frozen=True, eq=False, repr=False)


def node(cls):
    """A frozen dataclass, made cheaply: importing this module defines every node class, and
    the dataclass machinery compiles each generated method separately (about 0.1 ms each).  So
    the nodes share one `__repr__` (`_Node`'s, the same text dataclasses would write) and a
    class without a docstring gets its name as one, instead of one made from its signature."""
    if cls.__doc__ is None:
        cls.__doc__ = cls.__name__
    return _dataclass(cls)


class _Node:
    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({', '.join(f'{f.name}={getattr(self, f.name)!r}' for f in fields(self))})"


# ----- expressions -----------------------------------------------------------------------
@node
class Expr(_Node):
    span: Span


@node
class Constant(Expr):
    value: int | bool | str | None  # int literals, True/False, strings (print/tracepoint), None


@node
class Name(Expr):
    id: str


@node
class BinOp(Expr):
    op: str  # one of + - * // % & | ^ << >>
    left: Expr
    right: Expr


@node
class UnaryOp(Expr):
    op: str  # one of - + ~ not
    operand: Expr


@node
class BoolOp(Expr):
    op: str  # "and" | "or"
    values: tuple[Expr, ...]


@node
class Compare(Expr):
    left: Expr
    ops: tuple[str, ...]  # == != < <= > >= "is" "is not"
    comparators: tuple[Expr, ...]


@node
class IfExp(Expr):
    """`then if test else otherwise`: only the chosen side is evaluated, as in Python."""

    test: Expr
    then: Expr
    otherwise: Expr


@node
class ListDisplay(Expr):
    """`[a, b, c]`: only an array's value (`x: u8[3] = [1, 2, 3]`); the checker says so elsewhere."""

    elts: tuple[Expr, ...]


@node
class Attribute(Expr):
    value: Expr
    attr: str


@node
class Subscript(Expr):
    value: Expr
    index: Expr


@node
class Keyword(_Node):
    span: Span
    name: str
    value: Expr


@node
class Call(Expr):
    func: Expr
    args: tuple[Expr, ...]
    keywords: tuple[Keyword, ...] = ()


# ----- statements ------------------------------------------------------------------------
@node
class Stmt(_Node):
    span: Span


@node
class Assign(Stmt):
    target: Expr  # Name, Attribute or Subscript
    value: Expr | None  # None only for a bare annotation `x: u32`
    annotation: Expr | None = None


@node
class AugAssign(Stmt):
    target: Expr
    op: str  # the binary operator, e.g. "+" for +=
    value: Expr


@node
class If(Stmt):
    test: Expr
    body: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...]  # an elif is a single nested If here


@node
class For(Stmt):
    target: Name
    iter: Expr  # a Call of range(...)
    body: tuple[Stmt, ...]


@node
class While(Stmt):
    test: Expr
    body: tuple[Stmt, ...]


@node
class Break(Stmt):
    pass


@node
class Continue(Stmt):
    pass


@node
class Pass(Stmt):
    pass


@node
class Return(Stmt):
    value: Expr | None


@node
class ExprStmt(Stmt):
    value: Expr


@node
class Delete(Stmt):
    target: Expr  # del m[k]


@node
class Global(Stmt):
    """`global a, b`: the names are the module's annotated globals everywhere in the function."""

    names: tuple[str, ...]


# ----- module-level declarations ---------------------------------------------------------
@node
class Param(_Node):
    span: Span
    name: str
    annotation: Expr | None


@node
class FunctionDef(Stmt):
    name: str
    decorators: tuple[Expr, ...]
    params: tuple[Param, ...]
    returns: Expr | None
    body: tuple[Stmt, ...]  # docstring removed


@node
class Field(_Node):
    span: Span
    name: str
    annotation: Expr


@node
class ClassDef(Stmt):
    name: str
    bases: tuple[Expr, ...]
    fields: tuple[Field, ...]  # docstring and `pass` removed


@node
class Import(Stmt):
    module: str  # "pybpf_uring.uring" for `from pybpf_uring.uring import x`
    names: tuple[tuple[str, str], ...]  # (name, alias); for `import m as a`: (("m", "a"),) and module ""


@node
class Module(_Node):
    source: "Source"  # noqa: F821 - see diagnostics.Source
    body: tuple[Stmt, ...]  # FunctionDef, ClassDef, Import, Assign (constants and maps)
    # For a decorated function compiled on its own (in a script or a notebook cell): the
    # function's globals at run time, where names not declared in `body` are found.
    environment: dict | None = None
