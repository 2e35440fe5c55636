"""pybpf_uring: write io_uring BPF programs in Python.

The public names of SPEC.md.  Heavy stages (lark, llvmlite, pyelftools) are imported only when
a program is compiled, read or loaded, so `import pybpf_uring` stays cheap.
"""
from .types import i8, i16, i32, i64, u8, u16, u32, u64, Struct, ArrayMap, HashMap, sizeof, SkBuff, Const
from .types import ktime_get_ns, get_prandom_u32, get_smp_processor_id, get_current_pid_tgid, skb_load_bytes
from .decorators import iouring, syscall, socket_filter, tracepoint, loop_step

__all__ = [
    "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "Struct", "ArrayMap", "HashMap", "Const",
    "sizeof", "SkBuff", "ktime_get_ns", "get_prandom_u32", "get_smp_processor_id",
    "get_current_pid_tgid", "skb_load_bytes", "iouring", "syscall", "socket_filter", "tracepoint", "loop_step",
    "compile_file", "compile_module", "compile_source", "BpfObject", "Ring",
]


def __getattr__(name):
    if name in ("compile_file", "compile_module", "compile_source"):
        from . import pipeline
        return getattr(pipeline, name)
    if name == "BpfObject":
        from .objfile import BpfObject
        return BpfObject
    if name == "Ring":
        from .ring import Ring
        return Ring
    raise AttributeError(name)
