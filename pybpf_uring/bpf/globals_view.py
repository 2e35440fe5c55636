"""Globals by name: an object's `.data`, `.bss` and `.rodata` variables read and written from the
host as typed Python values, wherever its data sections live.

A program's globals are bytes in one-element array maps, one per data section.  Where those maps
live differs -- the kernel (`load.LoadedObject`, and a mainline loop's attachment), the userspace
engine behind a `Ring`, or a spec not loaded yet -- so each place supplies only a small
`SectionStorage` (read a section's bytes, write some of them, say whether it is frozen), and this
module does the rest once: where each variable is (the ELF symbol), what it is (the object's
BTF: DATASEC → VAR → type, decoded by `values.ctype_from_btf`), and how Python values go in and
out.

    live.globals.count              # an int of the variable's width and signedness
    live.globals.count = 7          # or live.globals["count"] = 7
    live.globals.pt                 # a struct: a view whose fields read and write in place
    live.globals.pt.x = 5           # writes those 4 bytes, nothing else
    live.globals.pt = Pt(x=5)       # the whole struct: a ctypes object of its size, bytes, or a
                                    # dict of fields (the others zero)
    live.globals.arr[2] = 5         # an array: a view with indexes and slices, read and written
    live.globals.arr = [1, 2, 3, 4] # in place; a whole array from a list of its length
    live.globals.pt.copy()          # a snapshot: the ctypes structure the BTF describes
    live.globals.arr.copy()         # a snapshot: a list

Views, not copies, so that `g.pt.x = 5` and `g.arr[2] = 5` do what they say instead of changing
a copy nobody reads; a view reads the section again on every access, so it always shows what
the program wrote last -- keep `view.copy()` to compare before and after.  A view compares equal
to a ctypes object of its bytes, to bytes, and (arrays) to a list.  A struct field named like a
view method (`copy`) is reached as `view["copy"]`; a global named like a Mapping method (`get`,
`keys`, `items`, `values`) as `globals["get"]`.

`.rodata` in the kernel is frozen once loaded: the verifier read its values as constants, so a
write there is refused (`FrozenGlobalError`) with the way to set it before loading.  Types the
BTF does not give faithfully (bitfields; no BTF at all) read as ints for 1, 2, 4 and 8 bytes
and as bytes otherwise.
"""
from __future__ import annotations

import ctypes
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

from . import btf as btfmod
from ..diagnostics import Diagnostic
from ..errors import LoadError
from .values import INT_CTYPES, ctype_from_btf, fields, pack

__all__ = ["Globals", "GlobalVar", "SectionStorage", "ViewSections", "FrozenGlobalError",
           "StructView", "ArrayView", "global_vars", "with_globals", "DATA_SECTIONS"]

DATA_SECTIONS = (".bss", ".data", ".rodata")   # and their named variants (.data.foo, .rodata.str1.1)


class FrozenGlobalError(LoadError):
    """A write to a global whose section cannot change any more (the kernel's `.rodata` once the
    program is loaded).  A LoadError: the CLI prints it as a diagnostic, with the way out."""


class SectionStorage(Protocol):
    """Where an object's data sections live, each as the bytes of one map value."""

    def read(self, section: str) -> bytes:
        """The section's bytes now."""

    def write(self, section: str, offset: int, data: bytes) -> None:
        """Replace `len(data)` bytes of the section at `offset`."""

    def frozen(self, section: str) -> str:
        """Why the section cannot be written now (a sentence saying what to do instead), or ''."""


@dataclass(frozen=True)
class GlobalVar:
    """A variable of a data section: where it is (the symbol), and its ctypes type from BTF
    (None when the BTF gives none: an int of `size` bytes for 1/2/4/8, else bytes)."""

    name: str
    section: str
    offset: int
    size: int
    ctype: Any = None


def global_vars(obj: Any) -> dict[str, GlobalVar]:
    """The variables of the object's data sections, by name, in symbol order."""
    data_maps = {m.name for m in obj.maps if m.data is not None or m.name.startswith(DATA_SECTIONS)}
    names = {s.index: s.name for s in obj.sections}
    types: dict[tuple[str, str], int] = {}
    btf = obj.btf
    for t in btf.types if btf is not None else ():
        if isinstance(t, btfmod.Datasec):
            for v in t.vars:
                var = btf[v.type]
                if isinstance(var, btfmod.Var):
                    types[(t.name, var.name)] = var.type
    out = {}
    for s in obj.symbols:
        section = names.get(s.section, "")
        if s.type != "object" or section not in data_maps:
            continue
        ctype = ctype_from_btf(btf, types.get((section, s.name), 0)) if btf is not None else None
        if ctype is not None and ctypes.sizeof(ctype) != s.size:
            ctype = None    # the BTF disagrees with the symbol: trust the bytes
        out[s.name] = GlobalVar(s.name, section, s.value, s.size, ctype)
    return out


# --- values in and out ----------------------------------------------------------------------------
def _is(ctype: Any, *bases: type) -> bool:
    return isinstance(ctype, type) and issubclass(ctype, bases)


def _fallback(size: int) -> Any:
    """The type of a variable without a faithful BTF type."""
    return INT_CTYPES.get((size, False))


class _Slot:
    """One typed place in a section: a whole variable, or a field or element inside one."""

    __slots__ = ("storage", "section", "offset", "size", "ctype", "label")

    def __init__(self, storage: SectionStorage, section: str, offset: int, size: int, ctype: Any,
                 label: str) -> None:
        self.storage, self.section, self.offset, self.size = storage, section, offset, size
        self.ctype, self.label = ctype, label

    def inner(self, offset: int, ctype: Any, label: str) -> "_Slot":
        return _Slot(self.storage, self.section, self.offset + offset, ctypes.sizeof(ctype), ctype,
                     self.label + label)

    def raw(self) -> bytes:
        data = self.storage.read(self.section)
        return bytes(data[self.offset:self.offset + self.size])

    def get(self) -> Any:
        if _is(self.ctype, ctypes.Structure, ctypes.Union):
            return StructView(self)
        if _is(self.ctype, ctypes.Array):
            return ArrayView(self)
        raw = self.raw()
        return self.ctype.from_buffer_copy(raw).value if self.ctype is not None else raw

    def snapshot(self, raw: bytes | None = None) -> Any:
        """The value as a plain Python object: an int, a ctypes structure, a list, bytes."""
        raw = self.raw() if raw is None else raw
        if self.ctype is None:
            return raw
        if _is(self.ctype, ctypes.Array):
            elem = self.ctype._type_
            size = ctypes.sizeof(elem)
            return [self.inner(i * size, elem, "").snapshot(raw[i * size:(i + 1) * size])
                    for i in range(self.ctype._length_)]
        value = self.ctype.from_buffer_copy(raw)
        return value.value if isinstance(value, ctypes._SimpleCData) else value

    def set(self, value: Any) -> None:
        if reason := self.storage.frozen(self.section):
            raise FrozenGlobalError([Diagnostic(None, f"global {self.label!r} is in {self.section}, "
                                                      f"which {reason}")])
        self.storage.write(self.section, self.offset, self.encode(value))

    def encode(self, value: Any) -> bytes:
        """`value` as the slot's bytes: ints range-checked to the width, a struct from a ctypes
        object, bytes or a dict of fields, an array from a list of its length."""
        what = f"global {self.label!r}"
        if isinstance(value, (StructView, ArrayView)):
            value = bytes(value)
        if _is(self.ctype, ctypes.Array) and isinstance(value, (list, tuple)):
            n, elem = self.ctype._length_, self.ctype._type_
            if len(value) != n:
                raise ValueError(f"{what} holds {n} elements, the value has {len(value)}")
            size = ctypes.sizeof(elem)
            return b"".join(self.inner(i * size, elem, f"[{i}]").encode(v) for i, v in enumerate(value))
        if _is(self.ctype, ctypes.Structure, ctypes.Union) and isinstance(value, dict):
            buf = bytearray(self.size)
            members = {name: (off, t) for name, off, t in fields(self.ctype)}
            for name, v in value.items():
                if name not in members:
                    raise AttributeError(f"{what} has no field {name!r} (fields: {', '.join(members)})")
                off, t = members[name]
                buf[off:off + ctypes.sizeof(t)] = self.inner(off, t, f".{name}").encode(v)
            return bytes(buf)
        if _is(self.ctype, ctypes.c_float, ctypes.c_double) and isinstance(value, (int, float)):
            return bytes(self.ctype(value))
        return pack(value, self.size, what + " value")


class StructView:
    """A struct global (or a struct inside one), read and written in place: `view.x` reads the
    field now, `view.x = 1` writes its bytes only.  `copy()` is a snapshot (the ctypes structure
    BTF describes); `bytes(view)` its bytes.  Fields are also items: `view["x"]`."""

    __slots__ = ("_slot",)

    def __init__(self, slot: _Slot) -> None:
        object.__setattr__(self, "_slot", slot)

    def _field(self, name: str) -> _Slot:
        for field, off, t in fields(self._slot.ctype):
            if field == name:
                return self._slot.inner(off, t, f".{name}")
        known = ", ".join(n for n, _, _ in fields(self._slot.ctype))
        raise AttributeError(f"{self._slot.label} ({self._slot.ctype.__name__}) has no field "
                             f"{name!r} (fields: {known})")

    def __getattr__(self, name: str) -> Any:
        if name == "_slot" or name.startswith("__"):   # copy/pickle probing a half-made view
            raise AttributeError(name)
        return self._field(name).get()

    def __setattr__(self, name: str, value: Any) -> None:
        self._field(name).set(value)

    def __getitem__(self, name: str) -> Any:
        return self._field(name).get()

    def __setitem__(self, name: str, value: Any) -> None:
        self._field(name).set(value)

    def __dir__(self) -> list[str]:
        return [n for n, _, _ in fields(self._slot.ctype)] + ["copy"]

    def copy(self) -> Any:
        return self._slot.snapshot()

    def __bytes__(self) -> bytes:
        return self._slot.raw()

    def __eq__(self, other: Any) -> bool:
        return _same_bytes(self, other)

    __hash__ = None  # mutable, like the structure it shows

    def __repr__(self) -> str:
        return repr(self.copy())


class ArrayView:
    """An array global (or an array inside one), read and written in place: indexes and slices
    read and write elements, `len`, iteration and `==` a list work; `copy()` is a list."""

    __slots__ = ("_slot",)

    def __init__(self, slot: _Slot) -> None:
        self._slot = slot

    def __len__(self) -> int:
        return self._slot.ctype._length_

    def _element(self, index: int) -> _Slot:
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"{self._slot.label} indexes are ints, not {type(index).__name__}")
        if not -n <= index < n:
            raise IndexError(f"{self._slot.label}[{index}]: the array has {n} elements")
        index %= n
        elem = self._slot.ctype._type_
        return self._slot.inner(index * ctypes.sizeof(elem), elem, f"[{index}]")

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self.copy()[index]
        return self._element(index).get()

    def __setitem__(self, index: int | slice, value: Any) -> None:
        if not isinstance(index, slice):
            self._element(index).set(value)
            return
        positions = range(len(self))[index]
        values = list(value)
        if len(values) != len(positions):
            raise ValueError(f"{self._slot.label}[{index.start}:{index.stop}:{index.step}] has "
                             f"{len(positions)} elements, the value {len(values)}")
        for i, v in zip(positions, values):
            self._element(i).set(v)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.copy())

    def copy(self) -> list:
        return self._slot.snapshot()

    def __bytes__(self) -> bytes:
        return self._slot.raw()

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, (list, tuple)):
            return self.copy() == list(other)
        return _same_bytes(self, other)

    __hash__ = None

    def __repr__(self) -> str:
        return repr(self.copy())


def _same_bytes(view: Any, other: Any) -> Any:
    if isinstance(other, (StructView, ArrayView, bytes, bytearray, memoryview,
                          ctypes.Structure, ctypes.Union, ctypes.Array)):
        return bytes(view) == bytes(other)
    return NotImplemented


# --- by name ----------------------------------------------------------------------------------------
class Globals(Mapping):
    """An object's globals by name, as attributes (`g.count`) and items (`g["count"]`); see the
    module docstring.  `repr` shows name=value for each."""

    def __init__(self, variables: Mapping[str, GlobalVar], storage: SectionStorage) -> None:
        object.__setattr__(self, "_vars", dict(variables))
        object.__setattr__(self, "_storage", storage)

    def _slot(self, name: str) -> _Slot:
        var = self._vars[name]
        ctype = var.ctype or _fallback(var.size)
        return _Slot(self._storage, var.section, var.offset, var.size, ctype, name)

    def _unknown(self, name: str) -> str:
        return f"no global variable {name!r} (globals: {', '.join(self._vars) or 'none'})"

    def __getitem__(self, name: str) -> Any:
        if name not in self._vars:
            raise KeyError(self._unknown(name))
        return self._slot(name).get()

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in self._vars:
            raise KeyError(self._unknown(name))
        self._slot(name).set(value)

    def __getattr__(self, name: str) -> Any:
        if name in ("_vars", "_storage") or name.startswith("__"):   # copy/pickle, half-made
            raise AttributeError(name)
        if name not in self._vars:
            raise AttributeError(self._unknown(name))
        return self._slot(name).get()

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._vars:
            raise AttributeError(self._unknown(name))
        self._slot(name).set(value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._vars))

    def __iter__(self) -> Iterator[str]:
        return iter(self._vars)

    def __len__(self) -> int:
        return len(self._vars)

    def variable(self, name: str) -> GlobalVar:
        """Where `name` is and what type it has."""
        if name not in self._vars:
            raise KeyError(self._unknown(name))
        return self._vars[name]

    def __repr__(self) -> str:
        return "Globals(" + ", ".join(f"{k}={self._slot(k).snapshot()!r}" for k in self._vars) + ")"


class ViewSections:
    """Sections held by maps that hand out their value's live bytes (`m.view(0)`, as the engine's
    arrays do): reads and writes go straight to the memory programs use, nothing is frozen (the
    engine reads `.rodata` from memory on every access)."""

    def __init__(self, maps: Mapping[str, Any]) -> None:
        self._maps = maps

    def read(self, section: str) -> bytes:
        return bytes(self._maps[section].view(0))

    def write(self, section: str, offset: int, data: bytes) -> None:
        self._maps[section].view(0)[offset:offset + len(data)] = data

    def frozen(self, section: str) -> str:
        return ""


class _SpecSections:
    """The initial bytes of a spec's data sections, before anything is loaded."""

    def __init__(self, obj: Any) -> None:
        self.data: dict[str, bytearray] = {}
        self._obj = obj

    def _buf(self, section: str) -> bytearray:
        if section not in self.data:
            spec = self._obj.map(section)
            self.data[section] = bytearray((spec.data or b"").ljust(spec.value_size, b"\0"))
        return self.data[section]

    def read(self, section: str) -> bytes:
        return bytes(self._buf(section))

    def write(self, section: str, offset: int, data: bytes) -> None:
        self._buf(section)[offset:offset + len(data)] = data

    def frozen(self, section: str) -> str:
        return ""


def with_globals(obj: Any, values: Mapping[str, Any]) -> Any:
    """A copy of `obj` whose data sections start with `values` written in, typed as `Globals`
    writes them: the only way to set `.rodata` for the kernel.  The caller's object is left as
    it was (the spec is pure data)."""
    variables = global_vars(obj)
    if unknown := [name for name in values if name not in variables]:
        raise LoadError([Diagnostic(None, f"the object has no global variable {unknown[0]!r}",
                                    f"its globals: {', '.join(variables) or 'none'}")])
    storage = _SpecSections(obj)
    g = Globals(variables, storage)
    for name, value in values.items():
        g[name] = value
    maps = [dataclasses.replace(m, data=bytes(storage.data[m.name])) if m.name in storage.data else m
            for m in obj.maps]
    return dataclasses.replace(obj, maps=maps)
