"""lark's parse tree → the syntax tree of `syntax.py`: `Builder`, a lark Transformer with one
method per grammar rule, and the diagnostics for the Python constructs the language rejects.

Split from parse.py, which owns the parser, its generic syntax errors and what text of a file or
cell is parsed; this module owns what each rule means.  The builder records a diagnostic and
returns a placeholder for a rejected construct, so a user sees every such error at once.
"""
from __future__ import annotations

import ast
import dataclasses
import re
import warnings

from lark import Transformer, v_args

from . import syntax as S
from ..diagnostics import Collector, Span

# Python's own limit on digits in int(str) (sys.get_int_max_str_digits); a longer literal
# cannot be a BPF integer anyway.
MAX_LITERAL_DIGITS = 4300

@dataclasses.dataclass(frozen=True)
class _Tuple:
    """An unparenthesised tuple (`a, b`); the statement holding it says what is wrong."""

    span: Span
    items: tuple


# Rules for Python constructs the language does not have: the rule name → the diagnostic.
REJECTED = {
    "lambdef": "lambda is not available in BPF programs; define a function at module level",
    "walrus": "assignment expressions (:=) are not available in BPF programs; assign in a statement first",
    "tuple_display": "tuples are not available in BPF programs; use separate variables or a Struct",
    "generator": "generator expressions are not available in BPF programs; use a for loop over range(...)",
    "list_comprehension": "list comprehensions are not available in BPF programs; use a for loop over range(...)",
    "dict_display": "dict literals are not available in BPF programs; use a HashMap declared at module level",
    "dict_comprehension": "dict comprehensions are not available in BPF programs; use a for loop and a HashMap",
    "set_display": "set literals are not available in BPF programs; use a HashMap declared at module level",
    "set_comprehension": "set comprehensions are not available in BPF programs; use a for loop and a HashMap",
    "star_expr": "starred expressions (*x) are not available in BPF programs; write each value",
    "star_arg": "argument unpacking (*args) is not available in BPF programs; pass each argument",
    "kwstar_arg": "keyword argument unpacking (**kwargs) is not available in BPF programs; pass each argument",
    "star_param": "star parameters (*args) are not available in BPF programs; declare each parameter with its type",
    "kwstar_param": "keyword parameters (**kwargs) are not available in BPF programs; "
                    "declare each parameter with its type",
    "posonly_marker": "positional-only markers (/) are not available in BPF programs; list the parameters",
    "slice": "slices are not available in BPF programs; index one element at a time",
    "subscript_tuple": "subscripts with several indexes are not available in BPF programs; "
                       "index one at a time: x[a][b]",
    "yield_expr": "yield is not available in BPF programs; a function returns one value",
    "await_op": "await is not available in BPF programs; call helpers directly",
    "power_op": "the power operator (**) is not available in BPF programs; multiply, or shift left for powers of two",
    "ellipsis": "... (Ellipsis) is not available in BPF programs; write pass for an empty body",
    "with_stmt": "with statements are not available in BPF programs; call the functions directly",
    "try_stmt": "try statements are not available in BPF programs (there are no exceptions); check return values",
    "raise_stmt": "raise is not available in BPF programs (there are no exceptions); return an error code",
    "assert_stmt": "assert is not available in BPF programs; test with if and return an error code",
    "nonlocal_stmt": "nonlocal is not available in BPF programs; pass values as arguments",
    "loop_else": "else: on a loop is not available in BPF programs; set a flag before break and test it after the loop",
    "import_star": "star imports are not available in BPF modules; import each name: from pybpf_uring import u32",
    "relative_module": "relative imports are not available in BPF modules; "
                       "import from pybpf_uring or pybpf_uring.uring",
}
REJECTED_OPS = {
    "/": "true division is not available in BPF programs; use // for integer division",
    "@": "matrix multiplication (@) is not available in BPF programs; use * to multiply integers",
    "in": "the in operator is not available in BPF programs; compare with ==, or look the key up in a map",
    "not in": "the not in operator is not available in BPF programs; compare with !=, or look the key up in a map",
    "<>": "<> is not Python 3; use !=",
    "/=": "true division (/=) is not available in BPF programs; use //= for integer division",
    "**=": "the power operator (**=) is not available in BPF programs; multiply, or shift left for powers of two",
    "@=": "matrix multiplication (@=) is not available in BPF programs; use *= to multiply integers",
}


def _reject_rule(rule: str):
    message = REJECTED[rule]

    def reject(self, meta, children):
        return self._reject(self.locate.meta(meta), message)
    reject.__name__ = rule
    reject.__doc__ = f"Rejected: {message}"
    return reject


def _join(a: Span, b: Span) -> Span:
    """The span from `a`'s start to `b`'s end."""
    return Span(a.source, a.line, a.col, b.end_line, b.end_col)


def _block_span(span: Span, body) -> Span:
    """A compound statement ends where its last statement does, not at the next line's dedent."""
    return Span(span.source, span.line, span.col, body[-1].span.end_line, body[-1].span.end_col) if body else span


def _without_docstring(body: tuple) -> tuple:
    first = body[0] if body else None
    is_doc = isinstance(first, S.ExprStmt) and isinstance(first.value, S.Constant) \
        and isinstance(first.value.value, str)
    return body[1:] if is_doc else body


def _flatten(children) -> tuple[S.Stmt, ...]:
    out = []
    for c in children:
        if isinstance(c, list):
            out.extend(c)
        elif c is not None:
            out.append(c)
    return tuple(out)


class Builder(Transformer):
    """One method per grammar rule (lark calls it with the rule's meta and built children)."""

    def __init__(self, locate) -> None:
        super().__init__(visit_tokens=False)
        self.locate = locate
        self.errors = Collector()
        # A parenthesised expression's span excludes its parentheses, as in Python's ast, but
        # an operation around it covers them: `(a + b) * c` starts at the `(`.
        self.with_parens: dict[int, Span] = {}

    def _reject(self, span: Span, message: str, hint: str = "") -> S.Expr:
        """Record a diagnostic; a placeholder lets the rest of the program be checked too."""
        self.errors.error(span, message, hint)
        return S.Constant(span, 0)

    def _expr(self, e, message: str = REJECTED["tuple_display"]) -> S.Expr:
        """A single expression where a statement holds one: an unparenthesised tuple is an error."""
        if isinstance(e, _Tuple):
            return self._reject(e.span, message)
        return e

    # ----- module and blocks
    def start(self, meta, children):
        return _without_docstring(_flatten(children))

    def suite(self, meta, children):
        return _flatten(children)

    def simple_stmt(self, meta, children):
        return [c for c in children if c is not None]

    # ----- literals and names
    def name(self, meta, children):
        return S.Name(self.locate.meta(meta), str(children[0]))

    def number(self, meta, children):
        span, text = self.locate.meta(meta), str(children[0])
        value, problem = _int_literal(text)
        return S.Constant(span, value) if problem is None else self._reject(span, problem)

    def strings(self, meta, children):
        span = self.locate.meta(meta)
        parts = [_string_literal(str(tok)) for tok in children]
        problems = [p for _, p in parts if p]
        if problems:
            return self._reject(span, problems[0])
        return S.Constant(span, "".join(v for v, _ in parts))

    def none(self, meta, children):
        return S.Constant(self.locate.meta(meta), None)

    def true(self, meta, children):
        return S.Constant(self.locate.meta(meta), True)

    def false(self, meta, children):
        return S.Constant(self.locate.meta(meta), False)

    # ----- operators
    def paren(self, meta, children):
        self.with_parens[id(children[0])] = self.locate.meta(meta)
        return children[0]

    def _outer(self, e: S.Expr) -> Span:
        return self.with_parens.get(id(e), e.span)

    def _binops(self, meta, children):
        left = children[0]
        for op, right in zip(children[1::2], children[2::2]):
            left = S.BinOp(_join(self._outer(left), self._outer(right)), str(op), left, right)
            if left.op in REJECTED_OPS:
                self._reject(left.span, REJECTED_OPS[left.op])
        return left

    or_expr = xor_expr = and_expr = shift_expr = arith_expr = term = _binops

    def ternary(self, meta, children):
        then, test, otherwise = children
        return S.IfExp(self.locate.meta(meta), test, then, otherwise)

    def list_display(self, meta, children):
        return S.ListDisplay(self.locate.meta(meta), tuple(c for c in children if c is not None))

    def unary(self, meta, children):
        return S.UnaryOp(self.locate.meta(meta), str(children[0]), children[1])

    def not_op(self, meta, children):
        return S.UnaryOp(self.locate.meta(meta), "not", children[0])

    def or_test(self, meta, children):
        return S.BoolOp(self.locate.meta(meta), "or", tuple(children))

    def and_test(self, meta, children):
        return S.BoolOp(self.locate.meta(meta), "and", tuple(children))

    def comp_op(self, meta, children):
        op = " ".join(str(t) for t in children)
        if op in REJECTED_OPS:
            self._reject(self.locate.meta(meta), REJECTED_OPS[op])
        return op

    def comparison(self, meta, children):
        return S.Compare(self.locate.meta(meta), children[0], tuple(children[1::2]), tuple(children[2::2]))

    # ----- primaries
    def attribute(self, meta, children):
        return S.Attribute(self.locate.meta(meta), children[0], str(children[1]))

    def subscript(self, meta, children):
        return S.Subscript(self.locate.meta(meta), children[0], children[1])

    def call(self, meta, children):
        args, keywords = children[1] if children[1] is not None else ((), ())
        return S.Call(self.locate.meta(meta), children[0], args, keywords)

    def arguments(self, meta, children):
        args, keywords = [], []
        for c in children:
            if isinstance(c, S.Keyword):
                keywords.append(c)
            elif c is not None:
                if keywords:
                    self._reject(c.span, "positional argument follows keyword argument",
                                 "put positional arguments first: f(a, b, name=c)")
                args.append(c)
        return tuple(args), tuple(keywords)

    def generator_argument(self, meta, children):
        self._reject(self.locate.meta(meta), REJECTED["generator"])
        return (), ()

    def keyword(self, meta, children):
        target, value = children
        if not isinstance(target, S.Name):
            self._reject(target.span, "a keyword argument's name must be a plain name: f(name=value)",
                         "to compare, write ==")
            return value
        return S.Keyword(self.locate.meta(meta), target.id, value)

    # ----- simple statements
    def expr_stmt(self, meta, children):
        return S.ExprStmt(self.locate.meta(meta), self._expr(children[0]))

    def assign(self, meta, children):
        span, (target, *values) = self.locate.meta(meta), children
        if len(values) > 1:
            self._reject(span, "chained assignment (a = b = ...) is not available in BPF programs; "
                               "assign each name in its own statement")
        if isinstance(target, _Tuple):  # one error for `a, b = 1, 2`, not one per side
            self._reject(span, "tuple unpacking assignment is not available in BPF programs; "
                               "assign one name at a time")
            return None
        return S.Assign(span, self._target(target), self._expr(values[-1]))

    def annassign(self, meta, children):
        target, annotation, value = children
        target = self._target(target, "an annotated assignment has one target; annotate one name at a time")
        value = self._expr(value) if value is not None else None
        return S.Assign(self.locate.meta(meta), target, value, annotation)

    def augassign(self, meta, children):
        target, op, value = children
        span = self.locate.meta(meta)
        if str(op) in REJECTED_OPS:
            self._reject(self.locate.token(op), REJECTED_OPS[str(op)])
        target = self._target(target, "augmented assignment has one target; update one name at a time")
        return S.AugAssign(span, target, str(op)[:-1], self._expr(value))

    def _target(self, target, tuple_message: str = "") -> S.Expr:
        """An assignment target: a name, a field or an element."""
        if isinstance(target, _Tuple):
            return self._reject(target.span, tuple_message)
        if not isinstance(target, (S.Name, S.Attribute, S.Subscript)):
            return self._reject(target.span, f"cannot assign to {_describe(target)}",
                                "assign to a name, a field (s.x) or an element (a[i])")
        return target

    def del_stmt(self, meta, children):
        target = self._expr(children[0], "del takes one target in BPF programs; write one del per key")
        return S.Delete(self.locate.meta(meta), target)

    def global_stmt(self, meta, children):
        return S.Global(self.locate.meta(meta), tuple(str(c) for c in children))

    def pass_stmt(self, meta, children):
        return S.Pass(self.locate.meta(meta))

    def break_stmt(self, meta, children):
        return S.Break(self.locate.meta(meta))

    def continue_stmt(self, meta, children):
        return S.Continue(self.locate.meta(meta))

    def return_stmt(self, meta, children):
        value = children[0]
        if value is not None:
            value = self._expr(value, "returning several values is not available in BPF programs; "
                                     "return one integer, or fill a Struct passed in")
        return S.Return(self.locate.meta(meta), value)

    def yield_stmt(self, meta, children):
        return None  # the yield expression already said what is wrong

    def bare_tuple(self, meta, children):
        return _Tuple(self.locate.meta(meta), tuple(children))

    # ----- imports
    def import_name(self, meta, children):
        return S.Import(self.locate.meta(meta), "", tuple(children))

    def dotted_as_name(self, meta, children):
        name, alias = children
        return name, str(alias) if alias is not None else name

    def import_from(self, meta, children):
        module, names = children
        return S.Import(self.locate.meta(meta), module if isinstance(module, str) else "",
                        names if isinstance(names, tuple) else ())

    def import_as_names(self, meta, children):
        return tuple(c for c in children if c is not None)

    def import_as_name(self, meta, children):
        name, alias = (str(c) if c is not None else None for c in children)
        return name, alias or name

    def dotted_name(self, meta, children):
        return ".".join(str(c) for c in children)

    # ----- compound statements
    def if_stmt(self, meta, children):
        test, body, *elifs, orelse = children
        orelse = orelse or ()
        for span, elif_test, elif_body in reversed(elifs):
            orelse = (S.If(_block_span(span, orelse or elif_body), elif_test, elif_body, orelse),)
        return S.If(_block_span(self.locate.meta(meta), orelse or body), test, body, orelse)

    def elif_clause(self, meta, children):
        return self.locate.meta(meta), children[0], children[1]

    def else_block(self, meta, children):
        return children[0]

    def while_stmt(self, meta, children):
        test, body, _ = children
        return S.While(_block_span(self.locate.meta(meta), body), test, body)

    def for_stmt(self, meta, children):
        target, iterable, body, _ = children
        if not isinstance(target, S.Name):
            target = self._reject(target.span, "the loop variable must be a single name: for i in range(...)")
            target = S.Name(target.span, "_")
        return S.For(_block_span(self.locate.meta(meta), body), target, self._expr(iterable), body)

    def async_stmt(self, meta, children):
        span = self.locate.meta(meta)
        if isinstance(children[1], S.FunctionDef):
            self._reject(span, "async functions are not available in BPF programs; use def")
        else:
            self._reject(span, "async for and async with are not available in BPF programs")
        return None

    # ----- definitions
    def funcdef(self, meta, children):
        name, params, returns, body = children
        body = _without_docstring(body)
        for stmt in _nested_definitions(body):
            what = "functions" if isinstance(stmt, S.FunctionDef) else "classes"
            self._reject(_header_span(stmt), f"nested {what} are not available in BPF programs; "
                                            f"define it at module level")
        span = _block_span(self.locate.meta(meta), body)
        return S.FunctionDef(span, str(name), (), params or (), returns, body)

    def parameters(self, meta, children):
        return tuple(c for c in children if isinstance(c, S.Param))

    def param(self, meta, children):
        return S.Param(self.locate.meta(meta), str(children[0]), children[1])

    def default_param(self, meta, children):
        self._reject(children[2].span, "default parameter values are not available in BPF programs; "
                                      "pass every argument at the call")
        return S.Param(self.locate.meta(meta), str(children[0]), children[1])

    def decorator(self, meta, children):
        return self._expr(children[0])

    def decorated(self, meta, children):
        *decorators, definition = children
        if isinstance(definition, S.ClassDef):
            self._reject(decorators[0].span, "class decorators are not available in BPF modules",
                         "a Struct class is written `class Name(Struct):` with annotated fields")
            return definition
        if isinstance(definition, S.FunctionDef):
            return dataclasses.replace(definition, decorators=tuple(decorators))
        return definition  # an async def, already rejected

    def classdef(self, meta, children):
        name, arguments, body = children
        bases, keywords = arguments if arguments is not None else ((), ())
        for k in keywords:
            self._reject(k.span, "class keyword arguments are not available in BPF modules",
                         f"write class {name}(Struct):")
        span = _block_span(self.locate.meta(meta), body)
        fields = tuple(f for f in map(self._field, _without_docstring(body)) if f is not None)
        return S.ClassDef(span, str(name), bases, fields)

    def _field(self, stmt: S.Stmt) -> S.Field | None:
        """A Struct body holds annotated fields; `pass` is allowed for an empty one."""
        if isinstance(stmt, S.Pass):
            return None
        is_field = isinstance(stmt, S.Assign) and stmt.annotation is not None and isinstance(stmt.target, S.Name)
        if is_field and stmt.value is None:
            return S.Field(stmt.span, stmt.target.id, stmt.annotation)
        if is_field:
            self._reject(stmt.value.span, "struct fields cannot have default values; a new struct is all zeros")
            return S.Field(stmt.span, stmt.target.id, stmt.annotation)
        if isinstance(stmt, S.FunctionDef):
            self._reject(_header_span(stmt), "methods are not available in Struct classes",
                         "define a module-level function that takes the struct as a parameter")
        else:
            self._reject(_header_span(stmt), "a Struct class holds only annotated fields (name: type)")
        return None


def _header_span(stmt: S.Stmt) -> Span:
    s = stmt.span
    return Span(s.source, s.line, s.col, s.line, s.col + 1) if s.end_line != s.line else s


def _nested_definitions(body):
    """Function and class definitions anywhere inside a function body."""
    for stmt in body:
        if isinstance(stmt, (S.FunctionDef, S.ClassDef)):
            yield stmt
        for block in ("body", "orelse"):
            yield from _nested_definitions(getattr(stmt, block, ()))


def _describe(e: S.Expr) -> str:
    names = {"Constant": "a literal", "Call": "a function call", "BinOp": "an expression",
             "UnaryOp": "an expression", "BoolOp": "an expression", "Compare": "a comparison"}
    return names.get(type(e).__name__, "this expression")


def _int_literal(text: str) -> tuple[int, str | None]:
    """An integer literal's value, or what is wrong with it (floats, leading zeros, junk)."""
    digits = text.replace("_", "")
    if len(digits) > MAX_LITERAL_DIGITS:
        return 0, f"integer literal with {len(digits)} digits is too large for BPF (64 bits at most)"
    try:
        if text.isascii():
            return int(text, 0), None
    except ValueError:
        pass
    if re.fullmatch(r"0\d+", digits) and digits.isdigit():
        return 0, ("leading zeros in decimal integer literals are not allowed; "
                   "use 0o for octal, or remove the zeros")
    is_hex = digits[:2].lower() == "0x"
    if not is_hex and re.fullmatch(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[jJ]?", digits) \
            and re.search(r"[.eEjJ]", digits):
        return 0, "float literals are not available in BPF programs; BPF has integers only"
    return 0, f"invalid integer literal {text!r}"


def _string_literal(token: str) -> tuple[str, str | None]:
    """A string token's value, or what is wrong with it (f-strings, bytes, bad escapes)."""
    prefix = re.match(r"[a-zA-Z]*", token).group().lower()
    if "f" in prefix:
        return "", ("f-strings are not available in BPF programs; "
                    "pass the values to print as arguments: print(\"x =\", x)")
    if "b" in prefix:
        return "", "bytes literals are not available in BPF programs; use a string or an integer array"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = ast.literal_eval(token)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        return "", f"invalid string literal: {getattr(e, 'msg', None) or e}"
    if not isinstance(value, str):
        return "", "invalid string literal"
    return value, None


for _rule in REJECTED:
    setattr(Builder, _rule, _reject_rule(_rule))
Builder = v_args(meta=True)(Builder)
