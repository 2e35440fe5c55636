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
    def compile(self, cpu: str = "v3"):
        """Compile this program (with the maps, structs and subprograms it uses) to a BpfObject:
        the pipeline's `compile_function`, which the package installs (hooks.py says why this
        module does not import it)."""
        return hooks.compile_program(self, cpu=cpu)

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


def tracepoint(name: str):
    """`@tracepoint("io_uring/io_uring_complete")`: a tracepoint program."""
    def wrap(fn) -> Program:
        return Program(fn, "tracepoint", f"tracepoint/{name}")
    return wrap


def loop_step(fn) -> Program:
    """A mainline `io_uring_bpf_ops.loop_step` program (docs/abi.md §B)."""
    return Program(fn, "loop_step", f"struct_ops.s/{fn.__name__}")
