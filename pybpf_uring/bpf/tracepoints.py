"""The kernel's own layouts for tracing programs: tracepoint records, raw tracepoint arguments and
`struct pt_regs`, read from the running kernel (or a BTF file given at compile time).

A `@tracepoint` program's ctx is the event's record, whose layout the kernel alone knows: an
8-byte common header (`common_type`, `common_flags`, `common_preempt_count`, `common_pid`), then
the event's fields.  Copying it by hand from tracefs is where programs went wrong -- leaving out
the header still compiles and then reads every field 8 bytes early -- so the compiler asks the
kernel instead, in this order:

* tracefs `events/<category>/<event>/format` (root; exact for every event, including those that
  share a class, and the only source for the syscall events, which have no BTF record);
* the kernel's BTF (`/sys/kernel/btf/vmlinux`, readable by anyone): `struct
  trace_event_raw_<event>` for events defined with TRACE_EVENT (all of io_uring's), with the
  header (`struct trace_entry ent`) spelt as tracefs spells it, so both sources give one layout;
  `btf_trace_<event>` typedefs tell which events exist at all, and a raw tracepoint's arguments;
* with `btf=FILE` (`--btf FILE`), that BTF only: compiling for another kernel than this one.

`Record` is plain data; the checker turns it into a struct type and checks a hand-written
`Struct` against it (`layout_mismatches`).  Names the kernel does not know are `UnknownEvent`,
with the near misses difflib finds among the category's events.
"""
from __future__ import annotations

import difflib
import functools
import os
import re
from dataclasses import dataclass

from . import btf as B
from . import kernel

__all__ = ["RecordField", "Record", "UnknownEvent", "KernelTypes", "kernel_types",
           "parse_format", "layout_mismatches", "HEADER"]

# struct trace_entry as tracefs names its fields: the 8 bytes every record starts with.
HEADER = (("common_type", 2, False), ("common_flags", 1, False),
          ("common_preempt_count", 1, False), ("common_pid", 4, True))
HEADER_SIZE = 8
# Categories whose events are made at run time, not declared with TRACE_EVENT, so BTF knows
# nothing of them: only tracefs does (the syscall events come from the syscall table).
SYNTHETIC = frozenset({"syscalls", "kprobes", "uprobes", "ftrace"})
# Field names a hand-written record may use for bytes it does not read.
PADDING = re.compile(r"^(_|pad)")


@dataclass(frozen=True)
class RecordField:
    """One field: `size` bytes at `offset`; `count` > 0 for an array of `count` elements of
    `size // count` bytes (`char comm[16]`), 0 for a scalar.  Pointers are 8-byte unsigned."""

    name: str
    offset: int
    size: int
    signed: bool = False
    count: int = 0
    c_type: str = ""

    @property
    def elem_size(self) -> int:
        return self.size // self.count if self.count else self.size


@dataclass(frozen=True)
class Record:
    """A ctx layout the kernel defines: a tracepoint record, a raw tracepoint's arguments or
    pt_regs.  `source` says where it was read (for messages)."""

    name: str                  # the struct's name, as BTF knows it (trace_event_raw_<event>)
    fields: tuple[RecordField, ...]
    size: int
    source: str

    def field(self, name: str) -> RecordField | None:
        return next((f for f in self.fields if f.name == name), None)


class UnknownEvent(LookupError):
    """No such tracepoint (or kernel function): `near` holds the closest names there are."""

    def __init__(self, message: str, near: list[str]) -> None:
        super().__init__(message)
        self.message, self.near = message, near


_FIELD = re.compile(r"^\s*field:(?P<decl>.+?);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
                    r"\s*signed:(?P<signed>\d)")
_ARRAY = re.compile(r"\[(\d+)\]$")


def parse_format(text: str, event: str, source: str) -> Record:
    """A tracefs `format` file as a Record.  A `__data_loc char[] name` field (the offset and
    length of a string stored after the fields, 4 bytes) is called `__data_loc_name`, as BTF
    calls it."""
    fields = []
    for line in text.splitlines():
        m = _FIELD.match(line)
        if m is None:
            continue
        decl, size = m["decl"].strip(), int(m["size"])
        name = decl.split()[-1]
        loc = re.match(r"^__(data|rel)_loc\b", decl)
        count = 0
        if loc:
            name = f"__{loc[1]}_loc_{name.split('[')[0]}"
        else:
            arr = _ARRAY.search(name)
            if arr and int(arr[1]) and size % int(arr[1]) == 0:
                count = int(arr[1])
            name = name.split("[", 1)[0].lstrip("*")
        if count and size // count not in (1, 2, 4, 8) or count == 0 and size not in (1, 2, 4, 8):
            count = size          # structs inside the record, or an array of them: its bytes
        fields.append(RecordField(name, int(m["offset"]), size, m["signed"] == "1" and not count,
                                  count, decl.rsplit(None, 1)[0] if " " in decl else decl))
    if not fields:
        raise ValueError(f"{source} lists no fields")
    end = max(f.offset + f.size for f in fields)
    return Record(f"trace_event_raw_{event}", tuple(fields), end, source)


class KernelTypes:
    """One BTF (the running kernel's, or a file's) with tracefs beside it when `use_tracefs`."""

    def __init__(self, btf: B.LazyBtf | None, source: str, use_tracefs: bool) -> None:
        self.btf, self.source, self.use_tracefs = btf, source, use_tracefs

    # --- tracepoints -------------------------------------------------------------------------
    def record(self, category: str, event: str) -> Record | None:
        """The record of `category/event`; UnknownEvent if the kernel has no such event, None
        if it has it but no source here describes its record."""
        fmt = self._tracefs_events(category)
        if fmt is not None:
            if event not in fmt:
                raise UnknownEvent(f"no tracepoint {category}/{event} in this kernel",
                                   _near(event, fmt))
            path = os.path.join(self._tracefs_root(), "events", category, event, "format")
            try:
                with open(path) as f:
                    return parse_format(f.read(), event, path)
            except OSError:
                pass
        if self.btf is None or category in SYNTHETIC:
            return None
        if not self.btf.find_all(f"btf_trace_{event}", "typedef"):
            raise UnknownEvent(f"no tracepoint {category}/{event} in {self.source}",
                               _near(event, self.events()))
        found = self.btf.find(f"trace_event_raw_{event}", "struct")
        return None if found is None else self._struct(found)

    def events(self) -> list[str]:
        """Every tracepoint the BTF knows (from its btf_trace_<event> typedefs)."""
        return _names_with_prefix(self.btf, "btf_trace_") if self.btf is not None else []

    def raw_args(self, event: str) -> Record:
        """A raw tracepoint's ctx: its arguments as u64 slots arg0..argN (the prototype of
        `btf_trace_<event>` after its leading `void *__data`)."""
        if self.btf is None:
            raise UnknownEvent(f"raw tracepoint {event}: {self.source} is not readable", [])
        found = self.btf.find(f"btf_trace_{event}", "typedef")
        if found is None:
            raise UnknownEvent(f"no tracepoint {event} in {self.source}", _near(event, self.events()))
        proto = self.btf[self.btf.resolve(self.btf[self.btf.resolve(found)].type)]
        params = proto.params[1:]
        fields = tuple(RecordField(f"arg{i}", 8 * i, 8, c_type=self.btf.type_name(p.type))
                       for i, p in enumerate(params))
        return Record(f"raw_args_{event}", fields, 8 * max(len(params), 1), self.source)

    # --- kernel functions --------------------------------------------------------------------
    def pt_regs(self) -> Record | None:
        """`struct pt_regs`, a kprobe's ctx: the registers at the probed instruction."""
        found = None if self.btf is None else self.btf.find("pt_regs", "struct")
        return None if found is None else self._struct(found)

    def function_args(self, name: str, returns: bool) -> Record | None:
        """An fentry (fexit) program's ctx: the function's arguments as u64 slots named as its
        BTF prototype names them, then (fexit) `ret`, its return value."""
        found = self.function(name)
        if found is None:
            return None
        proto = self.btf[self.btf.resolve(self.btf[found].type)]
        names = [p.name or f"arg{i}" for i, p in enumerate(proto.params)]
        types = [self.btf.type_name(p.type) for p in proto.params]
        if returns:
            names.append("ret")
            types.append(self.btf.type_name(proto.return_type))
        fields = tuple(RecordField(n, 8 * i, 8, c_type=t) for i, (n, t) in enumerate(zip(names, types)))
        return Record(f"args_{name}", fields, 8 * max(len(fields), 1), self.source)

    def function(self, name: str) -> int | None:
        """The BTF id of kernel function `name` (UnknownEvent with near misses if it has none)."""
        if self.btf is None:
            return None
        found = self.btf.find(name, "func")
        if found is None:
            near = difflib.get_close_matches(
                name, [name[:4] + n for n in _names_with_prefix(self.btf, name[:4])], 3, 0.75)
            raise UnknownEvent(f"no kernel function {name!r} in {self.source}", near)
        return found

    # --- helpers -----------------------------------------------------------------------------
    def _tracefs_root(self) -> str:
        return kernel.tracefs_root("tracepoint records cannot be read")

    def _tracefs_events(self, category: str) -> list[str] | None:
        """The events of `category` tracefs lists, or None where tracefs cannot be read (not
        mounted, not root, or a BTF file stands for another kernel)."""
        if not self.use_tracefs:
            return None
        try:
            events = os.path.join(self._tracefs_root(), "events")
            names = os.listdir(events)
        except OSError:
            return None
        if category not in names:
            raise UnknownEvent(f"no tracepoint category {category!r} in this kernel",
                               _near(category, [n for n in names if os.path.isdir(os.path.join(events, n))]))
        try:
            return sorted(n for n in os.listdir(os.path.join(events, category))
                          if n not in ("enable", "filter"))
        except OSError:
            return None

    def _struct(self, type_id: int) -> Record:
        btf = self.btf
        st = btf[type_id]
        fields: list[RecordField] = []
        for m in st.members:
            t = btf[btf.resolve(m.type)]
            if m.bitfield_size or not m.name:
                continue              # bitfields and anonymous unions: not addressable by name
            if m.name == "ent" and isinstance(t, B.Struct) and t.name == "trace_entry":
                at = m.offset
                for name, size, signed in HEADER:
                    fields.append(RecordField(name, at, size, signed))
                    at += size
                continue
            size = btf.size_of(m.type) if not (isinstance(t, B.Array) and t.nelems == 0) else 0
            if size == 0:
                continue              # a flexible array (`__data[]`): where strings follow
            count, signed = 0, False
            if isinstance(t, B.Int):
                signed = t.signed
            elif isinstance(t, B.Array):
                elem = btf.size_of(t.type)
                count = size // elem if elem in (1, 2, 4, 8) else size
            elif not isinstance(t, (B.Ptr, B.Enum)):
                count = size          # a struct or union inside: its bytes
            fields.append(RecordField(m.name, m.offset, size, signed, count, btf.type_name(m.type)))
        return Record(st.name, tuple(fields), st.size, self.source)


def _near(name: str, names: list[str]) -> list[str]:
    return difflib.get_close_matches(name, names, 3, 0.6)


def _names_with_prefix(btf: B.LazyBtf, prefix: str) -> list[str]:
    """The names in the BTF's string table that start with `prefix` (without it)."""
    out, data, needle = [], btf.strings, b"\0" + prefix.encode()
    at = data.find(needle)
    while at >= 0:
        end = data.find(b"\0", at + 1)
        out.append(data[at + len(needle):end].decode(errors="replace"))
        at = data.find(needle, end)
    return out


@functools.lru_cache(maxsize=8)
def kernel_types(btf_path: str | None = None) -> KernelTypes:
    """The running kernel's types (tracefs, then its BTF), or those of the BTF file `btf_path`
    (raw BTF, as /sys/kernel/btf/vmlinux is); OSError/ValueError if that file cannot be read."""
    if btf_path is None:
        return KernelTypes(B.kernel_btf(), B.VMLINUX_BTF, True)
    with open(btf_path, "rb") as f:
        data = f.read()
    try:
        return KernelTypes(B.LazyBtf(data), btf_path, False)
    except B.BtfError as exc:
        raise ValueError(f"{btf_path} is not BTF: {exc}") from None


def layout_mismatches(fields: list[tuple[str, int, int]], record: Record) -> list[tuple[str, str, str]]:
    """A hand-written record (name, offset, size per field) against the kernel's: (field, what
    is wrong, what to write) for each field that does not match.  A field named `_...` or
    `pad...` stands for bytes the program does not read.  Fields that all sit 8 bytes before
    their kernel offsets are the classic mistake of leaving out the common header: one error
    says so."""
    kernel_fields = {f.name: f for f in record.fields}
    out = []
    named = [(n, o, s) for n, o, s in fields if n in kernel_fields]
    if named and all(kernel_fields[n].offset - o == HEADER_SIZE for n, o, _ in named):
        first = named[0][0]
        return [(first, f"the record starts with the {HEADER_SIZE}-byte common header "
                 f"({', '.join(h[0] for h in HEADER)}): every field here is {HEADER_SIZE} bytes "
                 f"before the kernel's ({first} is at {kernel_fields[first].offset})",
                 "add `_common: u64` as the first field, or leave ctx unannotated to get the "
                 "kernel's record")]
    for name, offset, size in fields:
        k = kernel_fields.get(name)
        if k is None:
            if PADDING.match(name):
                continue
            here = [f.name for f in record.fields if f.offset <= offset < f.offset + f.size]
            hint = (f"the kernel's field at offset {offset} is {here[0]!r}" if here else
                    f"the record's fields are {', '.join(f.name for f in record.fields)}")
            out.append((name, f"the kernel's {record.name} has no field {name!r}",
                        hint + "; name bytes you skip `_...` or `pad...`"))
        elif (k.offset, k.size) != (offset, size):
            out.append((name, f"{name} is {size} bytes at offset {offset}, but the kernel's is "
                              f"{k.size} bytes at offset {k.offset} ({k.c_type or 'in ' + record.name})",
                        "leave ctx unannotated to get the kernel's record"))
    return out
