"""Callables a program may use besides its own subprograms: BPF helpers and compiler intrinsics.

A helper is called by ID.  Its parameters say how each Python argument becomes machine
arguments: `REF_SIZE` passes the address of a local struct or array *and* its size, which is
how the RFC helpers take out-parameters (`reap_cqe(ctx, 1, cqe)` → `(ctx, 1, &cqe, 16)`).
The helpers themselves are defined once, in `helpers.py`; `HELPERS` here is the compiler's view
of those a program calls by name, its types derived from the registry's widths.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import helpers as registry
from .typesys import I32, IntT, U32, U64, Type
from ..uapi import (IORING_OP_CLOSE, IORING_OP_NOP, IORING_OP_OPENAT, IORING_OP_READ, IORING_OP_RECV,
                   IORING_OP_SEND, IORING_OP_TIMEOUT, IORING_OP_WRITE)

CTX = "ctx"            # the program's ctx argument
INT = "int"            # any integer, converted to the parameter's width
REF_SIZE = "ref+size"  # address of a local, then its size
TYPE_SIZE = "type"     # a type, passed as its size; the call returns a reference to that type


@dataclass(frozen=True)
class Param:
    """How one Python argument of a helper call becomes machine arguments."""

    kind: str                 # CTX, INT, REF_SIZE or TYPE_SIZE
    type: Type = U64          # for INT: the parameter's width
    struct: str | None = None  # for REF_SIZE: the struct it must be (None: any local)


@dataclass(frozen=True)
class Helper:
    """A helper as the checker and lowering see it: called by `id` with `params`."""

    name: str
    id: int
    params: tuple[Param, ...]
    ret: Type
    programs: frozenset[str] = frozenset()  # program kinds that may call it; empty: all


def _param(arg: registry.Arg) -> Param | None:
    """A registry argument as the Python call takes it: a MEM argument and the SIZE after it
    are one REF_SIZE parameter (the SIZE gives none); a user address is an integer."""
    if arg.kind == registry.CTX:
        return Param(CTX)
    if arg.kind in (registry.INT, registry.UPTR):
        return Param(INT, IntT(arg.bits, arg.signed))
    if arg.kind == registry.MEM:
        return Param(REF_SIZE, struct=arg.struct)
    if arg.kind == registry.SIZE:
        return None
    raise ValueError(f"helper argument {arg.name!r} of kind {arg.kind!r} has no Python form")


def _helper(h: registry.Helper) -> Helper:
    params = tuple(p for p in map(_param, h.args) if p is not None)
    return Helper(h.name, h.id, params, IntT(h.ret.bits, h.ret.signed), h.programs)


HELPERS = {h.name: _helper(h) for h in registry.HELPERS.values() if h.dsl}

LOOP = frozenset({"loop_step"})


@dataclass(frozen=True)
class Kfunc:
    """A kernel function (kfunc) a program calls by name; the loader resolves it against the
    running kernel's BTF.  `ret` None: the call returns a reference to the type passed as its
    TYPE_SIZE argument, or None."""

    name: str
    symbol: str
    params: tuple[Param, ...]
    arg_names: tuple[str, ...]  # the kernel prototype's, for BTF
    ret: Type | None
    programs: frozenset[str] = frozenset()


KFUNCS = {k.name: k for k in (
    Kfunc("submit_sqes", "bpf_io_uring_submit_sqes", (Param(CTX), Param(INT, U32)), ("ctx", "nr"), I32, LOOP),
    Kfunc("get_region", "bpf_io_uring_get_region", (Param(CTX), Param(INT, U32), Param(TYPE_SIZE)),
          ("ctx", "region_id", "rdwr_buf_size"), None, LOOP),
)}

# Inline operations on a mainline CQ view (see iou.py): name → program kinds that may use them.
CQ_INTRINSICS = {"cq_reap": LOOP, "cq_wait": LOOP}

# Map operations and print() are lowered to these helper IDs.
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, TRACE_PRINTK = (
    registry.BY_NAME[n].id for n in ("map_lookup_elem", "map_update_elem", "map_delete_elem",
                                     "trace_printk"))
# A ring buffer's methods (rb.output, rb.reserve, rb.submit, rb.discard).
RINGBUF_OUTPUT, RINGBUF_RESERVE, RINGBUF_SUBMIT, RINGBUF_DISCARD = (
    registry.BY_NAME[n].id for n in ("ringbuf_output", "ringbuf_reserve", "ringbuf_submit", "ringbuf_discard"))

# prep_* are inlined as field stores, mirroring uring.py's host versions:
# name → (fields set to constants, fields set from the arguments after the sqe).
PREPS = {
    "prep_nop": ({"opcode": IORING_OP_NOP}, ()),
    "prep_read": ({"opcode": IORING_OP_READ}, ("fd", "addr", "len", "off")),
    "prep_write": ({"opcode": IORING_OP_WRITE}, ("fd", "addr", "len", "off")),
    "prep_timeout": ({"opcode": IORING_OP_TIMEOUT, "fd": -1, "len": 1}, ("addr", "off", "rw_flags")),
    # rw_flags is the union slot at offset 28: open_flags for openat, msg_flags for send/recv
    "prep_openat": ({"opcode": IORING_OP_OPENAT}, ("fd", "addr", "rw_flags", "len")),
    "prep_close": ({"opcode": IORING_OP_CLOSE}, ("fd",)),
    "prep_send": ({"opcode": IORING_OP_SEND}, ("fd", "addr", "len", "rw_flags")),
    "prep_recv": ({"opcode": IORING_OP_RECV}, ("fd", "addr", "len", "rw_flags")),
}

# Python's builtins a program calls without importing them, as Python does, unless the module or
# the function binds the name: what each takes.  Each computes its value from its arguments
# alone, so a call on constants is a constant, and `len` of a fixed-size array always is.
PYTHON_BUILTINS = {"min": "two or more integers", "max": "two or more integers",
                   "abs": "one integer", "len": "one fixed-size array"}


def fold_builtin(name: str, values: list[int]) -> int | None:
    """A Python builtin of constants, as Python computes it; None where the call is wrong (the
    checker says why at the call)."""
    if name in ("min", "max") and len(values) >= 2:
        return min(values) if name == "min" else max(values)
    if name == "abs" and len(values) == 1:
        return abs(values[0])
    return None
