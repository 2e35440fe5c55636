"""The names users write in annotations and map declarations, as host-side Python objects.

The compiler never executes these: it reads the program's source.  They exist so that a module
of BPF programs imports and runs as ordinary Python (annotations in `Struct` bodies are evaluated)
and so the host can build and read the same data: a `Struct` subclass is a `ctypes.Structure`
with C layout, so `bytes(Pair(a=1))` is exactly what a program sees as its ctx.
"""
from __future__ import annotations

import ctypes
import mmap
import sys

from .limits import ringbuf_size_problem


class IntType:
    """A fixed-width integer type: `u32` in an annotation, `u32(x)` as a wrapping cast."""

    def __init__(self, name: str, bits: int, signed: bool, ctype) -> None:
        self.name, self.bits, self.signed, self.ctype = name, bits, signed, ctype

    def __call__(self, value: int = 0) -> int:
        value &= (1 << self.bits) - 1
        if self.signed and value >> (self.bits - 1):
            value -= 1 << self.bits
        return value

    def __getitem__(self, length: int) -> "ArrayOf":
        return ArrayOf(self, length)

    def __repr__(self) -> str:
        return self.name


class ArrayOf:
    """`T[n]` in an annotation: a fixed-size array."""

    def __init__(self, elem, length: int) -> None:
        self.elem, self.length = elem, length
        self.ctype = ctype_of(elem) * length

    def __getitem__(self, length: int) -> "ArrayOf":
        return ArrayOf(self, length)

    def __repr__(self) -> str:
        return f"{self.elem!r}[{self.length}]"


u8 = IntType("u8", 8, False, ctypes.c_uint8)
u16 = IntType("u16", 16, False, ctypes.c_uint16)
u32 = IntType("u32", 32, False, ctypes.c_uint32)
u64 = IntType("u64", 64, False, ctypes.c_uint64)
i8 = IntType("i8", 8, True, ctypes.c_int8)
i16 = IntType("i16", 16, True, ctypes.c_int16)
i32 = IntType("i32", 32, True, ctypes.c_int32)
i64 = IntType("i64", 64, True, ctypes.c_int64)
INT_TYPES = {t.name: t for t in (u8, u16, u32, u64, i8, i16, i32, i64)}


def ctype_of(t):
    return t if isinstance(t, type) and issubclass(t, ctypes.Structure) else t.ctype


class _StructMeta(type(ctypes.Structure)):
    """Turns the class annotations into ctypes `_fields_` before ctypes lays the class out."""

    def __new__(mcls, name, bases, ns):
        ann = ns.get("__annotations__", {})
        if ann and "_fields_" not in ns:
            # `from __future__ import annotations` leaves strings: evaluate them where they were
            # written (the frame running the class statement; also right for exec'd sources)
            frame = sys._getframe(1)
            names = {**frame.f_locals, **ns}
            resolve = lambda t: eval(t, frame.f_globals, names) if isinstance(t, str) else t  # noqa: E731
            ns["_fields_"] = [(n, ctype_of(resolve(t))) for n, t in ann.items()]
        return super().__new__(mcls, name, bases, ns)

    def __getitem__(cls, length: int) -> ArrayOf:
        return ArrayOf(cls, length)


class Struct(ctypes.Structure, metaclass=_StructMeta):
    """Base of user structs: fields come from the class annotations, laid out as C does.

    Keyword arguments may give an array field as a list (`Pair(b=[1, 2])`, the rest zero) and
    a nested struct field as a dict."""

    def __init__(self, *args, **fields) -> None:
        types = dict(self._fields_)
        for name, value in fields.items():
            t = types.get(name)
            if isinstance(t, type) and issubclass(t, ctypes.Array) and isinstance(value, (list, tuple)):
                fields[name] = t(*value)
            elif isinstance(t, type) and issubclass(t, ctypes.Structure) and isinstance(value, dict):
                fields[name] = t(**value)
        super().__init__(*args, **fields)

    def __repr__(self) -> str:
        def show(v):
            return list(map(show, v)) if isinstance(v, ctypes.Array) else v
        body = ", ".join(f"{n}={show(getattr(self, n))!r}" for n, _ in self._fields_)
        return f"{type(self).__name__}({body})"


def sizeof(t) -> int:
    return ctypes.sizeof(ctype_of(t))


class Const:
    """`NAME: Const[u32] = 0` at module level: a read-only global (`.rodata`), which the host may
    set before the object is loaded (libbpf's `const volatile`)."""

    def __init__(self, t) -> None:
        self.type = t
        self.ctype = ctype_of(t)

    def __class_getitem__(cls, t) -> "Const":
        return cls(t)


class _Map:
    """A map declaration at module level; the loader gives it contents.  `kind` is the name a
    program writes, which the compiler maps to its BPF_MAP_TYPE_* (typesys.MAP_TYPES)."""

    kind = ""

    def __init__(self, key, value, max_entries: int) -> None:
        self.key, self.value, self.max_entries = key, value, max_entries

    def __repr__(self) -> str:
        return f"{self.kind}({self.key!r}, {self.value!r}, {self.max_entries})"


class ArrayMap(_Map):
    """`ArrayMap(value_type, max_entries)`: BPF_MAP_TYPE_ARRAY with u32 keys."""

    kind = "ArrayMap"

    def __init__(self, value, max_entries: int) -> None:
        super().__init__(u32, value, max_entries)

    def __repr__(self) -> str:
        return f"{self.kind}({self.value!r}, {self.max_entries})"


class HashMap(_Map):
    """`HashMap(key_type, value_type, max_entries)`: BPF_MAP_TYPE_HASH."""

    kind = "HashMap"


class PercpuArrayMap(ArrayMap):
    """`PercpuArrayMap(value_type, max_entries)`: BPF_MAP_TYPE_PERCPU_ARRAY.  A program sees the
    value of the CPU it runs on; the host reads a list with one value per possible CPU."""

    kind = "PercpuArrayMap"


class PercpuHashMap(_Map):
    """`PercpuHashMap(key_type, value_type, max_entries)`: BPF_MAP_TYPE_PERCPU_HASH."""

    kind = "PercpuHashMap"


class LruHashMap(_Map):
    """`LruHashMap(key_type, value_type, max_entries)`: BPF_MAP_TYPE_LRU_HASH, a hash map that
    evicts a least recently used key to make room where a HashMap refuses a new one."""

    kind = "LruHashMap"


class LruPercpuHashMap(_Map):
    """`LruPercpuHashMap(key_type, value_type, max_entries)`: BPF_MAP_TYPE_LRU_PERCPU_HASH."""

    kind = "LruPercpuHashMap"


class RingBuf(_Map):
    """`RingBuf(size_bytes)`: BPF_MAP_TYPE_RINGBUF, records a program sends to the host
    (`rb.output(v)`, or `r = rb.reserve(T)` then `rb.submit(r)`).  The size is a power of 2 and
    a multiple of the page size, as the kernel requires."""

    kind = "RingBuf"

    def __init__(self, size_bytes: int) -> None:
        problem = ringbuf_size_problem(size_bytes, mmap.PAGESIZE)
        if problem is not None:
            raise ValueError(problem)
        super().__init__(None, None, size_bytes)

    def __repr__(self) -> str:
        return f"{self.kind}({self.max_entries})"


class SkBuff(Struct):
    """The readable head of the kernel's `struct __sk_buff`: a @socket_filter program's ctx.
    Packet bytes are read with `skb_load_bytes(ctx, offset, buf)`."""

    len: u32
    pkt_type: u32
    mark: u32
    queue_mapping: u32
    protocol: u32
    vlan_present: u32
    vlan_tci: u32
    vlan_proto: u32
    priority: u32
    ingress_ifindex: u32
    ifindex: u32
    tc_index: u32
    cb: u32[5]
    hash: u32


def program_only(name: str):
    """What a name a program calls but Python cannot run is bound to (a BPF helper, a kfunc, a
    compiler intrinsic): the compiler reads the call from the source and never runs this, and the
    module must still import as Python, where a call says where it runs instead of doing nothing."""
    def helper(*args):
        raise RuntimeError(f"{name}() runs only inside a BPF program, not in Python")
    helper.__name__ = name
    return helper


ktime_get_ns = program_only("ktime_get_ns")
get_prandom_u32 = program_only("get_prandom_u32")
get_smp_processor_id = program_only("get_smp_processor_id")
get_current_pid_tgid = program_only("get_current_pid_tgid")
skb_load_bytes = program_only("skb_load_bytes")
get_current_comm = program_only("get_current_comm")
probe_read_kernel = program_only("probe_read_kernel")
probe_read_user = program_only("probe_read_user")
probe_read_kernel_str = program_only("probe_read_kernel_str")
probe_read_user_str = program_only("probe_read_user_str")
log2 = program_only("log2")   # a compiler intrinsic: the log2 histogram bucket of a value
linear = program_only("linear")   # a compiler intrinsic: the linear histogram bucket of a value
