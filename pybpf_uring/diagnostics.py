"""Source spans and user-facing errors.

Every stage reports problems in the user's program as `Diagnostic`s that point at a `Span`;
they render like a C compiler's (`path:line:col: error: message`, the source line, a caret
under the span, and a hint of what is allowed instead); text from a notebook cell names the cell
as IPython's own tracebacks do (`Cell In[3], line 5, col 12: error: message`).  `CompileError`
(errors.py, with the rest of the hierarchy) carries all the diagnostics a stage collected, so a
user sees every error at once.  Anything else raised from a stage is a bug in pybpf_uring, never
in the user's program.

An error with diagnostics (a CompileError, or a LoadError such as the verifier's) reaches the
user through a public entry point marked `@user_facing`, which drops pybpf_uring's own frames
from its traceback: what went wrong is in the diagnostic, and a dozen frames of
parse/check/lower would only hide it.  PYBPF_URING_DEBUG=1 keeps them, for debugging
pybpf_uring itself.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from .errors import CompileError, DiagnosedError, debugging
from .limits import ERROR_LIMIT, LINE_WIDTH


@dataclass(frozen=True)
class Source:
    """The text a program was compiled from and where it came from."""

    path: str
    text: str
    first_line: int = 1  # line number of text's first line in `path` (a function inside a file)
    cell: str = ""       # how IPython names the notebook cell `path` is ("Cell In[3]"), "" for a file

    def line(self, lineno: int) -> str:
        lines = self.text.splitlines()
        i = lineno - self.first_line
        return lines[i] if 0 <= i < len(lines) else ""

    def where(self, line: int, col: int) -> str:
        """A position as the user finds it: `path:line:col` in a file (what editors and the
        CLI's users parse), `Cell In[3], line 5, col 12` in a notebook, whose cells have no
        path a user could open."""
        return f"{self.cell}, line {line}, col {col}" if self.cell else f"{self.path}:{line}:{col}"


@dataclass(frozen=True)
class Span:
    """1-based line and column of the first character, and of the character after the last."""

    source: Source
    line: int
    col: int
    end_line: int
    end_col: int

    def __repr__(self) -> str:  # keeps AST dumps readable
        return f"{self.line}:{self.col}"


ELLIPSIS = "..."


@dataclass(frozen=True)
class Diagnostic:
    span: Span | None
    message: str
    hint: str = ""
    severity: str = "error"
    path: str = ""  # a whole file's problem (it cannot be read): `path: error: message`

    def render(self) -> str:
        if self.span is None:
            out = f"{self.path}: " if self.path else ""
            out += f"{self.severity}: {self.message}"
            return out + (f"\n  note: {self.hint}" if self.hint else "")
        s = self.span
        text = s.source.line(s.line)
        width = (s.end_col - s.col) if s.end_line == s.line and s.end_col > s.col else 1
        width = max(1, min(width, len(text) - s.col + 1)) if text else 1
        text, col, width = excerpt(text, s.col, width)
        caret = " " * (col - 1) + "^" + "~" * (width - 1)
        out = f"{s.source.where(s.line, s.col)}: {self.severity}: {self.message}\n{text}\n{caret}"
        return out + (f"\n  note: {self.hint}" if self.hint else "")


def excerpt(text: str, col: int, width: int) -> tuple[str, int, int]:
    """At most LINE_WIDTH characters of `text` around the span at `col` (1-based) of `width`,
    with an ellipsis where the line goes on; the span's column and width within the excerpt."""
    if len(text) <= LINE_WIDTH:
        return text, col, width
    room = LINE_WIDTH - 2 * len(ELLIPSIS)
    width = min(width, room // 2)
    start = max(0, min(col - 1 - (room - width) // 2, len(text) - room))
    head = ELLIPSIS if start > 0 else ""
    tail = ELLIPSIS if start + room < len(text) else ""
    return head + text[start:start + room] + tail, col - start + len(head), width


class Collector:
    """Collects diagnostics during a stage; `raise_if_any` ends the stage at its boundary.
    Each diagnostic is kept once (a rule may meet the same node twice), and what is raised or
    shown stops at ERROR_LIMIT of each severity, as clang's error limit does: past a few
    dozen, further errors are mostly the first ones' consequences, and bad input (a
    generated or mangled file) must not print without bound."""

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self.seen: set[Diagnostic] = set()

    def error(self, span: Span | None, message: str, hint: str = "") -> None:
        self.add(self.diagnostics, Diagnostic(span, message, hint))

    def warn(self, span: Span | None, message: str, hint: str = "") -> None:
        self.add(self.warnings, Diagnostic(span, message, hint, "warning"))

    def add(self, into: list[Diagnostic], d: Diagnostic) -> None:
        if d not in self.seen:
            self.seen.add(d)
            into.append(d)

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise CompileError(limited(self.diagnostics))

    def shown_warnings(self) -> list[Diagnostic]:
        return limited(self.warnings)


def limited(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """The first ERROR_LIMIT diagnostics in source order, and a last one saying how many more
    there were."""
    ordered = sorted(diagnostics, key=lambda d: (d.span.line, d.span.col) if d.span else (0, 0))
    if len(ordered) <= ERROR_LIMIT:
        return ordered
    severity = ordered[0].severity
    return ordered[:ERROR_LIMIT] + [Diagnostic(
        None, f"too many {severity}s emitted, stopping now",
        f"{len(ordered) - ERROR_LIMIT} more not shown; fix these first", severity)]


def user_facing(function):
    """Mark a public entry point (`Program.compile`, `compile_file`, `BpfObject.load`, …): an
    error with diagnostics (a CompileError, a LoadError such as the verifier's) leaving it
    carries no traceback from inside pybpf_uring, so Python's report of an uncaught one is the
    user's own frames, this one line, and the diagnostic."""
    @functools.wraps(function)
    def entry(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except DiagnosedError as error:
            if debugging():
                raise
            raise error.with_traceback(None)
    return entry
