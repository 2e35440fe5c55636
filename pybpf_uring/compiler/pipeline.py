"""The pipeline: parse → check → lower → emit → read.  Each stage is one call; this module only
chains them, and is what `compile_file`, `compile_module`, `Program.compile()` and the CLI use.
The `compile_*` functions are public: their CompileErrors reach the user without the stages'
frames (`diagnostics.user_facing`)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..diagnostics import CompileError, Diagnostic, user_facing
from .depth import on_deep_stack


@dataclass(frozen=True)
class Compilation:
    """Every stage's output, so the CLI can dump any of them (`--dump ast|ir|ir-opt|asm`)."""

    tree: object      # syntax.Module
    ir: str           # LLVM IR as lowered
    ir_opt: str       # after the -O2 pipeline
    elf: bytes        # the object file
    warnings: list    # Diagnostics that did not stop compilation
    read_back: object = None  # the BpfObject, when emit read it back to measure the stack

    @cached_property
    def object(self):
        """The object read back (pyelftools is imported only when something looks inside),
        once per compile: emit's, when it has read it."""
        if self.read_back is not None:
            return self.read_back
        from ..bpf.objfile import BpfObject
        return BpfObject.read(self.elf)


@on_deep_stack
def compile_tree(module, cpu: str = "v3", only: set[str] | None = None,
                 btf: str | None = None) -> Compilation:
    """`btf`: a BTF file of the kernel tracing programs are for (their ctx layouts); None reads
    this kernel's."""
    from .check import check
    from .emit import emit
    from .lower import lower
    checked = check(module, only, btf)
    lowered = lower(checked, cpu)
    emitted = emit(lowered)
    return Compilation(module, lowered.ir, emitted.ir_opt, emitted.elf, checked.warnings, emitted.object)


@user_facing
def compile_source(text: str, path: str = "<string>", cpu: str = "v3", only: set[str] | None = None,
                   btf: str | None = None):
    """Source text of a BPF module → BpfObject."""
    from .parse import parse_source
    return compile_tree(parse_source(text, path), cpu, only, btf).object


@user_facing
def compile_file(path, cpu: str = "v3", btf: str | None = None):
    """All programs and maps of a BPF module file → one BpfObject."""
    from .parse import parse_source
    with open(path, "rb") as f:
        return compile_tree(parse_source(source_text(f.read(), str(path)), str(path)), cpu,
                            btf=btf).object


def source_text(data: bytes, path: str) -> str:
    """A source file's bytes as text; bytes that are not UTF-8 (Python's source encoding) are a
    CompileError naming the file and the first bad byte, as the CLI prints it."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CompileError([Diagnostic(None, f"cannot read: not UTF-8 text (byte 0x{data[exc.start]:02x} "
                                             f"at offset {exc.start})", path=path)]) from None


@user_facing
def compile_module(module, cpu: str = "v3"):
    """An imported Python module of BPF programs → one BpfObject."""
    return compile_file(module.__file__, cpu)


def compile_function(program, cpu: str = "v3", btf: str | None = None):
    """One decorated function, with what it uses from its module (or notebook cell)."""
    from .parse import parse_function
    return compile_tree(parse_function(program), cpu, only={program.name}, btf=btf).object
