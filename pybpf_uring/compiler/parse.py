"""The frontend: source text → `syntax.Module`, or a `CompileError` that says what is wrong.

lark's LALR parser (grammar in `grammar/pybpf.lark`, built once and pickled to disk) turns text
into a parse tree; `parse_tree.Builder`, a lark Transformer dispatching on rule names, turns that tree into
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
import contextlib
import dataclasses
import functools
import hashlib
import os
import pickle
import re
import sys
import types
import warnings

from lark import Lark, __version__ as lark_version
from lark.exceptions import LarkError, UnexpectedInput, VisitError
from lark.grammar import NonTerminal, Terminal
from lark.indenter import DedentError, PythonIndenter
from lark.parsers.lalr_analysis import Action, Reduce, Shift

from .. import cells
from . import syntax as S
from ..diagnostics import CompileError, Diagnostic, Source, Span
from .depth import check_nesting, on_deep_stack
from .parse_tree import Builder

GRAMMAR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "grammar", "pybpf.lark")



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


# How the parser is built; part of the cache file's name, so a change builds it again.
LARK_OPTIONS = {"parser": "lalr", "lexer": "basic", "propagate_positions": True, "maybe_placeholders": True}


@functools.lru_cache(maxsize=None)
def _lark():
    """The LALR parser, once per process.  Building its tables takes longer than a whole cold
    compile may, and even lark's own cache (`cache=`) re-creates every rule, table entry and
    terminal from a serialized form and then builds the lexer's scanner on the first parse, a
    tenth of a cold compile; so the parser object itself, scanner included, is pickled to the
    user's cache directory when first built and unpickled by later starts, in half that time."""
    with open(GRAMMAR, encoding="utf-8") as f:
        grammar = f.read()
    path = _cache_file(grammar)
    if path is None:  # nowhere to keep it: built for this process only
        return _lean_positions(Lark(grammar, postlex=_Indenter(), **LARK_OPTIONS))
    parser = _read_parser(path)
    if parser is None:
        parser = _build(grammar)
        _write_parser(parser, path)
    return _lean_positions(parser)


def _lean_positions(parser):
    """The parser with lark's position bookkeeping skipped where it changes nothing: a `?rule`
    whose one symbol is kept (`?expr: or_expr`, each level of the operator precedence chain)
    hands its child on as it is, and lark would still recompute that child's positions from
    itself -- a fifth of parsing, since every expression passes through each level.  Those
    rules' callbacks become `_pass_through`.  Should lark's parser be laid out otherwise, it is
    left as built: slower, the same trees."""
    try:
        callbacks = parser.parser.parser.parser.callbacks
        for rule in list(callbacks):
            if (len(rule.expansion) == 1 and rule.options.expand1 and not rule.alias
                    and not rule.options.empty_indices):
                symbol = rule.expansion[0]
                if (isinstance(symbol, NonTerminal) and not symbol.name.startswith("_")
                        or isinstance(symbol, Terminal) and not symbol.filter_out):
                    callbacks[rule] = _pass_through
    except AttributeError:
        pass
    return parser


def _pass_through(children: list):
    return children[0]


def _build(grammar: str):
    """The parser in the form lark's own cache loads it: a parser built from the grammar keeps
    the grammar and its analysis as well, which would make the pickle larger and slower to load
    than lark's own cache.  The detour through lark's cache, in a temporary directory, costs one
    more load on the one start that builds it; without a temporary directory, the parser as
    built is pickled, the same parser."""
    import tempfile
    try:
        with tempfile.TemporaryDirectory(prefix="pybpf_uring-") as folder:
            cache = os.path.join(folder, "lark.cache")
            Lark(grammar, postlex=_Indenter(), cache=cache, **LARK_OPTIONS)
            parser = Lark(grammar, postlex=_Indenter(), cache=cache, **LARK_OPTIONS)
    except OSError:
        parser = Lark(grammar, postlex=_Indenter(), **LARK_OPTIONS)
    parser.parse("\n")  # builds the lexer's scanner (lark does on first use), so it is pickled too
    return parser


def _cache_file(grammar: str) -> str | None:
    """A file in the user's cache directory, one per grammar text, parser options, lark and
    Python version (a pickle holds lark's classes as that version defines them), so two
    checkouts of different versions do not overwrite each other's parsers."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "pybpf_uring")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return None  # an unwritable home: build the parser every time, still correct
    key = f"{grammar}\0{sorted(LARK_OPTIONS.items())}\0{_Indenter.__qualname__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    name = f"parser-{digest}-lark{lark_version}-py{sys.version_info[0]}{sys.version_info[1]}.pickle"
    return os.path.join(folder, name)


class _ParserPickler(pickle.Pickler):
    """Pickles a Lark parser: modules (the lexer keeps `re`) by name, and lark's two parse
    actions, which its parser tells apart by identity (`action is Shift`), as themselves."""

    def persistent_id(self, obj):
        if isinstance(obj, types.ModuleType):
            return ("module", obj.__name__)
        if isinstance(obj, Action):
            return ("action", obj.name)
        return None


class _ParserUnpickler(pickle.Unpickler):
    def persistent_load(self, pid):
        kind, name = pid
        if kind == "module":
            return sys.modules[name]  # only `re`, which lark has imported
        return {"Shift": Shift, "Reduce": Reduce}[name]


def _read_parser(path: str):
    """The cached parser, or None when there is none or it cannot be read back: any failure
    (a file cut short by a crash, one written by another lark release under the same name)
    just means building it again."""
    try:
        with open(path, "rb") as f:
            parser = _ParserUnpickler(f).load()
    except Exception:  # noqa: BLE001 - whatever unpickling raises, the fix is to rebuild
        return None
    return parser if isinstance(parser, Lark) else None


def _write_parser(parser, path: str) -> None:
    """Written to a temporary name and renamed, so a process starting meanwhile reads either
    no file or a whole one.  The file only saves time: when it cannot be written (a full disk,
    a lark release holding something pickle cannot write), every start builds the parser."""
    tmp = f"{path}.{os.getpid()}-{id(parser)}.tmp"
    try:
        with open(tmp, "wb") as f:
            _ParserPickler(f, protocol=pickle.HIGHEST_PROTOCOL).dump(parser)
        os.replace(tmp, path)
    except Exception:  # noqa: BLE001 - OSError or whatever pickling raises: no file, still correct
        with contextlib.suppress(OSError):
            os.remove(tmp)


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
    builder = Builder(locate)
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
    loop variables and assigned names, less those a `global` statement declares (the checker
    also takes out the module's annotated globals, which a function writes by assigning them)."""
    names, declared = {p.name for p in d.params}, set()
    todo = list(d.body)
    while todo:
        stmt = todo.pop()
        target = getattr(stmt, "target", None)
        if isinstance(stmt, (S.Assign, S.AugAssign, S.For)) and isinstance(target, S.Name):
            names.add(target.id)
        elif isinstance(stmt, S.Global):
            declared.update(stmt.names)
        todo += [*getattr(stmt, "body", ()), *getattr(stmt, "orelse", ())]
    return names - (declared - {p.name for p in d.params})


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
