"""BTF and BTF.ext: the type information and the instruction → source map of a BPF object.

`.BTF` is a header, a type section and a string section.  Types are numbered from 1 in the
order they appear (0 is `void`); each is a 12-byte record (name offset, info word with kind,
vlen and kind_flag, then a size or a type id) followed by kind-specific data.  We decode every
kind the kernel knows (include/uapi/linux/btf.h) into frozen dataclasses, because two consumers
need them: `objfile` decodes libbpf's BTF-defined maps (a struct in `.maps` whose members encode
type/sizes as `int (*name)[N]` and key/value as pointers to the real types), and the loader maps
a verifier error at instruction N back to a source line through `.BTF.ext`.

`.BTF.ext` holds, per ELF section, func_info records (instruction → FUNC type) and line_info
records (instruction → file, line, column, and the text of that line as the compiler saw it).
In the object file their instruction offsets are in *bytes* within the section; we convert them
to slot indexes, as libbpf does before handing them to the kernel.

`.BTF.ext` may also carry CO-RE relocations (`CoreRelo`), read so a loader can name them.

The running kernel's BTF (/sys/kernel/btf/vmlinux, ~150k types) is read by `kernel_btf()`, once
per process, into a `LazyBtf`: it indexes where each record starts and decodes a type only when
asked for it, with the same per-kind readers as `parse_btf`, because a loader looks up a handful
of names (kfuncs, the struct_ops types, a few enums) and decoding all of them costs 0.4 s here
and seconds in the emulated guest the mainline tests run in.

Writing goes the other way: `encode_btf` re-emits types byte-identically to clang when given
the original string table, and `Btf.for_kernel` applies libbpf's fix-ups (DATASEC sizes and
offsets, extern variables and kfuncs) so BPF_BTF_LOAD accepts an object's BTF; func_info and
line_info records are encoded for BPF_PROG_LOAD against its string offsets.

Malformed input raises `BtfError` saying where it stopped: the reader turns it into an
ObjectError, never a struct.error.
"""
from __future__ import annotations

import bisect
import functools
import gc
import struct
import sys
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

__all__ = [
    "Btf", "LazyBtf", "BtfExt", "BtfError", "LineInfo", "FuncInfo", "parse_btf", "parse_btf_ext",
    "kernel_btf", "VMLINUX_BTF",
    "Void", "Int", "Ptr", "Array", "Struct", "Union", "Member", "Enum", "Enum64", "EnumValue",
    "Fwd", "Typedef", "Volatile", "Const", "Restrict", "Func", "FuncProto", "Param", "Var",
    "Datasec", "VarSecinfo", "Float", "DeclTag", "TypeTag", "CoreRelo", "encode_btf", "encode_func_info",
    "encode_line_info", "FUNC_INFO_SIZE", "LINE_INFO_SIZE",
]

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")          # magic version flags hdr_len type_off/len str_off/len
_TYPE = struct.Struct("<III")                 # name_off info size_or_type
_EXT_HEADER = struct.Struct("<HBBIIIII")      # magic version flags hdr_len func/line off/len
_U32 = struct.Struct("<I")
M32 = (1 << 32) - 1

INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4
LINKAGE_NAMES = {0: "static", 1: "global", 2: "extern"}


class BtfError(ValueError):
    """The BTF or BTF.ext bytes do not follow the format."""


# --- types ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Void:
    name: str = ""
    kind = "void"


@dataclass(frozen=True)
class Int:
    name: str
    size: int
    bits: int
    offset: int = 0
    encoding: int = 0
    kind = "int"

    @property
    def signed(self) -> bool:
        return bool(self.encoding & INT_SIGNED)


@dataclass(frozen=True)
class Ptr:
    type: int
    name: str = ""
    kind = "ptr"


@dataclass(frozen=True)
class Array:
    type: int
    index_type: int
    nelems: int
    name: str = ""
    kind = "array"


@dataclass(frozen=True)
class Member:
    name: str
    type: int
    bit_offset: int
    bitfield_size: int = 0

    @property
    def offset(self) -> int:
        """Byte offset (members that are not bitfields start on a byte)."""
        return self.bit_offset // 8


@dataclass(frozen=True)
class Struct:
    name: str
    size: int
    members: tuple[Member, ...]
    kind = "struct"

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)


@dataclass(frozen=True)
class Union(Struct):
    kind = "union"


@dataclass(frozen=True)
class EnumValue:
    name: str
    value: int


@dataclass(frozen=True)
class Enum:
    name: str
    size: int
    values: tuple[EnumValue, ...]
    signed: bool = False
    kind = "enum"


@dataclass(frozen=True)
class Enum64(Enum):
    kind = "enum64"


@dataclass(frozen=True)
class Fwd:
    name: str
    union: bool = False
    kind = "fwd"


@dataclass(frozen=True)
class Typedef:
    name: str
    type: int
    kind = "typedef"


@dataclass(frozen=True)
class Volatile:
    type: int
    name: str = ""
    kind = "volatile"


@dataclass(frozen=True)
class Const:
    type: int
    name: str = ""
    kind = "const"


@dataclass(frozen=True)
class Restrict:
    type: int
    name: str = ""
    kind = "restrict"


@dataclass(frozen=True)
class Func:
    name: str
    type: int           # its FuncProto
    linkage: int = 0    # 0 static, 1 global, 2 extern
    kind = "func"


@dataclass(frozen=True)
class Param:
    name: str
    type: int


@dataclass(frozen=True)
class FuncProto:
    return_type: int
    params: tuple[Param, ...]
    name: str = ""
    kind = "func_proto"


@dataclass(frozen=True)
class Var:
    name: str
    type: int
    linkage: int = 0
    kind = "var"


@dataclass(frozen=True)
class VarSecinfo:
    type: int           # a Var (or Func for .ksyms)
    offset: int
    size: int


@dataclass(frozen=True)
class Datasec:
    name: str
    size: int
    vars: tuple[VarSecinfo, ...]
    kind = "datasec"


@dataclass(frozen=True)
class Float:
    name: str
    size: int
    kind = "float"


@dataclass(frozen=True)
class DeclTag:
    name: str
    type: int
    component_idx: int  # -1: the tag is on the type itself, else a member/param index
    kind = "decl_tag"


@dataclass(frozen=True)
class TypeTag:
    name: str
    type: int
    kind = "type_tag"


_MODIFIERS = (Typedef, Volatile, Const, Restrict, TypeTag)
_SIMPLE_REF = frozenset({Ptr, Typedef, Volatile, Const, Restrict, TypeTag, Func, Var, DeclTag})
# The references the kernel resolves as one chain (a pointer's, a typedef's or qualifier's, an
# array's element, a variable's type), refusing a loop in them ("Loop detected"); a struct's
# members and a function prototype's parameters start chains of their own, so a pointer back to
# the struct or the prototype is no loop.
_CHAINED = (Ptr, Array, Var) + _MODIFIERS
TYPE_NAME_DEPTH = 16   # how much of a type `type_name` spells before `...`


# --- .BTF -------------------------------------------------------------------------------------
class _TypeQueries:
    """What callers ask of a type table, whether decoded whole (`Btf`) or on demand (`LazyBtf`):
    each defines `self[id]`, `len(self)` and `find_all(name, kind)`, and the rest derives from
    those, so the two cannot answer a question differently."""

    def find(self, name: str, kind: str | None = None) -> int | None:
        """The id of the first type called `name` (of `kind`, e.g. "struct"), or None."""
        return next(iter(self.find_all(name, kind)), None)

    def resolve(self, type_id: int) -> int:
        """Skip typedefs and qualifiers: the id of the type underneath."""
        seen = 0
        while isinstance(self[type_id], _MODIFIERS):
            type_id = self[type_id].type
            seen += 1
            if seen > len(self):
                raise BtfError(f"type {type_id} is part of a cycle of typedefs/qualifiers")
        return type_id

    def size_of(self, type_id: int) -> int:
        """Bytes a value of the type occupies (as sizeof in C).  A loop, not a recursion: the
        kernel takes arrays of arrays nested as deep as the type table is long."""
        count, steps = 1, 0
        while True:
            t = self[self.resolve(type_id)]
            if isinstance(t, Ptr):
                return 8 * count
            if isinstance(t, (Int, Struct, Enum, Float, Datasec)):
                return t.size * count
            if not isinstance(t, (Array, Var)):
                raise BtfError(f"type {type_id} ({t.kind}) has no size")
            count *= getattr(t, "nelems", 1)
            type_id = t.type
            steps += 1
            if steps > len(self):
                raise BtfError(f"type {type_id} is part of a loop of arrays/variables")

    def type_name(self, type_id: int, depth: int = TYPE_NAME_DEPTH) -> str:
        """A C spelling of the type, for messages and the HTML view (`struct pair`, `__u32 *`).
        Past `depth` nested types the rest is spelt `...`: the kernel takes a function
        prototype whose parameter points back at it, and chains as long as the type table."""
        t = self[type_id]
        if depth <= 0:
            return "..."
        if isinstance(t, Void):
            return "void"
        inner = functools.partial(self.type_name, depth=depth - 1)
        if isinstance(t, Ptr):
            return inner(t.type) + " *"
        if isinstance(t, Array):
            return f"{inner(t.type)}[{t.nelems}]"
        if isinstance(t, (Const, Volatile, Restrict)):
            # a qualified pointer is spelt with the qualifier after the star, as in C
            if isinstance(self[t.type], Ptr):
                return f"{inner(t.type)} {t.kind}"
            return f"{t.kind} {inner(t.type)}"
        if isinstance(t, TypeTag):
            return f'{inner(t.type)} __attribute__((btf_type_tag("{t.name}")))'
        if isinstance(t, (Struct, Enum, Fwd)):
            if isinstance(t, Fwd):
                keyword = "union" if t.union else "struct"
            else:
                keyword = "enum" if isinstance(t, Enum) else t.kind
            return f"{keyword} {t.name or '(anon)'}"
        if isinstance(t, FuncProto):
            params = ", ".join(inner(p.type) for p in t.params)
            return f"{inner(t.return_type)} (*)({params})"
        return t.name or f"({t.kind})"

    def is_func_pointer(self, type_id: int) -> bool:
        """Whether the type is (a typedef of) a pointer to a function prototype, as an ops
        struct's members that take a program are."""
        t = self[self.resolve(type_id)]
        return isinstance(t, Ptr) and isinstance(self[self.resolve(t.type)], FuncProto)

    def enum_value(self, enum: str, value: str) -> int | None:
        """The value of enumerator `value` of `enum enum` (or enum64), or None."""
        for type_id in self.find_all(enum, "enum") + self.find_all(enum, "enum64"):
            for v in self[type_id].values:
                if v.name == value:
                    return v.value
        return None


@dataclass
class Btf(_TypeQueries):
    """Parsed `.BTF`: `types[id]` (types[0] is Void) and the raw bytes (what BTF_LOAD takes)."""

    types: list
    strings: bytes
    raw: bytes = field(repr=False, default=b"")
    _by_name: dict | None = field(default=None, init=False, repr=False, compare=False)

    def __getitem__(self, type_id: int):
        try:
            return self.types[type_id]
        except IndexError:
            raise BtfError(f"type id {type_id} is out of range (the BTF has "
                           f"{len(self.types) - 1} types)") from None

    def __len__(self) -> int:
        return len(self.types)

    def __iter__(self) -> Iterator:
        return iter(self.types)

    def string(self, offset: int) -> str:
        return _string(self.strings, offset)

    def for_kernel(self, section_sizes: dict[str, int],
                   symbol_offsets: dict[tuple[str, str], int]) -> bytes:
        """These types as BTF_LOAD accepts them (see `_for_kernel`): `section_sizes` by ELF
        section name, `symbol_offsets` by (section name, variable name)."""
        return _for_kernel(self, section_sizes, symbol_offsets)

    def find_all(self, name: str, kind: str | None = None) -> list[int]:
        """Every id of a type called `name` (of `kind`), from a name index built on first use."""
        if self._by_name is None:
            index: dict[str, list[int]] = {}
            for i, t in enumerate(self.types):
                if t.name:
                    index.setdefault(t.name, []).append(i)
            self._by_name = index
        return [i for i in self._by_name.get(name, ()) if kind is None or self.types[i].kind == kind]


def _sections(data: bytes) -> tuple[bytes, bytes]:
    """The type and string sections of `.BTF` bytes, after checking the header."""
    if len(data) < _HEADER.size:
        raise BtfError(f".BTF is {len(data)} bytes, shorter than its {_HEADER.size}-byte header")
    magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(data)
    if magic != BTF_MAGIC:
        raise BtfError(f".BTF has magic {magic:#06x}, not {BTF_MAGIC:#06x} (or it is big-endian)")
    if version != 1:
        raise BtfError(f".BTF version {version} is not supported (only 1)")
    if hdr_len < _HEADER.size or hdr_len > len(data):
        raise BtfError(f".BTF header length {hdr_len} is out of range")
    types_at, strs_at = hdr_len + type_off, hdr_len + str_off
    if types_at + type_len > len(data) or strs_at + str_len > len(data):
        raise BtfError(f".BTF sections (types {type_off}+{type_len}, strings {str_off}+{str_len}) "
                       f"run past its {len(data)} bytes")
    strings = data[strs_at:strs_at + str_len]
    if strings and strings[0] != 0:
        raise BtfError(".BTF string section does not start with the empty string")
    return data[types_at:types_at + type_len], strings


def parse_btf(data: bytes) -> Btf:
    data = bytes(data)
    type_data, strings = _sections(data)
    types: list = [Void()]
    # vmlinux has ~150k types: the collector's passes over that many new (acyclic) records
    # would double the time, so it is paused while they are made
    collecting = gc.isenabled()
    gc.disable()
    try:
        # every record is whole 32-bit words: unpack them all at once
        words = struct.unpack(f"<{len(type_data) // 4}I", type_data[:len(type_data) // 4 * 4])
        _TypeReader(words, len(type_data), strings, _string_table(strings)).read_all(types)
    finally:
        if collecting:
            gc.enable()
    count = len(types)
    for i, t in enumerate(types):
        refs = _references(t)
        if refs and max(refs) >= count:
            raise BtfError(f"type {i} ({t.kind} {t.name!r}) refers to type {max(refs)}, but the "
                           f"BTF has only {count - 1} types")
    _check_chains(types)
    return Btf(types, strings, data)


def _check_chains(types: list) -> None:
    """Refuse a loop of chained references (`_CHAINED`), as the kernel does, so that every walk
    down a chain (`resolve`, `size_of`, `type_name`, the loader's ctypes) ends.  Each type has at
    most one chained reference, so the walks are paths: each type is visited once."""
    done = [False] * len(types)
    for start in range(len(types)):
        path: list[int] = []
        on_path: set[int] = set()
        at = start
        while not done[at] and isinstance(types[at], _CHAINED):
            if at in on_path:
                t = types[at]
                raise BtfError(f"type {at} ({t.kind} {t.name!r}) is part of a reference loop "
                               f"(types {', '.join(map(str, path[path.index(at):]))}), which the "
                               "kernel refuses")
            path.append(at)
            on_path.add(at)
            at = types[at].type
        for i in path:
            done[i] = True
        done[at] = True


def _references(t) -> list[int]:
    """The type ids `t` points at (checked once, so later lookups need no bounds checks)."""
    cls = type(t)
    if cls in _SIMPLE_REF:
        return [t.type]
    if cls is Array:
        return [t.type, t.index_type]
    if cls is FuncProto:
        return [t.return_type, *(p.type for p in t.params)]
    if cls in (Struct, Union):
        return [m.type for m in t.members]
    if cls is Datasec:
        return [v.type for v in t.vars]
    return []


def _string(strings: bytes, offset: int) -> str:
    if offset >= len(strings) and offset:
        raise BtfError(f"string offset {offset} is past the {len(strings)}-byte string section")
    end = strings.find(b"\0", offset)
    if end < 0:
        raise BtfError(f"string at offset {offset} is not NUL-terminated")
    return strings[offset:end].decode("utf-8", errors="replace")


def _string_table(strings: bytes) -> dict[int, str]:
    """Every string by its offset, decoded in one pass (the full parse names ~150k types); an
    offset into the middle of a string (the tail of a longer name) is looked up on demand."""
    names: dict[int, str] = {}
    at = 0
    for chunk in strings.split(b"\0")[:-1]:
        names[at] = chunk.decode("utf-8", errors="replace")
        at += len(chunk) + 1
    return names


class _TypeReader:
    """Reads type records from the type section's u32 words; one function per kind (`_KINDS`)
    keeps each layout in view.  `parse_btf` walks every record, `LazyBtf` reads one at a
    time, with the same readers."""

    def __init__(self, words: Sequence[int], size: int, strings: bytes, names: dict[int, str]) -> None:
        self.words, self.size, self.strings, self.names = words, size, strings, names
        self.pos = 0              # in words
        self.type_id = 0          # the record being read, for messages

    def u32s(self, n: int) -> tuple[int, ...]:
        end = self.pos + n
        if end * 4 > self.size:
            raise BtfError(f"type {self.type_id} is truncated at byte {self.pos * 4} of the "
                           "type section")
        values = self.words[self.pos:end]
        self.pos = end
        return values

    def name(self, offset: int) -> str:
        try:
            return self.names[offset]
        except KeyError:
            name = self.names[offset] = _string(self.strings, offset)
            return name

    def read(self, type_id: int):
        """The record at `pos`, as its dataclass."""
        self.type_id = type_id
        name_off, info, size_or_type = self.u32s(3)
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        if kind not in _KINDS:
            raise BtfError(f"type {type_id} has unknown kind {kind}")
        return _KINDS[kind].read(self, self.name(name_off), vlen, kflag, size_or_type)

    def read_all(self, out: list) -> None:
        while self.pos * 4 < self.size:
            out.append(self.read(len(out)))


def _int(r: _TypeReader, name, vlen, kflag, size):
    (enc,) = r.u32s(1)
    return Int(name, size, enc & 0xFF, (enc >> 16) & 0xFF, (enc >> 24) & 0x0F)


def _array(r: _TypeReader, name, vlen, kflag, _):
    elem, index, nelems = r.u32s(3)
    return Array(elem, index, nelems, name)


def _composite(cls):
    def read(r: _TypeReader, name, vlen, kflag, size):
        members = []
        for _ in range(vlen):
            m_name, m_type, m_off = r.u32s(3)
            # kind_flag: the offset word packs bitfield size (high 8 bits) and bit offset
            bits, off = ((m_off >> 24), m_off & 0xFFFFFF) if kflag else (0, m_off)
            members.append(Member(r.name(m_name), m_type, off, bits))
        return cls(name, size, tuple(members))
    return read


def _enum(cls):
    def read(r: _TypeReader, name, vlen, kflag, size):
        values = []
        for _ in range(vlen):
            if cls is Enum64:
                v_name, lo, hi = r.u32s(3)
                value = lo | (hi << 32)
                if kflag and value >> 63:
                    value -= 1 << 64
            else:
                v_name, value = r.u32s(2)
                if kflag and value >> 31:
                    value -= 1 << 32
            values.append(EnumValue(r.name(v_name), value))
        return cls(name, size, tuple(values), bool(kflag))
    return read


def _func_proto(r: _TypeReader, name, vlen, kflag, ret):
    params = []
    for _ in range(vlen):
        p_name, p_type = r.u32s(2)
        params.append(Param(r.name(p_name), p_type))
    return FuncProto(ret, tuple(params), name)


def _var(r: _TypeReader, name, vlen, kflag, type_):
    (linkage,) = r.u32s(1)
    return Var(name, type_, linkage)


def _datasec(r: _TypeReader, name, vlen, kflag, size):
    return Datasec(name, size, tuple(VarSecinfo(*r.u32s(3)) for _ in range(vlen)))


def _decl_tag(r: _TypeReader, name, vlen, kflag, type_):
    (idx,) = r.u32s(1)
    return DeclTag(name, type_, idx - (1 << 32) if idx >> 31 else idx)


@dataclass(frozen=True)
class _Kind:
    """One BTF kind: its dataclass, its reader, and its record's length after the 12-byte head
    (`fixed` words, plus `per_item` words for each of its vlen members, values or params)."""

    cls: type
    read: object
    fixed: int = 0
    per_item: int = 0


# The kinds of include/uapi/linux/btf.h by number: the one table readers, the lazy index and the
# encoder use.
_KINDS = {
    1: _Kind(Int, _int, fixed=1),
    2: _Kind(Ptr, lambda r, name, vlen, kflag, t: Ptr(t, name)),
    3: _Kind(Array, _array, fixed=3),
    4: _Kind(Struct, _composite(Struct), per_item=3),
    5: _Kind(Union, _composite(Union), per_item=3),
    6: _Kind(Enum, _enum(Enum), per_item=2),
    7: _Kind(Fwd, lambda r, name, vlen, kflag, t: Fwd(name, bool(kflag))),
    8: _Kind(Typedef, lambda r, name, vlen, kflag, t: Typedef(name, t)),
    9: _Kind(Volatile, lambda r, name, vlen, kflag, t: Volatile(t, name)),
    10: _Kind(Const, lambda r, name, vlen, kflag, t: Const(t, name)),
    11: _Kind(Restrict, lambda r, name, vlen, kflag, t: Restrict(t, name)),
    12: _Kind(Func, lambda r, name, vlen, kflag, t: Func(name, t, vlen)),
    13: _Kind(FuncProto, _func_proto, per_item=2),
    14: _Kind(Var, _var, fixed=1),
    15: _Kind(Datasec, _datasec, per_item=3),
    16: _Kind(Float, lambda r, name, vlen, kflag, size: Float(name, size)),
    17: _Kind(DeclTag, _decl_tag, fixed=1),
    18: _Kind(TypeTag, lambda r, name, vlen, kflag, t: TypeTag(name, t)),
    19: _Kind(Enum64, _enum(Enum64), per_item=3),
}
_KIND_NUMBERS = {k.cls.kind: number for number, k in _KINDS.items()}


# --- the running kernel's BTF, decoded on demand -----------------------------------------------
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"


class LazyBtf(_TypeQueries):
    """`.BTF` (in practice the kernel's: ~150k types, 5 MB) decoded one type at a time.

    `parse_btf` decodes every type into dataclasses: 0.4 s here, 5 s in the TCG guest the
    mainline tests run in, for the dozen types a loader wants.  This walks the type section as
    u32 words once, remembering only where each record starts (0.25 s in that guest), finds a
    name by searching the raw bytes for its string offset (C speed) and checking that a record
    starts there, and decodes a type with `parse_btf`'s own readers when it is asked for."""

    def __init__(self, data: bytes) -> None:
        self.raw = bytes(data)
        type_data, self.strings = _sections(self.raw)
        if len(type_data) % 4:
            raise BtfError(f".BTF type section is {len(type_data)} bytes, not whole 32-bit words")
        self._blob = type_data
        # the kernel writes BTF in its own byte order; _sections checked it is little-endian
        words = (memoryview(type_data).cast("I") if sys.byteorder == "little" else
                 struct.unpack(f"<{len(type_data) // 4}I", type_data))
        self._reader = _TypeReader(words, len(type_data), self.strings, {})
        fixed, per_item = [-1] * 32, [0] * 32
        for number, k in _KINDS.items():
            fixed[number], per_item[number] = 3 + k.fixed, k.per_item
        offsets = [0]      # type id → word index of its record (id 0, void, has none)
        append, i, n = offsets.append, 0, len(words)
        while i + 3 <= n:
            append(i)
            info = words[i + 1]
            kind = info >> 24 & 0x1F
            if fixed[kind] < 0:
                raise BtfError(f"type {len(offsets) - 1} has unknown kind {kind}")
            i += fixed[kind] + per_item[kind] * (info & 0xFFFF)
        if i != n:
            raise BtfError(f"type {len(offsets) - 1} is truncated at byte {offsets[-1] * 4} of "
                           "the type section")
        self._offsets = offsets
        self._types: dict[int, object] = {0: Void()}

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, type_id: int):
        found = self._types.get(type_id)
        if found is None:
            if not 0 < type_id < len(self._offsets):
                raise BtfError(f"type id {type_id} is out of range (the BTF has "
                               f"{len(self._offsets) - 1} types)")
            self._reader.pos = self._offsets[type_id]
            found = self._types[type_id] = self._reader.read(type_id)
        return found

    def string(self, offset: int) -> str:
        return _string(self.strings, offset)

    def has_name(self, name: str) -> bool:
        """Whether any type, member or value is called `name` (a string-table search only)."""
        return b"\0" + name.encode() + b"\0" in self.strings

    def find_all(self, name: str, kind: str | None = None) -> list[int]:
        """Every id of a type called `name` (of `kind`): each place the string table holds the
        name, then each record whose name word is that offset."""
        wanted = b"\0" + name.encode() + b"\0"
        number = _KIND_NUMBERS.get(kind) if kind else None
        out, at = [], self.strings.find(wanted)
        while at >= 0:
            needle = struct.pack("<I", at + 1)
            pos = self._blob.find(needle)
            while pos >= 0:
                if pos % 4 == 0:
                    type_id = bisect.bisect_left(self._offsets, pos // 4, 1)
                    if type_id < len(self._offsets) and self._offsets[type_id] == pos // 4 and \
                            (number is None or self._blob[pos + 7] & 0x1F == number):
                        out.append(type_id)
                pos = self._blob.find(needle, pos + 1)
            at = self.strings.find(wanted, at + 1)
        return sorted(out)


@functools.lru_cache(maxsize=1)
def kernel_btf() -> LazyBtf | None:
    """The running kernel's BTF, read once per process (the kernel does not change under it),
    or None where it exposes none (built without CONFIG_DEBUG_INFO_BTF) or it cannot be read.
    The loader resolves kfuncs through it and the mainline probe finds its types there."""
    try:
        with open(VMLINUX_BTF, "rb") as f:
            return LazyBtf(f.read())
    except (OSError, BtfError):
        return None



# --- .BTF.ext ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LineInfo:
    """Instruction `insn` (a slot index within its section or program) starts source `line`."""

    insn: int
    file: str
    line: int
    col: int
    text: str
    # offsets of `file` and `text` in the object's BTF strings, which `Btf.for_kernel` keeps,
    # so these records can be handed to BPF_PROG_LOAD as they are
    file_off: int = field(default=0, compare=False, repr=False)
    text_off: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class FuncInfo:
    """The function whose BTF FUNC is `type_id` starts at slot `insn`."""

    insn: int
    type_id: int
    name: str = ""


# enum bpf_core_relo_kind
CORE_RELO_KINDS = {0: "field_byte_offset", 1: "field_byte_size", 2: "field_exists",
                   3: "field_signed", 4: "field_lshift_u64", 5: "field_rshift_u64",
                   6: "type_id_local", 7: "type_id_target", 8: "type_exists", 9: "type_size",
                   10: "enumval_exists", 11: "enumval_value", 12: "type_matches"}


@dataclass(frozen=True)
class CoreRelo:
    """A CO-RE relocation: the instruction at slot `insn` depends on the kernel's layout of
    local type `type_id` along `access` ("0:1:2", member indexes); a loader must patch it
    against the running kernel's BTF before loading."""

    insn: int
    type_id: int
    access: str
    kind: str


@dataclass
class BtfExt:
    """Parsed `.BTF.ext`: records per ELF section name, instruction offsets in slots."""

    func_info: dict[str, list[FuncInfo]]
    line_info: dict[str, list[LineInfo]]
    raw: bytes = field(repr=False, default=b"")
    core_relos: dict[str, list[CoreRelo]] = field(default_factory=dict)


def parse_btf_ext(data: bytes, btf: Btf) -> BtfExt:
    """`.BTF.ext` bytes → records.  Names (sections, files, line text) are in `btf`'s strings."""
    data = bytes(data)
    if len(data) < _EXT_HEADER.size:
        raise BtfError(f".BTF.ext is {len(data)} bytes, shorter than its header")
    magic, version, _flags, hdr_len, fi_off, fi_len, li_off, li_len = _EXT_HEADER.unpack_from(data)
    if magic != BTF_MAGIC:
        raise BtfError(f".BTF.ext has magic {magic:#06x}, not {BTF_MAGIC:#06x}")
    if version != 1:
        raise BtfError(f".BTF.ext version {version} is not supported (only 1)")
    if hdr_len < _EXT_HEADER.size or hdr_len > len(data):
        raise BtfError(f".BTF.ext header length {hdr_len} is out of range")

    def blocks(off: int, length: int, min_rec: int, what: str):
        start, end = hdr_len + off, hdr_len + off + length
        if length == 0:
            return
        if end > len(data) or length < 4:
            raise BtfError(f".BTF.ext {what} ({off}+{length}) runs past its {len(data)} bytes")
        (rec_size,) = _U32.unpack_from(data, start)
        if rec_size < min_rec:
            raise BtfError(f".BTF.ext {what} record size {rec_size} is below {min_rec}")
        pos = start + 4
        while pos < end:
            if pos + 8 > end:
                raise BtfError(f".BTF.ext {what} is truncated at byte {pos}")
            sec_off, count = struct.unpack_from("<II", data, pos)
            pos += 8
            if pos + count * rec_size > end:
                raise BtfError(f".BTF.ext {what} of {btf.string(sec_off)!r} claims {count} "
                               f"records, more than its {end - pos} bytes hold")
            recs = [data[pos + i * rec_size:pos + (i + 1) * rec_size] for i in range(count)]
            pos += count * rec_size
            yield btf.string(sec_off), recs

    func_info: dict[str, list[FuncInfo]] = {}
    for sec, recs in blocks(fi_off, fi_len, 8, "func_info"):
        out = func_info.setdefault(sec, [])
        for rec in recs:
            insn_off, type_id = struct.unpack_from("<II", rec)
            t = btf[type_id]
            out.append(FuncInfo(insn_off // 8, type_id, t.name))
    line_info: dict[str, list[LineInfo]] = {}
    for sec, recs in blocks(li_off, li_len, 16, "line_info"):
        out_l = line_info.setdefault(sec, [])
        for rec in recs:
            insn_off, file_off, line_off, line_col = struct.unpack_from("<IIII", rec)
            out_l.append(LineInfo(insn_off // 8, btf.string(file_off), line_col >> 10,
                                  line_col & 0x3FF, btf.string(line_off), file_off, line_off))
    core_relos: dict[str, list[CoreRelo]] = {}
    if hdr_len >= _EXT_HEADER.size + 8:   # the CO-RE part of the header came later (v5.8)
        cr_off, cr_len = struct.unpack_from("<II", data, _EXT_HEADER.size)
        for sec, recs in blocks(cr_off, cr_len, 16, "core_relo"):
            out_c = core_relos.setdefault(sec, [])
            for rec in recs:
                insn_off, type_id, access_off, kind = struct.unpack_from("<IIII", rec)
                btf[type_id]  # must exist
                out_c.append(CoreRelo(insn_off // 8, type_id, btf.string(access_off),
                                      CORE_RELO_KINDS.get(kind, f"kind {kind}")))
    return BtfExt(func_info, line_info, data, core_relos)


# --- writing: BTF for the kernel, func_info / line_info for BPF_PROG_LOAD ---------------------
FUNC_INFO_SIZE = 8    # struct bpf_func_info {insn_off, type_id}
LINE_INFO_SIZE = 16   # struct bpf_line_info {insn_off, file_name_off, line_off, line_col}


class _Strings:
    """A string table that starts with the original one, so every offset into it (names,
    line_info file and line text) stays valid; new names are appended."""

    def __init__(self, base: bytes) -> None:
        self.data = bytearray(base or b"\0")
        self.index: dict[str, int] = {}
        pos = 0
        for chunk in bytes(self.data).split(b"\0"):
            self.index.setdefault(chunk.decode("utf-8", errors="replace"), pos)
            pos += len(chunk) + 1

    def __call__(self, name: str) -> int:
        if name not in self.index:
            self.index[name] = len(self.data)
            self.data += name.encode() + b"\0"
        return self.index[name]


def _record(t, strings: _Strings) -> bytes:
    def head(vlen: int, size_or_type: int, kflag: int = 0) -> bytes:
        info = (kflag << 31) | (_KIND_NUMBERS[t.kind] << 24) | vlen
        return struct.pack("<III", strings(t.name), info, size_or_type)

    if isinstance(t, Int):
        return head(0, t.size) + struct.pack("<I", (t.encoding << 24) | (t.offset << 16) | t.bits)
    if isinstance(t, Array):
        return head(0, 0) + struct.pack("<III", t.type, t.index_type, t.nelems)
    if isinstance(t, Struct):
        kflag = int(any(m.bitfield_size for m in t.members))
        body = b"".join(struct.pack("<III", strings(m.name), m.type,
                                    (m.bitfield_size << 24 | m.bit_offset) if kflag else m.bit_offset)
                        for m in t.members)
        return head(len(t.members), t.size, kflag) + body
    if isinstance(t, Enum64):
        body = b"".join(struct.pack("<III", strings(v.name), v.value & M32, (v.value >> 32) & M32)
                        for v in t.values)
        return head(len(t.values), t.size, int(t.signed)) + body
    if isinstance(t, Enum):
        body = b"".join(struct.pack("<II", strings(v.name), v.value & M32) for v in t.values)
        return head(len(t.values), t.size, int(t.signed)) + body
    if isinstance(t, Fwd):
        return head(0, 0, int(t.union))
    if isinstance(t, Func):
        return head(t.linkage, t.type)
    if isinstance(t, FuncProto):
        body = b"".join(struct.pack("<II", strings(p.name), p.type) for p in t.params)
        return head(len(t.params), t.return_type) + body
    if isinstance(t, Var):
        return head(0, t.type) + struct.pack("<I", t.linkage)
    if isinstance(t, Datasec):
        body = b"".join(struct.pack("<III", v.type, v.offset, v.size) for v in t.vars)
        return head(len(t.vars), t.size) + body
    if isinstance(t, Float):
        return head(0, t.size)
    if isinstance(t, DeclTag):
        return head(0, t.type) + struct.pack("<I", t.component_idx & M32)
    return head(0, t.type)   # ptr, typedef, volatile, const, restrict, type_tag


def encode_btf(types: list, base_strings: bytes = b"\0") -> bytes:
    """Types (types[0] is Void) → `.BTF` bytes; names are added to `base_strings`."""
    strings = _Strings(base_strings)
    records = []
    for i, t in enumerate(types[1:], start=1):
        try:
            records.append(_record(t, strings))
        except struct.error:
            raise BtfError(f"type {i} ({t.kind} {t.name!r}) has a value that does not fit "
                           "BTF's 32-bit fields") from None
    body = b"".join(records)
    header = _HEADER.pack(BTF_MAGIC, 1, 0, _HEADER.size, 0, len(body), len(body), len(strings.data))
    return header + body + bytes(strings.data)


def _for_kernel(btf: Btf, section_sizes: dict[str, int],
                symbol_offsets: dict[tuple[str, str], int]) -> bytes:
    """libbpf's fix-ups before BTF_LOAD, which rejects what clang leaves for the loader:
    DATASEC sizes and variable offsets are 0 in the object (they come from the ELF section and
    symbol), and extern variables and functions (.ksyms) have a linkage the kernel refuses."""
    types = list(btf.types)
    int_id = next((i for i, t in enumerate(types) if isinstance(t, Int) and t.size == 4), None)
    if int_id is None:
        types.append(Int("int", 4, 32, 0, INT_SIGNED))
        int_id = len(types) - 1
    dummy_id = None
    for i, t in enumerate(list(types)):
        if isinstance(t, FuncProto):   # the kernel wants every parameter named
            params = tuple(p if p.name or not p.type else replace(p, name=f"arg{n}")
                           for n, p in enumerate(t.params))
            types[i] = replace(t, params=params)
        if not isinstance(t, Datasec):
            continue
        entries = []
        if any(isinstance(types[v.type], Func) or getattr(types[v.type], "linkage", 0) == 2
               for v in t.vars):
            # externs take no room in the object: give each a 4-byte int slot (as libbpf does)
            # and point kfuncs at a dummy variable, since a DATASEC may only list VARs
            for n, v in enumerate(t.vars):
                target = types[v.type]
                if isinstance(target, Func):
                    if dummy_id is None:
                        types.append(Var("dummy_ksym", int_id, 1))
                        dummy_id = len(types) - 1
                    types[v.type] = replace(target, linkage=1)
                    entries.append(VarSecinfo(dummy_id, 4 * n, 4))
                elif isinstance(target, Var):
                    types[v.type] = replace(target, type=int_id, linkage=1)
                    entries.append(VarSecinfo(v.type, 4 * n, 4))
                else:
                    raise BtfError(f"DATASEC {t.name!r} lists type {v.type} ({target.kind}), "
                                   "not a variable or function")
            size = 4 * len(t.vars)
        else:
            for v in t.vars:
                name = types[v.type].name
                entries.append(replace(v, offset=symbol_offsets.get((t.name, name), v.offset)))
            entries.sort(key=lambda v: v.offset)
            size = section_sizes.get(t.name, t.size)
            if size > M32:
                raise BtfError(f"section {t.name!r} is {size} bytes, more than its DATASEC's "
                               "32-bit size can say")
        types[i] = replace(t, size=size, vars=tuple(entries))
    return encode_btf(types, btf.strings)


def encode_func_info(records) -> bytes:
    """`struct bpf_func_info` records for BPF_PROG_LOAD (insn_off counts instructions)."""
    return b"".join(struct.pack("<II", r.insn, r.type_id) for r in records)


def encode_line_info(records) -> bytes:
    """`struct bpf_line_info` records for BPF_PROG_LOAD; string offsets are into the BTF that
    `Btf.for_kernel` returns."""
    return b"".join(struct.pack("<IIII", r.insn, r.file_off, r.text_off, (r.line << 10) | (r.col & 0x3FF))
                    for r in records)
