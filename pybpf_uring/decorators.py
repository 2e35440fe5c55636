"""Decorators that turn a Python function into a BPF program object.

The function is never called in Python: the decorator records what kind of program it is and
where its source is; `.compile()` hands that to the compiler pipeline.
"""
from __future__ import annotations

from . import hooks
from .diagnostics import user_facing


class Program:
    """A decorated function: a BPF program of one kind, compiled on demand."""

    def __init__(self, fn, kind: str, section: str) -> None:
        self.fn, self.kind, self.section = fn, kind, section
        self.name = fn.__name__
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    @user_facing
    def compile(self, cpu: str = "v3", btf: str | None = None):
        """Compile this program (with the maps, structs and subprograms it uses) to a BpfObject:
        the pipeline's `compile_function`, which the package installs (hooks.py says why this
        module does not import it).  `btf`: the BTF file of the kernel a tracing program is for
        (its ctx layout is read from it); None reads this kernel's."""
        return hooks.compile_program(self, cpu=cpu, btf=btf)

    def __repr__(self) -> str:
        return f"<{self.kind} program {self.name!r} section {self.section!r}>"

    def _repr_html_(self) -> str:
        return self.compile()._repr_html_()


def iouring(fn) -> Program:
    """An RFC io_uring program (docs/abi.md §A); sleepable, so it may queue SQEs and copy user memory."""
    return Program(fn, "iouring", f"iouring.s/{fn.__name__}")


def syscall(fn) -> Program:
    """A BPF_PROG_TYPE_SYSCALL program: run in the kernel with test_run on a ctx you pass."""
    return Program(fn, "syscall", "syscall")


def socket_filter(fn) -> Program:
    """A BPF_PROG_TYPE_SOCKET_FILTER program over a __sk_buff."""
    return Program(fn, "socket_filter", "socket")


def tracepoint(category: str, event: str | None = None):
    """`@tracepoint("io_uring", "io_uring_complete")` (or `("io_uring/io_uring_complete")`): a
    tracepoint program.  Its ctx, left unannotated, is the kernel's record of the event
    (docs/tracing.md)."""
    name = category if event is None else f"{category}/{event}"

    def wrap(fn) -> Program:
        return Program(fn, "tracepoint", f"tracepoint/{name}")
    return wrap


def raw_tracepoint(event: str):
    """`@raw_tracepoint("io_uring_complete")`: a raw tracepoint program; its ctx holds the
    tracepoint's arguments as u64 `arg0`, `arg1`, ... (pointers: read through probe_read_kernel)."""
    def wrap(fn) -> Program:
        return Program(fn, "raw_tracepoint", f"raw_tp/{event}")
    return wrap


def tp_btf(event: str):
    """`@tp_btf("io_uring_complete")`: a raw tracepoint the kernel types from its BTF
    (BPF_PROG_TYPE_TRACING); its ctx holds the arguments as u64 `arg0`, `arg1`, ..."""
    def wrap(fn) -> Program:
        return Program(fn, "tp_btf", f"tp_btf/{event}")
    return wrap


def fentry(function: str):
    """`@fentry("io_submit_sqes")`: runs at the entry of a kernel function through a BPF
    trampoline; its ctx holds the function's arguments, named as its BTF names them."""
    def wrap(fn) -> Program:
        return Program(fn, "fentry", f"fentry/{function}")
    return wrap


def fexit(function: str):
    """`@fexit("io_submit_sqes")`: runs when a kernel function returns; its ctx holds the
    arguments and `ret`, the return value."""
    def wrap(fn) -> Program:
        return Program(fn, "fexit", f"fexit/{function}")
    return wrap


def kprobe(function: str):
    """`@kprobe("io_submit_sqes")`: runs at the entry of a kernel function; its ctx is the
    kernel's `struct pt_regs` (the arguments in `ctx.di`, `ctx.si`, ... on x86-64)."""
    def wrap(fn) -> Program:
        return Program(fn, "kprobe", f"kprobe/{function}")
    return wrap


def kretprobe(function: str):
    """`@kretprobe("io_submit_sqes")`: runs when a kernel function returns; `ctx.ax` (x86-64) is
    its return value."""
    def wrap(fn) -> Program:
        return Program(fn, "kretprobe", f"kretprobe/{function}")
    return wrap


def loop_step(fn) -> Program:
    """A mainline `io_uring_bpf_ops.loop_step` program (docs/abi.md §B)."""
    return Program(fn, "loop_step", f"struct_ops.s/{fn.__name__}")
