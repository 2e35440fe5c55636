"""The frontend: source text → `syntax.Module`, or a `CompileError` that says what is wrong.

lark's LALR parser (grammar in `grammar/pybpf.lark`, built once and cached on disk) turns text
into a parse tree; `_Builder`, a lark Transformer dispatching on rule names, turns that tree into
the frozen dataclasses of `syntax.py` right away, so no later stage sees lark.  The grammar also
recognises the Python constructs the language rejects, so each gets a diagnostic that names it at
its exact span and says what to write instead; the builder keeps going after one, so a user sees
every such error at once.  Generic syntax errors (lark's `UnexpectedInput`) become one
`invalid syntax` diagnostic with the expected tokens in words.  No input raises anything but
`CompileError`.

Entry points, one per kind of input: `parse_source(text, path, first_line)` for a file or any
text, and `parse_function(fn)` for a decorated function in a script, module or notebook cell.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import os
import re
import sys
import types
import warnings

from lark import Lark, Transformer, __version__ as lark_version, v_args
from lark.exceptions import LarkError, UnexpectedInput, VisitError
from lark.indenter import DedentError, PythonIndenter

from .. import cells
from . import syntax as S
from ..diagnostics import Collector, CompileError, Diagnostic, Source, Span
from .depth import check_nesting, on_deep_stack

GRAMMAR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "grammar", "pybpf.lark")

# Python's own limit on digits in int(str) (sys.get_int_max_str_digits); a longer literal
# cannot be a BPF integer anyway.
MAX_LITERAL_DIGITS = 4300


@on_deep_stack
def parse_source(text: str, path: str = "<string>", first_line: int = 1) -> S.Module:
    """Parse a BPF module's text.  `first_line` is the line of `text`'s first line in `path`
    (for text cut out of a larger file), so spans and diagnostics name the file's own lines.
    A top-level `if __name__ == "__main__":` block is host code and is skipped."""
    source = Source(path, text, first_line)
    module = S.Module(source, _parse(source, _without_host_blocks(text), first_line - 1, 0))
    check_nesting(module)
    return module


@on_deep_stack
def parse_function(fn) -> S.Module:
    """Parse what a decorated function (a `decorators.Program` or a plain function) needs.

    In a file, the file's own text: the function and the top-level declarations it reaches by
    name (imports, maps, structs, constants, subprograms), with every other line blanked, so host code around the programs is never parsed and spans stay the
    file's.  In a notebook cell, the function's own source (dedented, spans on the cell's lines)
    and the plain functions it calls.  Either way `environment` holds the function's globals,
    where the checker finds what the parsed text does not declare."""
    import inspect
    fn = inspect.unwrap(fn)
    if not isinstance(fn, types.FunctionType):
        raise TypeError(f"parse_function needs a function or a decorated program, not {type(fn).__name__}")
    module = _parse_from_file(fn)
    if module is None:
        source, body = _parse_own_source(fn)
        module = S.Module(source, _with_called_functions(fn, body), fn.__globals__)
    check_nesting(module)
    return module


# ----- the lark parser ----------------------------------------------------------------------
class _Indenter(PythonIndenter):
    """lark's PythonIndenter, keeping the position of a bad dedent (lark's DedentError has none)."""

    def handle_NL(self, token):
        try:
            yield from super().handle_NL(token)
        except DedentError:
            raise _BadDedent(token) from None


class _BadDedent(Exception):
    def __init__(self, token) -> None:
        super().__init__("unindent does not match any outer indentation level")
        self.token = token


@functools.lru_cache(maxsize=None)
def _lark():
    """The LALR parser, built once per process; the tables are cached on disk because building
    them takes longer than a whole cold compile may."""
    with open(GRAMMAR, encoding="utf-8") as f:
        grammar = f.read()
    return Lark(grammar, parser="lalr", lexer="basic", postlex=_Indenter(),
                propagate_positions=True, maybe_placeholders=True, cache=_cache_file(grammar))


def _cache_file(grammar: str) -> str | bool:
    """A file in the user's cache directory, one per grammar text, lark and Python version, so
    two checkouts of different versions do not overwrite each other's tables (lark also checks
    a hash of the grammar and options stored inside)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "pybpf_uring")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return False  # an unwritable home: build the tables every time, still correct
    digest = hashlib.sha256(grammar.encode()).hexdigest()[:16]
    name = f"grammar-{digest}-lark{lark_version}-py{sys.version_info[0]}{sys.version_info[1]}.cache"
    return os.path.join(folder, name)


def _parse(source: Source, text: str, line_offset: int, col_offset: int) -> tuple[S.Stmt, ...]:
    """Parse `text` (the source's text, possibly with lines blanked or dedented) into
    statements whose spans point into `source`."""
    # A newline in front lets the indenter see an indented first line (it reads indentation
    # only after a newline); the locator takes that line back off.
    locate = _Locator(source, line_offset - 1, col_offset)
    text = "\n" + _normal_newlines(text).lstrip("\ufeff") + "\n"
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as e:
        raise CompileError([_syntax_error(e, locate, text)]) from None
    except _BadDedent as e:
        raise CompileError([_dedent_error(e.token, locate)]) from None
    except LarkError as e:  # anything else lark may raise on odd input: still the user's text
        raise CompileError([Diagnostic(locate.at(1, 1), f"invalid syntax: {e}")]) from None
    builder = _Builder(locate)
    try:
        body = builder.transform(tree)
    except (VisitError, RecursionError) as e:
        _reraise(getattr(e, "orig_exc", e), source)
    builder.errors.raise_if_any()
    return body


def _normal_newlines(text: str) -> str:
    """Line ends as "\n" only, as lark and Python's ast count lines."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _reraise(error: BaseException, source: Source):
    """The builder recurses once per tree level, as Python's own parser does, so very deep
    nesting is the user's to fix; anything else is a bug in the builder, shown as itself
    rather than as lark's VisitError wrapper."""
    if isinstance(error, RecursionError):
        hint = "split deep expressions with intermediate variables, and deep blocks into functions"
        raise CompileError([Diagnostic(None, f"{source.path}: the program nests too deeply to parse", hint)]) from None
    raise error


class _Locator:
    """Turns lark positions (1-based, in the parsed text) into Spans in the user's source."""

    def __init__(self, source: Source, line_offset: int, col_offset: int) -> None:
        self.source, self.line_offset, self.col_offset = source, line_offset, col_offset

    def at(self, line: int, col: int, end_line: int | None = None, end_col: int | None = None) -> Span:
        end_line = line if end_line is None else end_line
        end_col = col + 1 if end_col is None else end_col
        return Span(self.source, line + self.line_offset, col + self.col_offset,
                    end_line + self.line_offset, end_col + self.col_offset)

    def meta(self, meta) -> Span:
        return self.at(meta.line, meta.column, meta.end_line, meta.end_column)

    def token(self, tok) -> Span:
        return self.at(tok.line or 1, tok.column or 1, tok.end_line, tok.end_column)


# ----- generic syntax errors ----------------------------------------------------------------
# Expected tokens are summarised in words: "an expression" for anything that can start one,
# "an operator" for the operators that may continue one; closers and separators stay literal.
EXPRESSION_START = {"(", "[", "{", "-", "+", "~", "not", "lambda", "await", "None", "True", "False",
                    "...", "*", "NAME", "NUMBER", "STRING"}
OPERATORS = {"+", "-", "*", "/", "//", "%", "&", "|", "^", "<<", ">>", "**", "@", "<", ">", "==",
             "!=", "<=", ">=", "<>", "and", "or", "not", "in", "is", "if", ".", "(", "["}
AFTER_OPERATOR = {"_NEWLINE", ")", "]", "}", ":", ",", "="}
TOKEN_WORDS = {"NAME": "a name", "NUMBER": "a number", "STRING": "a string",
               "_NEWLINE": "the end of the line", "_INDENT": "an indented block",
               "_DEDENT": "the end of the block", "$END": "the end of the file",
               "AUGOP": "an augmented assignment"}


def _syntax_error(e, locate: _Locator, text: str) -> Diagnostic:
    """lark's UnexpectedInput as `invalid syntax: …` with what was expected, in words."""
    token = getattr(e, "token", None)
    if token is None:  # UnexpectedCharacters: the lexer found no token here
        return _bad_character(e, locate, text)
    if token.type == "_INDENT":
        return Diagnostic(locate.at(token.end_line or 1, 1), "invalid syntax: unexpected indent",
                          "indent only the body of a def, class, if, for or while")
    expected = {_terminal_value(name) for name in (getattr(e, "accepts", None) or e.expected)}
    span = locate.token(token) if token.line else locate.at(e.line or 1, e.column or 1)
    if token.type == "$END" and expected & {")", "]", "}"}:
        bracket = _unclosed_bracket(text)
        if bracket is not None:
            line, col, char = bracket
            return Diagnostic(locate.at(line, col), f"invalid syntax: {char!r} was never closed")
    if "_INDENT" in expected:
        return Diagnostic(span, "invalid syntax: expected an indented block",
                          "indent the body of a def, class, if, for or while by 4 spaces")
    hint = f"expected {_expected_words(expected)}"
    return Diagnostic(span, f"invalid syntax: unexpected {_describe_token(token)}",
                      hint + _likely_intent(token, expected, text.split("\n")[token.line - 1] if token.line else ""))


def _likely_intent(token, expected: set[str], line: str) -> str:
    """What a Python programmer most likely meant by a common slip (`if x = 1:`, `else if`,
    Python 2's `print x`, a match statement)."""
    before = line[:token.column - 1].strip() if token.column else ""
    if expected == {":"} and token.value == "=":
        return "; to compare, write =="
    if expected == {":"} and token.value == "if" and before.endswith("else"):
        return "; for another condition, write elif"
    if before == "print":
        return "; print is a function: print(...)"
    if before == "match":
        return "; match statements are not available in BPF programs, use if/elif"
    return ""


def _terminal_value(name: str) -> str:
    """A literal terminal's text (`)` for RPAR); other terminals keep their name."""
    for t in _lark().terminals:
        if t.name == name and t.pattern.type == "str":
            return t.pattern.value
    return name


def _unclosed_bracket(text: str) -> tuple[int, int, str] | None:
    """The innermost bracket still open at the end of `text` (Python's tokenizer, so brackets
    inside strings and comments do not count), with its 1-based line and column."""
    import io
    import tokenize
    stack = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.OP and tok.string in ("(", "[", "{"):
                stack.append(tok)
            elif tok.type == tokenize.OP and tok.string in (")", "]", "}") and stack:
                stack.pop()
    except (tokenize.TokenError, SyntaxError):
        pass
    if not stack:
        return None
    (line, col0), char = stack[-1].start, stack[-1].string
    return line, col0 + 1, char


def _expected_words(expected: set[str]) -> str:
    words = []
    if {"NAME", "NUMBER"} <= expected:
        words.append("an expression")
        expected = expected - EXPRESSION_START
    if len(expected & OPERATORS - {"*", "/", "**", "(", "["}) >= 3:
        words.append("an operator")
        expected = expected & AFTER_OPERATOR
    words += [TOKEN_WORDS.get(v) or repr(v) for v in sorted(expected, key=_expected_order)]
    words = list(dict.fromkeys(words))[:6]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _expected_order(value: str) -> tuple:
    first = ["_NEWLINE", "NAME", ":", ")", "]", "}", ",", "="]
    return (first.index(value), "") if value in first else (len(first), value)


def _bad_character(e, locate: _Locator, text: str) -> Diagnostic:
    """The lexer's UnexpectedCharacters: an unterminated string, a stray backslash, or a
    character Python does not use."""
    span = locate.at(e.line, e.column)
    char = e.char if e.char else ""
    # An unterminated """ lexes as an empty string "" and a stray " after it.
    if char and char in "\"'" and e.column > 2 and text[e.pos_in_stream - 2:e.pos_in_stream + 1] == char * 3:
        return Diagnostic(locate.at(e.line, e.column - 2),
                          "invalid syntax: unterminated triple-quoted string literal", f"close it with {char * 3}")
    if char and char in "\"'":
        return Diagnostic(span, "invalid syntax: unterminated string literal",
                          "close the string on the same line, or use triple quotes")
    if char == "\\":
        return Diagnostic(span, "invalid syntax: a line continuation (\\) must end its line")
    return Diagnostic(span, f"invalid syntax: invalid character {char!r}",
                      "programs are written with Python's operators, names and literals")


def _dedent_error(token, locate: _Locator) -> Diagnostic:
    line = (token.end_line or token.line or 1)
    col = len(token.value.rsplit("\n", 1)[-1]) + 1
    return Diagnostic(locate.at(line, col), "invalid syntax: unindent does not match any outer indentation level",
                      "indent each line of a block by the same amount")


def _describe_token(token) -> str:
    if token.type in ("_NEWLINE", "_DEDENT"):
        return "end of line"
    if token.type == "$END":
        return "end of file"
    if token.type == "NAME":
        return f"name {token.value!r}"
    if token.type in ("NUMBER", "STRING"):
        return f"{token.type.lower()} {token.value}"
    return repr(str(token.value))


# ----- host code skipped in a module's text -------------------------------------------------
MAIN_BLOCK = re.compile(r"""^if\s+__name__\s*==\s*(['"])__main__\1\s*:""", re.M)


def _without_host_blocks(text: str) -> str:
    """`text` with each top-level `if __name__ == "__main__":` block blanked (lines kept, so
    spans do not move): that block runs on the host and may use any Python."""
    if not MAIN_BLOCK.search(text):
        return text
    text = _normal_newlines(text)
    lines = text.split("\n")
    for start, end in _main_blocks(text, lines):
        lines[start - 1:end] = [""] * (end - start + 1)
    return "\n".join(lines)


def _main_blocks(text: str, lines: list[str]) -> list[tuple[int, int]]:
    """1-based inclusive line ranges of the main blocks: from Python's own parser when the text
    is valid Python, else every following line that is blank, a comment or indented."""
    tree = _python_ast(text)
    if tree is None:
        return [(start, _block_end(lines, start)) for start in
                (text.count("\n", 0, m.start()) + 1 for m in MAIN_BLOCK.finditer(text))]
    return [(s.lineno, s.end_lineno) for s in tree.body if _is_main_test(s)]


def _python_ast(text: str) -> ast.Module | None:
    """Python's own parse of `text`, quietly (its warnings are about code we do not compile)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def _is_main_test(stmt: ast.stmt) -> bool:
    test = getattr(stmt, "test", None)
    return isinstance(stmt, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) \
        and test.left.id == "__name__" and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq) \
        and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value == "__main__"


def _block_end(lines: list[str], start: int) -> int:
    end = start
    for i in range(start, len(lines)):
        line = lines[i]
        if line.strip() and not line[0].isspace() and not line.startswith("#") \
                and not re.match(r"(else|elif)\b", line):
            break
        end = i + 1
    return end


# ----- parse_function ----------------------------------------------------------------------
def _parse_from_file(fn) -> S.Module | None:
    """The declarations `fn` reaches in its file's text; None where the source is not a file
    (a notebook cell, or text Python could not parse) or `fn` is not at its top level."""
    import linecache
    filename = fn.__code__.co_filename
    if _is_notebook_cell(filename):
        return None
    text = "".join(linecache.getlines(filename, fn.__globals__))
    tree = _python_ast(text)
    if tree is None:
        return None
    kept = _reachable_statements(tree.body, fn)
    if kept is None:
        return None
    keep = {i for stmt in kept for i in range(_first_line(stmt), stmt.end_lineno + 1)}
    lines = _normal_newlines(text).split("\n")
    blanked = "\n".join(line if i + 1 in keep else "" for i, line in enumerate(lines))
    source = Source(filename, text)
    return S.Module(source, _parse(source, blanked, 0, 0), fn.__globals__)


def _is_notebook_cell(filename: str) -> bool:
    return filename.startswith("<") or "ipykernel_" in filename or not os.path.exists(filename)


def _reachable_statements(body: list[ast.stmt], fn) -> list[ast.stmt] | None:
    """`fn`'s definition and the top-level statements (imports, maps, constants, structs,
    functions) defining the names it uses, transitively.  Other top-level code is the host's;
    so is a star import, whose names the checker finds among the globals instead."""
    defines: dict[str, ast.stmt] = {}
    for stmt in body:
        for name in _defined_names(stmt):
            defines[name] = stmt  # the last definition wins, as when Python runs the file
    start = defines.get(fn.__name__)
    if start is None or not _first_line(start) <= fn.__code__.co_firstlineno <= start.end_lineno:
        return None
    kept, todo = {id(start): start}, [start]
    while todo:
        for name in _used_names(todo.pop(), defines):
            stmt = defines.get(name)
            if stmt is not None and id(stmt) not in kept:
                kept[id(stmt)] = stmt
                todo.append(stmt)
    return sorted(kept.values(), key=lambda s: s.lineno)


def _defined_names(stmt: ast.stmt) -> list[str]:
    """The names a top-level statement binds (a star import binds none we can see)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return [a.asname or a.name.split(".")[0] for a in stmt.names if a.name != "*"]
    targets = stmt.targets if isinstance(stmt, ast.Assign) else \
        [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _used_names(stmt: ast.stmt, defines: dict[str, ast.stmt]) -> set[str]:
    """The module-level names a top-level statement uses.  A function's own names (parameters,
    assigned names, loop variables) are its locals, as in Python, so a local named like a host
    function does not pull that function in; a name the module declares as an annotated global
    stays, since a function writes the global by assigning it."""
    names = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}
    if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return names
    a = stmt.args
    params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
    outside = [*stmt.decorator_list, stmt.returns, *a.defaults, *a.kw_defaults, *(p.annotation for p in params)]
    outer = {n.id for e in outside if e is not None for n in ast.walk(e) if isinstance(n, ast.Name)}
    stored = {n.id for s in stmt.body for n in ast.walk(s) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    own = {p.arg for p in params} | {n for n in stored if not isinstance(defines.get(n), ast.AnnAssign)}
    return outer | (names - own)


def _first_line(stmt: ast.stmt) -> int:
    decorators = getattr(stmt, "decorator_list", [])
    return min([stmt.lineno, *(d.lineno for d in decorators)])


def _parse_own_source(fn) -> tuple[Source, tuple[S.Stmt, ...]]:
    """`fn`'s own source lines (a notebook cell's), dedented for the parser while spans keep
    the cell's lines and columns, and the cell named as IPython names it (`cells`)."""
    import inspect
    filename = fn.__code__.co_filename
    try:
        lines, first = inspect.getsourcelines(fn)
        cell = cells.cell_name(filename)
    except (OSError, TypeError):
        found = cells.magic_cell_source(fn)
        if found is None:
            raise CompileError([Diagnostic(None, f"cannot find the source of {fn.__name__}",
                                           "define it in a file or a notebook cell")]) from None
        lines, first, cell = found
    first = max(first, 1)
    indent = _common_indent(lines)
    source = Source(filename, "".join(lines), first, cell)
    dedented = "".join(line[indent:] if line.strip() else "\n" for line in lines)
    return source, _parse(source, dedented, first - 1, indent)


def _common_indent(lines: list[str]) -> int:
    widths = [len(line) - len(line.lstrip(" \t")) for line in lines if line.strip()]
    return min(widths, default=0)


def _with_called_functions(fn, body: tuple[S.Stmt, ...]) -> tuple[S.Stmt, ...]:
    """`body` preceded by the plain functions it names (subprograms) from `fn`'s own module,
    the notebook's `__main__` for a cell, found among its globals, transitively.  Functions of
    other modules (pybpf_uring's decorators, libraries) are not the program's."""
    done, todo, extra = {fn.__name__}, [body], []
    while todo:
        for name in sorted(_free_names(todo.pop())):
            obj = fn.__globals__.get(name)
            if name not in done and isinstance(obj, types.FunctionType) and obj.__module__ == fn.__module__:
                done.add(name)
                found = _parse_own_source(obj)[1]
                extra.extend(found)
                todo.append(found)
    return (*extra, *body)


def _free_names(body: tuple[S.Stmt, ...]) -> set[str]:
    """The names statements take from their module: a function's locals (`local_names`) are
    its own, so a local named like a host function does not make that function a subprogram."""
    names = set()
    for stmt in body:
        found = set(_names_in(stmt))
        if isinstance(stmt, S.FunctionDef):
            outside = (stmt.decorators, tuple(p.annotation for p in stmt.params), stmt.returns)
            found = set(_names_in(outside)) | (found - local_names(stmt))
        names |= found
    return names


def local_names(d: S.FunctionDef) -> set[str]:
    """The names a function binds, which Python makes its locals everywhere in it: parameters,
    loop variables and assigned names (the checker takes out the module's annotated globals,
    which a function writes by assigning them)."""
    names = {p.name for p in d.params}
    todo = list(d.body)
    while todo:
        stmt = todo.pop()
        target = getattr(stmt, "target", None)
        if isinstance(stmt, (S.Assign, S.AugAssign, S.For)) and isinstance(target, S.Name):
            names.add(target.id)
        todo += [*getattr(stmt, "body", ()), *getattr(stmt, "orelse", ())]
    return names


def _names_in(node):
    """Every Name's id in a syntax tree (nodes, or tuples of them)."""
    if isinstance(node, tuple):
        for item in node:
            yield from _names_in(item)
    elif isinstance(node, S.Name):
        yield node.id
    elif dataclasses.is_dataclass(node) and not isinstance(node, Span):
        for f in dataclasses.fields(node):
            yield from _names_in(getattr(node, f.name))


# ----- parse tree → syntax tree -------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Tuple:
    """An unparenthesised tuple (`a, b`); the statement holding it says what is wrong."""

    span: Span
    items: tuple


# Rules for Python constructs the language does not have: the rule name → the diagnostic.
REJECTED = {
    "ternary": "conditional expressions (x if c else y) are not available in BPF programs; use an if statement",
    "lambdef": "lambda is not available in BPF programs; define a function at module level",
    "walrus": "assignment expressions (:=) are not available in BPF programs; assign in a statement first",
    "tuple_display": "tuples are not available in BPF programs; use separate variables or a Struct",
    "generator": "generator expressions are not available in BPF programs; use a for loop over range(...)",
    "list_display": "list literals are not available in BPF programs; use a Struct with an array field (b: u32[4])",
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
    "global_stmt": "global is not needed in BPF programs: assigning a module-level global declared with a type (n: u64 = 0) writes it",
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


class _Builder(Transformer):
    """One method per grammar rule (lark calls it with the rule's meta and built children)."""

    def __init__(self, locate: _Locator) -> None:
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
    setattr(_Builder, _rule, _reject_rule(_rule))
_Builder = v_args(meta=True)(_Builder)
