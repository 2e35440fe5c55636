"""pybpf_uring: write io_uring BPF programs in Python.

The public names (docs/language.md), the exceptions a user catches, and `__version__`.  Heavy stages
(lark, llvmlite, pyelftools) are imported only when a program is compiled, read or loaded, so
`import pybpf_uring` stays cheap: the names below that live in those stages' modules are
looked up on first use.
"""
from .types import i8, i16, i32, i64, u8, u16, u32, u64, Struct, ArrayMap, HashMap, sizeof, SkBuff, Const
from .types import PercpuArrayMap, PercpuHashMap, LruHashMap, LruPercpuHashMap, RingBuf
from .types import ktime_get_ns, get_prandom_u32, get_smp_processor_id, get_current_pid_tgid, skb_load_bytes
from .decorators import iouring, syscall, socket_filter, tracepoint, loop_step
from .decorators import raw_tracepoint, tp_btf, fentry, fexit, kprobe, kretprobe
from .types import get_current_comm, probe_read_kernel, probe_read_user, probe_read_kernel_str, probe_read_user_str
from .types import log2, linear
from . import hooks

# name → the module defining it, imported when the name is first used
_LAZY = {
    "compile_file": "compiler.pipeline", "compile_module": "compiler.pipeline", "compile_source": "compiler.pipeline",
    "BpfObject": "bpf.objfile", "Ring": "runtime.ring",
    # the errors, one hierarchy (errors.py): PybpfUringError catches them all
    "PybpfUringError": "errors",
    "CompileError": "errors",                                     # the program's source: path:line:col
    "LoadError": "errors", "VerifierError": "bpf.load", "UnsupportedProgramError": "bpf.load",
    "ObjectError": "errors",                                      # a file that is no BPF object we read
    "RingError": "errors", "ProgramFault": "runtime.ring", "DeadlockError": "runtime.ring",   # running programs
    "MainlineUnsupportedError": "mainline", "UnsuitableRingError": "mainline", "LoopError": "mainline",
    "FrozenGlobalError": "bpf.globals_view",                          # a .rodata global written after load
    "TraceReader": "bpf.trace", "trace_lines": "bpf.trace",               # kernel print() output (trace_pipe)
}

__all__ = [
    "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "Struct", "ArrayMap", "HashMap", "Const",
    "PercpuArrayMap", "PercpuHashMap", "LruHashMap", "LruPercpuHashMap", "RingBuf",
    "sizeof", "SkBuff", "ktime_get_ns", "get_prandom_u32", "get_smp_processor_id",
    "get_current_pid_tgid", "skb_load_bytes", "iouring", "syscall", "socket_filter", "tracepoint", "loop_step",
    "raw_tracepoint", "tp_btf", "fentry", "fexit", "kprobe", "kretprobe",
    "get_current_comm", "probe_read_kernel", "probe_read_user", "probe_read_kernel_str", "probe_read_user_str",
    "log2", "linear",
    *_LAZY, "__version__",
]


def _compile_program(program, cpu: str = "v3", btf: str | None = None):
    """What `Program.compile()` calls: the pipeline, imported on the first compile (hooks.py)."""
    from .compiler.pipeline import compile_function
    return compile_function(program, cpu=cpu, btf=btf)


def _load_object(obj, **options):
    """What `BpfObject.load()` calls: the loader, imported on the first load (hooks.py)."""
    from .bpf.load import load
    return load(obj, **options)


hooks.compile_program, hooks.load_object = _compile_program, _load_object


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
