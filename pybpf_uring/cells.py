"""Notebook cells: how IPython names a cell, and where a function defined in one has its source.

IPython compiles a cell under a file name of its own (`<ipython-input-3-…>`, or a temp file in
ipykernel), puts the text in `linecache` under that name, and maps the name to the execution
count, which its tracebacks show as `Cell In[3], line 5`.  Diagnostics use the same words.

Cell magics that compile their body themselves skip that cache: `%%time` compiles it as
`<timed exec>`, a name every such cell shares and linecache never hears of, so
`inspect.getsource` cannot find a function defined there.  The body is still in the shell's
input history (each cell-magic cell is stored as the `run_cell_magic(name, line, body)` call
IPython turned it into); `magic_cell_source` finds the body that, compiled as IPython compiles
it, makes exactly the function's code object.

IPython is never imported here: if it is not already loaded, there is no shell and no cell.
"""
from __future__ import annotations

import ast
import inspect
import sys
import types


def shell():
    """The running IPython shell, or None."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def cell_name(filename: str) -> str:
    """`Cell In[3]` for the file name IPython compiled a cell under, as its tracebacks name it;
    "" for anything else, or an IPython without the mapping (before 8.0)."""
    sh = shell()
    name = getattr(getattr(sh, "compile", None), "format_code_name", None)
    label = name(filename) if name is not None else None
    return " ".join(label) if label else ""


def magic_cell_source(fn: types.FunctionType) -> tuple[list[str], int, str] | None:
    """The source lines of `fn` (defined in the body of a cell magic), the number of its first
    line within the body, and the cell's name; None if no cell in the history made it.

    Lines are numbered within the body, as the magic compiled it and as IPython's own traceback
    of an error there numbers them.  The newest cell wins, as when a cell is run again."""
    sh = shell()
    history = getattr(getattr(sh, "history_manager", None), "input_hist_parsed", None)
    if not history:
        return None
    code = fn.__code__
    for number in range(len(history) - 1, 0, -1):
        body = _magic_body(history[number])
        if body is None or code.co_name not in body:
            continue
        text = sh.transform_cell(body)
        if _makes(text, code, sh.compile.flags):
            lines = text.splitlines(keepends=True)
            first = code.co_firstlineno
            return inspect.getblock(lines[first - 1:]), first, f"Cell In[{number}]"
    return None


def _magic_body(parsed: str) -> str | None:
    """The body of a cell-magic cell from its history entry (the call IPython rewrote the
    cell into, `get_ipython().run_cell_magic('time', '', body)`); None for any other cell."""
    if "run_cell_magic" not in parsed:
        return None
    try:
        tree = ast.parse(parsed)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    call = tree.body[0].value
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr == "run_cell_magic" and len(call.args) == 3):
        return None
    body = call.args[2]
    return body.value if isinstance(body, ast.Constant) and isinstance(body.value, str) else None


def _makes(text: str, code: types.CodeType, flags: int) -> bool:
    """Whether compiling `text` under `code`'s file name makes `code` (equal bytecode,
    constants, names and line table) somewhere among its nested code objects."""
    try:
        top = compile(text, code.co_filename, "exec", flags, dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    todo = [top]
    while todo:
        c = todo.pop()
        if c == code:
            return True
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return False
