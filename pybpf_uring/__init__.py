"""pybpf_uring: write io_uring BPF programs in Python.

The public names (docs/language.md), the exceptions a user catches, and `__version__`.  Heavy stages
(lark, llvmlite, pyelftools) are imported only when a program is compiled, read or loaded, so
`import pybpf_uring` stays cheap: the names below that live in those stages' modules are
looked up on first use.
"""
from .types import i8, i16, i32, i64, u8, u16, u32, u64, Struct, ArrayMap, HashMap, sizeof, SkBuff, Const
from .types import ktime_get_ns, get_prandom_u32, get_smp_processor_id, get_current_pid_tgid, skb_load_bytes
from .decorators import iouring, syscall, socket_filter, tracepoint, loop_step

# name → the module defining it, imported when the name is first used
_LAZY = {
    "compile_file": "pipeline", "compile_module": "pipeline", "compile_source": "pipeline",
    "BpfObject": "objfile", "Ring": "ring",
    # a mistake in the program: path:line:col, source line and caret (VerifierError adds the
    # verifier's log; UnsupportedProgramError says where a kind runs instead)
    "CompileError": "diagnostics", "VerifierError": "load", "UnsupportedProgramError": "load",
    "ObjectError": "objfile",                                     # a file that is no BPF object we read
    "ProgramFault": "ring", "DeadlockError": "ring",              # the ring runtime
    "MainlineUnsupportedError": "mainline", "UnsuitableRingError": "mainline", "LoopError": "mainline",
    "FrozenGlobalError": "globals_view",                          # a .rodata global written after load
    "TraceReader": "trace", "trace_lines": "trace",               # kernel print() output (trace_pipe)
}

__all__ = [
    "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "Struct", "ArrayMap", "HashMap", "Const",
    "sizeof", "SkBuff", "ktime_get_ns", "get_prandom_u32", "get_smp_processor_id",
    "get_current_pid_tgid", "skb_load_bytes", "iouring", "syscall", "socket_filter", "tracepoint", "loop_step",
    *_LAZY, "__version__",
]


def __getattr__(name):
    if name == "__version__":
        globals()[name] = version = _version()
        return version
    if name in _LAZY:
        from importlib import import_module
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


def _version() -> str:
    """The installed distribution's version; from a source tree that was never installed, the
    version pyproject.toml declares (the one place it is written)."""
    from importlib import metadata
    try:
        return metadata.version(__name__)
    except metadata.PackageNotFoundError:
        import os
        import re
        pyproject = os.path.join(os.path.dirname(os.path.dirname(__file__)), "pyproject.toml")
        try:
            with open(pyproject, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return "0+unknown"
        table = re.search(r"^\[project\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
        found = table and re.search(r'^version\s*=\s*"([^"]+)"', table.group(1), re.M)
        return found.group(1) if found else "0+unknown"
