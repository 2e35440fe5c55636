"""Deep programs: a stack for what CPython compiles, and a located error beyond it.

The stages walk the syntax tree recursively (a chain `1 + 1 + ... + 1` is a BinOp nested as
deep as it is long; an `elif` chain is an If in the previous one's else), a few Python frames
per level.  CPython itself compiles nesting up to about 3000 levels, far past the default
recursion limit of 1000 frames, so the stages run on a thread of their own with a stack and
a recursion limit sized for MAX_NESTING levels.  A program nested deeper is told where, as
CPython would tell it ("too complex"), instead of meeting a RecursionError.
"""
from __future__ import annotations

import functools
import sys
import threading
from dataclasses import fields, is_dataclass

from ..diagnostics import CompileError, Diagnostic
from ..limits import MAX_NESTING
from . import syntax as S

FRAMES_PER_LEVEL = 30          # generous: the deepest stage uses under ten frames per level
STACK_BYTES = 512 << 20        # a worker thread's stack: reserved, touched only as deep as used
_local = threading.local()
_limit_lock = threading.Lock()
_deep_calls = 0
_saved_limit = 0


def on_deep_stack(stage):
    """Run `stage` on a worker thread with a stack and recursion limit for MAX_NESTING levels
    (directly when already on one).  The recursion limit is the interpreter's, so it is raised
    while any stage runs and put back after the last one."""
    @functools.wraps(stage)
    def run(*args, **kwargs):
        if getattr(_local, "deep", False):
            return stage(*args, **kwargs)
        result: list = []

        def work():
            _local.deep = True
            try:
                result.append((True, stage(*args, **kwargs)))
            except BaseException as error:  # noqa: BLE001 - re-raised on the caller's thread
                result.append((False, error))

        _raise_limit()
        try:
            size = threading.stack_size()
            try:
                threading.stack_size(STACK_BYTES)
                worker = threading.Thread(target=work, name=f"pybpf_uring {stage.__name__}")
            finally:
                threading.stack_size(size)
            worker.start()
            worker.join()
        finally:
            _restore_limit()
        ok, value = result[0]
        if ok:
            return value
        if isinstance(value, RecursionError):
            raise CompileError([Diagnostic(None, "the program nests too deeply to compile",
                                           NESTING_HINT)]) from None
        raise value.with_traceback(value.__traceback__)
    return run


def _raise_limit() -> None:
    global _deep_calls, _saved_limit
    with _limit_lock:
        if _deep_calls == 0:
            _saved_limit = sys.getrecursionlimit()
            sys.setrecursionlimit(max(_saved_limit, MAX_NESTING * FRAMES_PER_LEVEL))
        _deep_calls += 1


def _restore_limit() -> None:
    global _deep_calls
    with _limit_lock:
        _deep_calls -= 1
        if _deep_calls == 0:
            sys.setrecursionlimit(_saved_limit)


NESTING_HINT = ("split a long expression with intermediate variables, and a long elif chain "
                "into several if statements or functions")


def check_nesting(module: S.Module) -> None:
    """A located error at the first node nested deeper than MAX_NESTING, found without
    recursion (the stages after this one recurse, safely, below the limit)."""
    todo = [(stmt, 1) for stmt in reversed(module.body)]
    while todo:
        node, depth = todo.pop()
        if depth > MAX_NESTING:
            raise CompileError([Diagnostic(node.span, f"this nests more than {MAX_NESTING} levels "
                                           "deep, more than pybpf_uring (and CPython) compile",
                                           NESTING_HINT)])
        todo.extend((child, depth + 1) for child in reversed(_children(node)))


def _children(node) -> list:
    out = []
    for name in _FIELDS.get(type(node)) or _fields(type(node)):
        value = getattr(node, name)
        if isinstance(value, tuple):
            out.extend(v for v in value if is_dataclass(v) and hasattr(v, "span"))
        elif is_dataclass(value) and hasattr(value, "span"):
            out.append(value)
    return out


_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls) -> tuple[str, ...]:
    _FIELDS[cls] = tuple(f.name for f in fields(cls) if f.name != "span")
    return _FIELDS[cls]
