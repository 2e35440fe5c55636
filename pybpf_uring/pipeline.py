"""The pipeline: parse → check → lower → emit → read.  Each stage is one call; this module only
chains them, and is what `compile_file`, `compile_module`, `Program.compile()` and the CLI use."""
from __future__ import annotations

from .diagnostics import CompileError


def compile_source(text: str, path: str = "<string>", cpu: str = "v3", only: set[str] | None = None,
                   first_line: int = 1):
    from .parse import parse_source
    return compile_tree(parse_source(text, path, first_line), cpu, only)


def compile_tree(module, cpu: str = "v3", only: set[str] | None = None):
    from .check import check
    from .emit import emit
    from .lower import lower
    from .objfile import BpfObject
    emitted = emit(lower(check(module, only), cpu))
    return BpfObject.read(emitted.elf)


def compile_file(path, cpu: str = "v3"):
    """All programs and maps of a BPF module file → one BpfObject."""
    with open(path, encoding="utf-8") as f:
        return compile_source(f.read(), str(path), cpu)


def compile_module(module, cpu: str = "v3"):
    """An imported Python module of BPF programs → one BpfObject."""
    return compile_file(module.__file__, cpu)


def compile_function(program, cpu: str = "v3"):
    """One decorated function, with what it uses from its module (or notebook cell)."""
    from .parse import parse_function
    return compile_tree(parse_function(program), cpu, only={program.name})


__all__ = ["compile_source", "compile_file", "compile_module", "compile_function", "CompileError"]
