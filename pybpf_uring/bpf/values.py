"""Host values in and out of BPF memory: ints, bytes and ctypes objects packed to a map's key or
value size, bytes decoded back, per-CPU values as lists (one entry per CPU), and ctypes types
built from BTF so that a `struct pair` value reads with its field names and signedness.

One home for these conventions, shared by every place the host touches BPF memory: kernel maps
(`load.KernelMap`), engine maps (`engine.maps`) and globals (`globals_view`).  It depends on
nothing but ctypes and the BTF decoder, so each of those can use it.
"""
from __future__ import annotations

import ctypes
import re
from typing import Any

from . import btf as b

__all__ = ["pack", "unpack", "per_cpu_slot", "pack_per_cpu", "unpack_per_cpu", "ctype_from_btf", "INT_CTYPES",
           "fields"]


def pack(value: Any, size: int, what: str) -> bytes:
    """An int (little-endian, wrapped to `size` bytes if negative), bytes, or ctypes object."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        if not -(1 << (8 * size - 1)) <= value < (1 << (8 * size)):
            raise OverflowError(f"{what} {value} does not fit in {size} bytes")
        return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    if isinstance(value, (ctypes.Structure, ctypes.Union, ctypes.Array, ctypes._SimpleCData)):
        raw = bytes(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    else:
        raise TypeError(f"{what} must be an int, bytes or a ctypes object, not {type(value).__name__}")
    if len(raw) != size:
        raise ValueError(f"{what} is {len(raw)} bytes but the map's {what.split()[-1]} size is {size}")
    return raw


def unpack(raw: bytes, type_: Any) -> Any:
    """Bytes from the kernel as `type_`: a ctypes type, a pybpf_uring int type (u32, i64, …),
    `int`, `bytes`, or None (int for 1/2/4/8-byte values, else bytes)."""
    if type_ is None:
        type_ = int if len(raw) in (1, 2, 4, 8) else bytes
    if type_ is bytes:
        return raw
    if type_ is int:
        return int.from_bytes(raw, "little")
    if hasattr(type_, "bits") and hasattr(type_, "signed"):  # types.IntType
        return int.from_bytes(raw, "little", signed=type_.signed)
    if isinstance(type_, type) and issubclass(type_, (ctypes.Structure, ctypes.Union, ctypes.Array,
                                                      ctypes._SimpleCData)):
        obj = type_.from_buffer_copy(raw)
        return obj.value if isinstance(obj, ctypes._SimpleCData) else obj
    raise TypeError(f"cannot decode map data as {type_!r}")


def per_cpu_slot(value_size: int) -> int:
    """Bytes per CPU in a per-CPU map's host buffer: the kernel lays values out 8-byte aligned
    (bpf_map_value_size: round_up(value_size, 8) * num_possible_cpus())."""
    return (value_size + 7) & ~7


def pack_per_cpu(value: Any, cpus: int, value_size: int, slot: int, name: str, cpu_kind: str) -> bytes:
    """A per-CPU value of map `name` for `cpus` CPUs (`cpu_kind`: "possible CPU", "engine CPU"):
    a list of one value per CPU, or one value every CPU gets; each packed to value_size and
    padded to `slot` bytes."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * cpus
    if len(values) != cpus:
        raise ValueError(f"per-CPU map {name!r} takes one value per {cpu_kind} ({cpus}), got {len(values)}")
    return b"".join(pack(v, value_size, f"map {name!r} value").ljust(slot, b"\0") for v in values)


def unpack_per_cpu(raw: bytes, value_size: int, slot: int, type_: Any) -> list:
    """A per-CPU value as a list with one entry per CPU (the buffer holds one slot per CPU)."""
    return [unpack(raw[i:i + value_size], type_) for i in range(0, len(raw), slot)]


INT_CTYPES = {(1, False): ctypes.c_uint8, (2, False): ctypes.c_uint16, (4, False): ctypes.c_uint32,
              (8, False): ctypes.c_uint64, (1, True): ctypes.c_int8, (2, True): ctypes.c_int16,
              (4, True): ctypes.c_int32, (8, True): ctypes.c_int64}


def ctype_from_btf(btf: Any, type_id: int, _depth: int = 0) -> Any:
    """The ctypes type with the layout BTF describes (`struct pair` → a Structure with fields
    a, b), so map values read back with their field names and signedness.  None where the type
    has no faithful ctypes twin (bitfields, unknown kinds): the map then reads bytes."""
    if not type_id or _depth > 32:
        return None
    t = btf[btf.resolve(type_id)]
    if isinstance(t, b.Int):
        return INT_CTYPES.get((t.size, t.signed))
    if isinstance(t, b.Enum):
        return INT_CTYPES.get((t.size, bool(getattr(t, "signed", False))))
    if isinstance(t, b.Ptr):
        return ctypes.c_uint64
    if isinstance(t, b.Float):
        return {4: ctypes.c_float, 8: ctypes.c_double}.get(t.size)
    if isinstance(t, b.Array):
        elem = ctype_from_btf(btf, t.type, _depth + 1)
        return elem * t.nelems if elem is not None else None
    if isinstance(t, b.Struct):
        return _struct_from_btf(btf, t, _depth)
    return None


def _struct_from_btf(btf: Any, t: Any, depth: int) -> Any:
    fields, at = [], 0
    for i, m in enumerate(t.members):
        member = ctype_from_btf(btf, m.type, depth + 1)
        if m.bitfield_size or m.bit_offset % 8 or member is None or not m.name:
            return None
        if t.kind == "struct" and m.offset < at:  # overlapping members: not a plain struct
            return None
        if t.kind == "struct" and m.offset > at:
            fields.append((f"_pad{i}", ctypes.c_uint8 * (m.offset - at)))
        fields.append((m.name, member))
        at = max(at, m.offset + ctypes.sizeof(member)) if t.kind == "struct" else at
    base = ctypes.Union if t.kind == "union" else ctypes.Structure
    size = sum(ctypes.sizeof(f) for _, f in fields) if t.kind == "struct" else \
        max((ctypes.sizeof(f) for _, f in fields), default=0)
    if size < t.size:
        fields.append(("_tail", ctypes.c_uint8 * (t.size - size)))
    # explicit padding and _pack_ 1 reproduce the BTF offsets exactly, whatever the alignment
    cls = type(t.name or "anon", (base,), {"_pack_": 1, "_fields_": fields, "__repr__": _struct_repr})
    return cls if ctypes.sizeof(cls) == t.size else None


_FILLER = re.compile(r"_pad\d+|_tail")  # the padding fields _struct_from_btf adds


def fields(struct_type: Any) -> list[tuple[str, int, Any]]:
    """The members of a ctypes Structure or Union type as (name, byte offset, ctypes type), the
    padding `ctype_from_btf` added left out: what a user of the struct can name."""
    return [(name, getattr(struct_type, name).offset, t) for name, t, *_ in struct_type._fields_
            if not _FILLER.fullmatch(name)]


def _struct_repr(self) -> str:
    def show(v):
        return [show(x) for x in v] if isinstance(v, ctypes.Array) else v
    body = ", ".join(f"{n}={show(getattr(self, n))!r}" for n, _, _ in fields(type(self)))
    return f"{type(self).__name__}({body})"
