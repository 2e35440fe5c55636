"""The BPF helper registry: every helper a program may call, written once.

A helper is a kernel function a program calls by number (`call 165`).  What the project knows
about each one -- its id, the name a Python program calls it by, the kernel's name, its machine
arguments with their widths and pointer kinds, what it returns, which program kinds may call it,
the engine function that serves it, the native symbol the native ring serves it with, and the
errors it documents -- lives in the table below and nowhere else.  The consumers derive from it:

- the compiler's helper table (`builtins.HELPERS`: a Python argument per `Param`, its type from
  the width here), which the checker and the lowering read;
- the engine's helper tables (`engine/instance.py` binds each id to its implementation by
  `engine` name and narrows arguments to the widths here; `engine/jit_lift.NATIVE_HELPERS` and
  the native ring take the ids and symbols of the helpers with a `native` symbol);
- the names in engine faults (`label(165)` is "emit_cqe (165)");
- the helper tables of docs/abi.md, docs/runtime.md and docs/language.md, which
  tests/test_helper_registry.py checks against this table.

This module sits in the object-model layer and imports only the standard library, so the
compiler, the disassembler and the engine can all import it without importing each other.
"""
from __future__ import annotations

import errno as _errno
from dataclasses import dataclass

__all__ = ["Arg", "Helper", "HELPERS", "BY_NAME", "CTX", "INT", "MEM", "SIZE", "MAP", "KEY",
           "VALUE", "RECORD", "UPTR", "ALL", "IOURING", "SOCKET", "TRACING", "label", "native_symbols"]

# The kinds of machine argument (and of return value) a helper has.
CTX = "ctx"        # the program's ctx pointer
INT = "int"        # an integer of `bits` bits
MEM = "mem"        # a pointer into program memory; the next argument is its SIZE
SIZE = "size"      # the byte size of the MEM argument before it
MAP = "map"        # a map (the ld_imm64 of a map reference)
KEY = "key"        # a pointer to a key of the map argument's key size
VALUE = "value"    # a pointer to a value of the map's value size (returned: the value or NULL)
RECORD = "record"  # a ring buffer record bpf_ringbuf_reserve returned (or NULL)
UPTR = "uptr"      # a user-space address of this process (a 64-bit integer to the program)

ALL: frozenset[str] = frozenset()            # callable from every program kind
IOURING = frozenset({"iouring"})
SOCKET = frozenset({"socket_filter"})
# The kernel's tracing program kinds (bpf_tracing_func_proto serves them these helpers).
TRACING = frozenset({"tracepoint", "raw_tracepoint", "tp_btf", "fentry", "fexit", "kprobe", "kretprobe"})


@dataclass(frozen=True)
class Arg:
    """One machine argument (r1-r5), or the return value (r0).  `bits`/`signed` are the C
    type's width: the engine narrows the register to it, the compiler converts to it.  `struct`
    names the struct a MEM argument must point to (None: any local)."""

    name: str
    kind: str = INT
    bits: int = 64
    signed: bool = False
    struct: str | None = None

    @property
    def mask(self) -> int:
        return (1 << self.bits) - 1


@dataclass(frozen=True)
class Helper:
    """One helper.  `name` is what programs and messages call it (the Python name when `dsl`);
    `kernel` the C name in the kernel (the RFC's `iouring_*` for 164-166); `engine` the name of
    the engine's implementation (engine/instance.py), None where the engine has none; `native`
    the symbol of the native ring's version (engine/native_ring_ir.py), None where calls go
    through Python; `errors` the errno names the helper documents, returned negated."""

    id: int
    name: str
    kernel: str
    args: tuple[Arg, ...]
    ret: Arg
    programs: frozenset[str] = ALL
    dsl: bool = False
    engine: str | None = None
    native: str | None = None
    errors: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name} ({self.id})"

    @property
    def errnos(self) -> tuple[int, ...]:
        return tuple(getattr(_errno, e) for e in self.errors)

    @property
    def masks(self) -> tuple[int, ...]:
        """The five argument registers' masks: each argument's width, all 64 bits beyond."""
        return tuple(a.mask for a in self.args) + (M64,) * (5 - len(self.args))


M64 = (1 << 64) - 1
_I64, _U64, _U32 = Arg("ret", bits=64, signed=True), Arg("ret"), Arg("ret", bits=32)
_SIZE32 = Arg("size", SIZE, 32)

HELPERS: dict[int, Helper] = {h.id: h for h in (
    Helper(1, "map_lookup_elem", "bpf_map_lookup_elem", (Arg("map", MAP), Arg("key", KEY)),
           Arg("ret", VALUE), engine="map_lookup_elem", native="nh_map_lookup"),
    Helper(2, "map_update_elem", "bpf_map_update_elem",
           (Arg("map", MAP), Arg("key", KEY), Arg("value", VALUE), Arg("flags")), _I64,
           engine="map_update_elem", native="nh_map_update",
           errors=("EEXIST", "ENOENT", "E2BIG", "EINVAL")),
    Helper(3, "map_delete_elem", "bpf_map_delete_elem", (Arg("map", MAP), Arg("key", KEY)), _I64,
           engine="map_delete_elem", errors=("ENOENT", "EINVAL")),
    Helper(5, "ktime_get_ns", "bpf_ktime_get_ns", (), _U64, dsl=True,
           engine="ktime_get_ns", native="nh_ktime_get_ns"),
    Helper(6, "trace_printk", "bpf_trace_printk",
           (Arg("fmt", MEM), _SIZE32, Arg("a"), Arg("b"), Arg("c")), _I64,
           engine="trace_printk", errors=("EINVAL",)),
    Helper(7, "get_prandom_u32", "bpf_get_prandom_u32", (), _U32, dsl=True,
           engine="get_prandom_u32"),
    Helper(8, "get_smp_processor_id", "bpf_get_smp_processor_id", (), _U32, dsl=True,
           engine="get_smp_processor_id"),
    Helper(14, "get_current_pid_tgid", "bpf_get_current_pid_tgid", (), _U64, dsl=True,
           engine="get_current_pid_tgid"),
    Helper(16, "get_current_comm", "bpf_get_current_comm", (Arg("buf", MEM), _SIZE32), _I64,
           TRACING, dsl=True),
    Helper(26, "skb_load_bytes", "bpf_skb_load_bytes",
           (Arg("skb", CTX), Arg("offset", bits=32), Arg("to", MEM), _SIZE32), _I64, SOCKET,
           dsl=True, errors=("EFAULT",)),
    # The Python call takes (dst, unsafe_ptr): dst's size follows it, as the kernel's order has it.
    *(Helper(id_, name, f"bpf_{name}", (Arg("dst", MEM), _SIZE32, Arg("unsafe_ptr")), _I64, TRACING,
             dsl=True, errors=("EFAULT",))
      for id_, name in ((112, "probe_read_user"), (113, "probe_read_kernel"),
                        (114, "probe_read_user_str"), (115, "probe_read_kernel_str"))),
    Helper(130, "ringbuf_output", "bpf_ringbuf_output",
           (Arg("ringbuf", MAP), Arg("data", MEM), Arg("size", SIZE), Arg("flags")), _I64,
           engine="ringbuf_output", errors=("EINVAL", "EAGAIN")),
    Helper(131, "ringbuf_reserve", "bpf_ringbuf_reserve",
           (Arg("ringbuf", MAP), Arg("size"), Arg("flags")), Arg("ret", RECORD),
           engine="ringbuf_reserve"),
    Helper(132, "ringbuf_submit", "bpf_ringbuf_submit", (Arg("data", RECORD), Arg("flags")),
           _I64, engine="ringbuf_submit"),
    Helper(133, "ringbuf_discard", "bpf_ringbuf_discard", (Arg("data", RECORD), Arg("flags")),
           _I64, engine="ringbuf_discard"),
    Helper(134, "ringbuf_query", "bpf_ringbuf_query", (Arg("ringbuf", MAP), Arg("flags")), _U64,
           engine="ringbuf_query"),
    # The Python call takes (dst, uptr): dst's size follows it, as the kernel's order has it.
    Helper(148, "copy_from_user", "bpf_copy_from_user",
           (Arg("dst", MEM), _SIZE32, Arg("uptr", UPTR)), _I64, IOURING, dsl=True,
           engine="copy_from_user", native="nh_copy_from_user", errors=("EFAULT",)),
    Helper(164, "queue_sqe", "iouring_queue_sqe",
           (Arg("ctx", CTX), Arg("sqe", MEM, struct="Sqe"), Arg("len", SIZE, 32)), _I64, IOURING,
           dsl=True, engine="queue_sqe", native="nh_queue_sqe", errors=("EINVAL",)),
    Helper(165, "emit_cqe", "iouring_emit_cqe",
           (Arg("ctx", CTX), Arg("cq", bits=32), Arg("user_data"), Arg("res", bits=32, signed=True),
            Arg("flags", bits=32)), _I64, IOURING,
           dsl=True, engine="emit_cqe", native="nh_emit_cqe", errors=("EINVAL", "ENOMEM")),
    Helper(166, "reap_cqe", "iouring_reap_cqe",
           (Arg("ctx", CTX), Arg("cq", bits=32), Arg("out", MEM, struct="Cqe"), Arg("len", SIZE, 32)),
           _I64, IOURING, dsl=True, engine="reap_cqe", native="nh_reap_cqe",
           errors=("ENOENT", "EINVAL")),
    Helper(167, "copy_to_user", "bpf_copy_to_user", (Arg("uptr", UPTR), Arg("src", MEM), _SIZE32),
           _I64, IOURING, dsl=True, engine="copy_to_user", native="nh_copy_to_user",
           errors=("EFAULT",)),
)}

BY_NAME: dict[str, Helper] = {h.name: h for h in HELPERS.values()}


def label(helper_id: int) -> str:
    """How messages name a helper: "emit_cqe (165)", or "helper 99" for an id not in the table."""
    h = HELPERS.get(helper_id)
    return h.label if h is not None else f"helper {helper_id}"


def native_symbols() -> dict[int, str]:
    """Helper id -> the native ring's symbol, for the helpers it serves natively."""
    return {h.id: h.native for h in HELPERS.values() if h.native is not None}
