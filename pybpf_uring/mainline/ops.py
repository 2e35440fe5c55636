"""The object side of a loop: its ops variables, read from its BTF and relocations (pure data).

A loop_step object defines `SEC(".struct_ops.link") struct io_uring_bpf_ops NAME = {
.loop_step = (void *)PROGRAM }` (a Python `@loop_step` program gets the same from the
compiler); `ops_specs` reads each such variable, and `choose_ops` picks the one to attach.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..bpf import btf as btfmod
from ..diagnostics import Diagnostic
from ..errors import LoadError
from ..bpf.objfile import BpfObject
from .support import OPS_TYPE

OPS_SECTIONS = (".struct_ops.link", ".struct_ops")


def error(message: str, hint: str = "") -> LoadError:
    """An object that does not fit the attach asked of it (one diagnostic, no location)."""
    return LoadError([Diagnostic(None, message, hint)])


@dataclass(frozen=True)
class OpsSpec:
    """An ops variable of an object (`SEC(".struct_ops.link") struct io_uring_bpf_ops x = {...}`):
    its name, its struct's name, the bytes it was initialised with, and for each function-pointer
    member the program it points at."""

    name: str
    section: str
    type_name: str
    members: tuple[btfmod.Member, ...]
    sizes: Mapping[str, int]
    data: bytes
    programs: Mapping[str, str]      # member name → program name

    @property
    def link(self) -> bool:
        return self.section == ".struct_ops.link"


def ops_specs(obj: Any) -> list[OpsSpec]:
    """The struct_ops variables of `obj`, read from its BTF DATASECs and the relocations of
    their section (each function-pointer member is an R_BPF_64_ABS64 against the program)."""
    btf = obj.btf
    if btf is None:
        return []
    sections = {s.name: s for s in obj.sections}
    out = []
    for t in btf.types:
        if not isinstance(t, btfmod.Datasec) or t.name not in OPS_SECTIONS or t.name not in sections:
            continue
        sec = sections[t.name]
        relocs = {off: obj.symbols[sym] for off, sym, _type in obj.relocation_records.get(sec.index, [])}
        by_name = {s.name: s for s in obj.symbols if s.section == sec.index and s.type == "object"}
        for v in t.vars:
            var = btf[v.type]
            st = btf[btf.resolve(var.type)]
            if not isinstance(st, btfmod.Struct):
                raise error(f"struct_ops variable {var.name!r} is a {st.kind}, not a struct")
            start = by_name[var.name].value if var.name in by_name else v.offset
            progs = {}
            for m in st.members:
                sym = relocs.get(start + m.offset)
                if sym is not None:
                    progs[m.name] = sym.name
            sizes = {m.name: btf.size_of(m.type) for m in st.members}
            out.append(OpsSpec(var.name, t.name, st.name, st.members, sizes,
                               sec.data[start:start + st.size], progs))
    return out


def as_object(obj: Any) -> Any:
    """A BpfObject from what a user has at hand: the object itself, a `@loop_step` function
    (compiled here), a path to an ELF file, or its bytes."""
    if isinstance(obj, BpfObject):
        return obj
    if callable(getattr(obj, "compile", None)):
        return obj.compile()
    return BpfObject.read(obj)


def choose_ops(obj: Any, name: str | None) -> OpsSpec:
    found = ops_specs(obj)
    mine = [s for s in found if s.type_name == OPS_TYPE]
    if name is not None:
        chosen = [s for s in found if s.name == name]
        if not chosen:
            raise error(f"the object has no struct_ops variable {name!r}",
                         f"its ops variables: {', '.join(s.name for s in found) or 'none'}")
        if chosen[0].type_name != OPS_TYPE:
            raise error(f"struct_ops variable {name!r} is a `struct {chosen[0].type_name}`, not "
                         f"`struct {OPS_TYPE}`")
        return chosen[0]
    if len(mine) != 1:
        what = "no" if not mine else f"{len(mine)}"
        raise error(f"the object has {what} `struct {OPS_TYPE}` variables in "
                     f"{' or '.join(OPS_SECTIONS)}" + ("; name one with ops=..." if mine else ""),
                     "a loop_step object defines SEC(\".struct_ops.link\") struct "
                     f"{OPS_TYPE} NAME = {{ .loop_step = (void *)PROGRAM }}")
    return mine[0]
