"""The errors pybpf_uring raises on purpose, as one hierarchy.

Every error that reports a problem in the user's program, object, kernel or ring derives from
`PybpfUringError`, so one `except PybpfUringError` catches them all, and the CLI maps an error to
its output by these bases (cli.report), never by names.  Anything else leaving pybpf_uring is a
bug in pybpf_uring.

    PybpfUringError
    ├── DiagnosedError             carries `diagnostics`, rendered as a C compiler's errors
    │   ├── CompileError           a mistake in the program's source (path:line:col and a caret)
    │   └── LoadError              the loader or the kernel will not take the object
    │       ├── VerifierError           (load) the verifier's rejection, located at the source line
    │       ├── UnsupportedProgramError (load) a program kind this kernel cannot load
    │       │   └── MainlineUnsupportedError (mainline) no io_uring_bpf_ops in this kernel
    │       ├── UnsuitableRingError     (mainline) a ring the loop cannot be attached to
    │       └── FrozenGlobalError       (globals_view) a write to .rodata after the load
    ├── ObjectError                a file that is not a BPF object this reader understands
    └── RingError                  running programs: the RFC ring, its engine, mainline loops
        ├── ProgramFault                (ring_protocol) a program's fault, failing its request
        ├── DeadlockError               (ring) a wait nothing could end; also a RuntimeError
        ├── EngineError                 (engine.instance) what the engine cannot run
        ├── InvalidProgram              (engine.interpreter) refused before running; a ValueError
        ├── BpfFault, BudgetExceeded    (engine.interpreter) a fault at run time; a RuntimeError
        ├── MemoryFault                 (engine.memory) an access the program may not make
        ├── JitUnavailable              (engine.jit) the JIT cannot run it; a RuntimeError
        └── LoopError                   (mainline) io_uring_enter failed in a loop; an OSError

A VerifierError is a LoadError, not a CompileError: the source compiled, the kernel refused it.
It still points at the source line the verifier stopped at, because every DiagnosedError renders
its diagnostics the same way (and `diagnostics.user_facing` drops pybpf_uring's frames from any
of them).  The classes that were a builtin exception before this hierarchy existed keep that
base too, so a caller's `except OSError` (LoopError) or `except RuntimeError` still works.

This module is the lowest layer: it imports nothing from the package, so every module, from
the byte decoders to the CLI, can raise and catch these without a dependency pointing up.
Each concrete class is defined once, in the module that raises it (named above), on these bases.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .diagnostics import Diagnostic

__all__ = ["PybpfUringError", "DiagnosedError", "CompileError", "LoadError", "ObjectError",
           "RingError", "debugging"]


def debugging() -> bool:
    """PYBPF_URING_DEBUG=1: show pybpf_uring's own frames, for debugging pybpf_uring itself."""
    return bool(os.environ.get("PYBPF_URING_DEBUG"))


class PybpfUringError(Exception):
    """Any error pybpf_uring reports about the user's program, object, kernel or ring."""


@dataclass
class DiagnosedError(PybpfUringError):
    """An error that carries located diagnostics: its text is theirs, rendered (`path:line:col:
    error: …`, the source line, a caret, a note), all of them, so a user sees every problem at
    once.  In IPython the same lines replace the traceback."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)

    @property
    def _render_traceback_(self):
        """What IPython shows for this error instead of a traceback (it looks this attribute
        up and calls it): the diagnostics' lines, as the CLI prints them.  Absent under
        PYBPF_URING_DEBUG=1, so IPython shows the full traceback."""
        if debugging():
            raise AttributeError("_render_traceback_")
        return lambda: str(self).splitlines()


class CompileError(DiagnosedError):
    """One or more errors in the user's program source; exit status 1 in the CLI."""


class LoadError(DiagnosedError):
    """The object compiled (or was read) but cannot be loaded as asked: the kernel refused it,
    lacks what it needs, or the object does not fit the request (an unknown map or global)."""


class ObjectError(PybpfUringError):
    """The file is not a BPF object this reader understands; the message says what is wrong."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.message = message
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class RingError(PybpfUringError):
    """Running programs went wrong: on the RFC ring (a fault, a deadlock), in the userspace
    engine (a program it refuses or that faulted), or in a mainline loop."""
