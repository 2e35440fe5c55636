"""The compiler's types: what the checker infers and the lowering turns into LLVM types.

Kept apart from `types.py` (the host-side objects users import): these are plain frozen
dataclasses, compared by value, with sizes and alignments computed as C does on BPF.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..uapi import (BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH,
                    BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_RINGBUF)


class Type:
    size: int = 0
    align: int = 1

    def __str__(self) -> str:
        return self.name  # type: ignore[attr-defined]


@dataclass(frozen=True)
class IntT(Type):
    """A fixed-width integer (u8..u64, i8..i64): arithmetic wraps at `bits`, as BPF's does."""

    bits: int
    signed: bool

    @property
    def name(self) -> str:
        return f"{'i' if self.signed else 'u'}{self.bits}"

    @property
    def size(self) -> int:  # type: ignore[override]
        return self.bits // 8

    @property
    def align(self) -> int:  # type: ignore[override]
        return self.bits // 8

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - (1 if self.signed else 0))) - 1

    def wrap(self, value: int) -> int:
        value &= (1 << self.bits) - 1
        return value - (1 << self.bits) if self.signed and value >> (self.bits - 1) else value


@dataclass(frozen=True)
class BoolT(Type):
    """A comparison's or `not`'s result, one byte as C's _Bool."""

    name = "bool"
    size = 1
    align = 1


@dataclass(frozen=True)
class NoneT(Type):
    """What a function without a value returns (`-> None`), and the `None` a nullable
    reference is tested against."""

    name = "None"


@dataclass(frozen=True)
class StrT(Type):
    """A string literal: only for print() formats and tracepoint names."""

    name = "str"


TYPE_SIZE_WHY = "BTF, which describes the program's types to the kernel, gives offsets in bits in 32 bits"


@dataclass(frozen=True)
class ArrayT(Type):
    """`elem[length]`: C's array, its elements contiguous at the element's alignment."""

    elem: Type
    length: int

    @property
    def name(self) -> str:
        return f"{self.elem}[{self.length}]"

    @property
    def size(self) -> int:  # type: ignore[override]
        return self.elem.size * self.length

    @property
    def align(self) -> int:  # type: ignore[override]
        return self.elem.align


@dataclass(frozen=True)
class FieldT:
    """A struct member at its byte offset; `line` is its declaration's, for BTF and errors."""

    name: str
    type: Type
    offset: int
    line: int = 0


@dataclass(frozen=True, eq=False)
class StructT(Type):
    """Compared by identity: two structs with the same fields are still different types."""

    name: str
    fields: tuple[FieldT, ...]
    size: int  # type: ignore[assignment]
    align: int  # type: ignore[assignment]
    line: int = 0
    btf_name: str = ""  # the name in BTF when the kernel knows the struct by another name

    def field(self, name: str) -> FieldT | None:
        return next((f for f in self.fields if f.name == name), None)

    @staticmethod
    def layout(name: str, members: list[tuple[str, Type, int]], line: int = 0, btf_name: str = "") -> "StructT":
        """C layout: each member at its natural alignment, the size rounded to the largest one."""
        offset, align, fields = 0, 1, []
        for fname, ftype, fline in members:
            offset = -(-offset // ftype.align) * ftype.align
            fields.append(FieldT(fname, ftype, offset, fline))
            offset += ftype.size
            align = max(align, ftype.align)
        return StructT(name, tuple(fields), -(-offset // align) * align, align, line, btf_name or name)


@dataclass(frozen=True)
class PtrT(Type):
    """A reference: the ctx, a struct a subprogram receives, or a map value (`nullable`)."""

    target: Type
    nullable: bool = False
    size = 8
    align = 8

    @property
    def name(self) -> str:
        return f"ref[{self.target}]" + (" | None" if self.nullable else "")


# The map kinds a program declares (types.py's host classes) → their BPF_MAP_TYPE_*.
MAP_TYPES = {"ArrayMap": BPF_MAP_TYPE_ARRAY, "HashMap": BPF_MAP_TYPE_HASH,
             "PercpuArrayMap": BPF_MAP_TYPE_PERCPU_ARRAY, "PercpuHashMap": BPF_MAP_TYPE_PERCPU_HASH,
             "LruHashMap": BPF_MAP_TYPE_LRU_HASH, "LruPercpuHashMap": BPF_MAP_TYPE_LRU_PERCPU_HASH,
             "RingBuf": BPF_MAP_TYPE_RINGBUF}
ARRAY_KINDS = frozenset({"ArrayMap", "PercpuArrayMap"})   # u32 keys, every slot always there
RINGBUF = "RingBuf"                                     # records, not keys


@dataclass(frozen=True, eq=False)
class MapT(Type):
    """A map declared at module level.  Compared by identity: two maps of one shape are
    still two maps."""

    kind: str  # a key of MAP_TYPES
    key: Type  # NONE for a ring buffer, which has neither key nor value
    value: Type
    max_entries: int  # a ring buffer's size in bytes

    @property
    def name(self) -> str:
        return self.kind if self.kind == RINGBUF else f"{self.kind}[{self.key}, {self.value}]"

    @property
    def map_type(self) -> int:
        return MAP_TYPES[self.kind]

    @property
    def keyed(self) -> bool:
        """Whether elements are reached by key (`m[k]`, `m.lookup(k)`): all but a ring buffer."""
        return self.kind != RINGBUF

    @property
    def hashed(self) -> bool:
        """Whether keys come and go (`del m[k]`, `m.setdefault(k, v)`): the hash kinds."""
        return self.keyed and self.kind not in ARRAY_KINDS


U8, U16, U32, U64 = (IntT(b, False) for b in (8, 16, 32, 64))
I8, I16, I32, I64 = (IntT(b, True) for b in (8, 16, 32, 64))
INTS = {t.name: t for t in (U8, U16, U32, U64, I8, I16, I32, I64)}
BOOL, NONE, STR = BoolT(), NoneT(), StrT()


def common_int(a: IntT, b: IntT) -> IntT:
    """C's usual arithmetic conversions without promotion to int: the wider type wins, and at
    equal width the unsigned one."""
    if a.bits != b.bits:
        return a if a.bits > b.bits else b
    return a if not a.signed else b
