"""The calls a lower layer makes into a higher one: `Program.compile()` and `BpfObject.load()`.

Both are shortcuts on a record into the stage that consumes it.  A decorated function
(`decorators.Program`) is part of the language's surface, which the checker reads (it
recognises `@iouring` by identity), so decorators may not import the compiler that imports the
checker; a `BpfObject` (objfile, the object model) may not import the loader (load.py, kernel
access), which builds on it.  Neither higher stage can install itself on import either: a user
may read an object with `BpfObject.read(path)` and load it without ever importing the loader.
The package's `__init__`, which runs before any of its modules and may import all of them,
installs both here (each imports its stage on first use); the records call what is installed.
"""
from __future__ import annotations

from typing import Any, Callable

compile_program: Callable[..., Any] | None = None
"""`pipeline.compile_function(program, cpu=...)`, what `Program.compile()` calls."""

load_object: Callable[..., Any] | None = None
"""`load.load(obj, **options)`, what `BpfObject.load()` calls."""
