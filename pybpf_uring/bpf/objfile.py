"""Read: a BPF ELF object → a pure-data spec of its programs, maps and relocations.

This is cilium/ebpf's "spec" idea: `BpfObject` says what the ELF describes and creates nothing;
the loader turns it into kernel objects and the engine runs it.  Reading happens in two steps:

1. `ElfRecords` pulls everything out of pyelftools into plain records (sections with their bytes,
   symbols, relocations), checking the sizes pyelftools trusts blindly.  Any pyelftools
   exception becomes an `ObjectError`, so a corrupt file never shows a library traceback.
2. The spec is built from those records as libbpf does it: every function symbol in an
   executable section other than `.text` is a program whose kind comes from the section name
   (`SECTION_KINDS`); `.text` functions are subprograms; `.maps` variables are decoded from BTF;
   `.data`/`.rodata`/`.bss` sections become single-entry array maps; each relocation is
   classified by the instruction it patches and the section of its symbol.

Every instruction index here counts 8-byte *slots* (a lddw is two), as the kernel, the
verifier log and `.BTF.ext` do.  `ProgramSpec.linked()` is libbpf's "append the subprograms
the program calls and fix the call offsets" step, which both the loader and the engine need;
`BpfObject.kernel_btf()` is libbpf's BTF sanitising, so the loader can hand the kernel the
object's BTF with each program's func_info and line_info (the verifier log then quotes source).
"""
from __future__ import annotations

import bisect
import io
import os
import re
import struct
from dataclasses import dataclass, field, replace
from typing import Iterable

from . import btf as btfmod
from .. import display, hooks
from . import isa
from ..diagnostics import user_facing
from ..errors import ObjectError
from ..limits import MAX_MAP_ENTRIES
from .isa import Instruction
from ..uapi import BPF_F_RDONLY_PROG, BPF_MAP_TYPE_ARRAY, MAP_TYPE_NAMES

__all__ = ["BpfObject", "ProgramSpec", "MapSpec", "Relocation", "Section", "Symbol",
           "ObjectError", "program_kind", "read_elf", "read_object_file", "MAX_OBJECT_BYTES", "ElfRecords", "SECTION_KINDS",
           "UNKNOWN_KIND", "MAP_TYPE_NAMES"]

EM_BPF = 247
SHT_PROGBITS, SHT_SYMTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 1, 2, 4, 8, 9
SHF_WRITE, SHF_EXECINSTR = 0x1, 0x4
SHN_UNDEF = 0

# Section name → (program kind, sleepable), as libbpf's section_defs: an exact name, or a
# prefix ending in "/" that must be followed by something.  The first group is what this
# project compiles and loads; the second names other common libbpf kinds so their objects can
# still be read and disassembled (the loader says it cannot load them).  Any other executable
# section gets kind "unknown", as libbpf too reads it and only fails to load it.
SECTION_KINDS: list[tuple[str, str, bool]] = [
    ("syscall", "syscall", True),
    ("socket", "socket_filter", False),
    ("socket/", "socket_filter", False),
    ("tracepoint/", "tracepoint", False),
    ("tp/", "tracepoint", False),
    ("iouring", "iouring", False),
    ("iouring/", "iouring", False),
    ("iouring.s/", "iouring", True),
    ("struct_ops", "struct_ops", False),
    ("struct_ops/", "struct_ops", False),
    ("struct_ops.s/", "struct_ops", True),
    # other libbpf kinds
    ("xdp", "xdp", False),
    ("xdp/", "xdp", False),
    ("tc", "sched_cls", False),
    ("classifier", "sched_cls", False),
    ("kprobe/", "kprobe", False),
    ("kretprobe/", "kprobe", False),
    ("uprobe/", "kprobe", False),
    ("raw_tp/", "raw_tracepoint", False),
    ("raw_tracepoint/", "raw_tracepoint", False),
    ("tp_btf/", "tracing", False),
    ("fentry/", "tracing", False),
    ("fexit/", "tracing", False),
    ("fentry.s/", "tracing", True),
    ("fexit.s/", "tracing", True),
    ("lsm/", "lsm", False),
    ("lsm.s/", "lsm", True),
    ("cgroup_skb/ingress", "cgroup_skb", False),
    ("cgroup_skb/egress", "cgroup_skb", False),
    ("perf_event", "perf_event", False),
]
UNKNOWN_KIND = "unknown"

_DATA_SECTION = re.compile(r"^\.(data|rodata|bss)(\..*)?$")


def program_kind(section: str) -> tuple[str, bool] | None:
    """(kind, sleepable) for a program section name, None if it names no kind we know."""
    for pattern, kind, sleepable in SECTION_KINDS:
        if pattern.endswith("/"):
            if section.startswith(pattern) and len(section) > len(pattern):
                return kind, sleepable
        elif section == pattern:
            return kind, sleepable
    return None


# --- records ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    size: int
    data: bytes = field(repr=False)
    link: int = 0
    info: int = 0

    @property
    def executable(self) -> bool:
        return self.type == SHT_PROGBITS and bool(self.flags & SHF_EXECINSTR)


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    type: str       # "func", "object", "section", "notype", "file"
    bind: str       # "local", "global", "weak"
    section: int    # section index (0: undefined)


@dataclass(frozen=True)
class Relocation:
    """Instruction `insn_index` (a slot, relative to its program) refers to `symbol`.

    kind: "map" (a lddw of a `.maps` variable: the loader puts the map fd in it),
    "data" (a lddw into `.data`/`.rodata`/`.bss`: `symbol` is the section, which is also the
    name of its MapSpec; the byte offset is already in the instruction's imm; `target` is the
    variable's offset, `variable` its name),
    "call" (a BPF-to-BPF call; `target` is the callee's slot in `.text`, and after `linked()`
    its slot in the linked program),
    "func" (a lddw of a subprogram's address, for callbacks; `target` as for "call"),
    "kfunc" (a call of an undefined function: a kernel function), "extern" (any other
    undefined symbol)."""

    insn_index: int
    symbol: str
    kind: str
    target: int = 0
    variable: str = ""   # for "data": the variable's own name, when it has one


@dataclass(frozen=True)
class MapSpec:
    """A map the object asks for (from a BTF-defined `.maps` variable or a data section)."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    key_type_id: int = 0
    value_type_id: int = 0
    data: bytes | None = field(default=None, repr=False)  # initial value of a data-section map
    pinning: int = 0
    map_extra: int = 0
    numa_node: int = 0

    @property
    def type_name(self) -> str:
        return MAP_TYPE_NAMES.get(self.type, str(self.type))


@dataclass(frozen=True)
class ProgramSpec:
    """One program (or `.text` subprogram) as the object describes it.

    `instructions` and everything indexing them start at the function's own first slot;
    `offset` is that slot within `section`.  `subprograms` are the object's `.text` functions,
    kept so `linked()` can append the ones this program calls."""

    name: str
    section: str
    kind: str
    instructions: tuple[Instruction, ...]
    relocations: tuple[Relocation, ...] = ()
    line_info: tuple[btfmod.LineInfo, ...] = ()
    func_info: tuple[btfmod.FuncInfo, ...] = ()
    sleepable: bool = False
    offset: int = 0
    core_relos: tuple[btfmod.CoreRelo, ...] = ()   # CO-RE: patched by libbpf, not by us
    subprograms: tuple["ProgramSpec", ...] = field(default=(), repr=False, compare=False)

    @property
    def slot_count(self) -> int:
        return isa.slot_count(self.instructions)

    def instruction_at(self, slot: int) -> Instruction:
        """The instruction starting at `slot` (KeyError inside a lddw or past the end)."""
        return _by_slot(self.instructions)[slot]

    def encode(self) -> bytes:
        """The instructions as the kernel takes them (8 bytes a slot)."""
        return isa.encode(self.instructions)

    def line_at(self, slot: int) -> btfmod.LineInfo | None:
        """The source line of the instruction at `slot` (as a verifier log or an engine fault
        numbers it): the last line_info record at or before it within the same function, so
        a subprogram's first instructions never borrow the caller's line."""
        start = max((f.insn for f in self.func_info if f.insn <= slot), default=0)
        best = None
        for li in self.line_info:
            if start <= li.insn <= slot and (best is None or li.insn >= best.insn):
                best = li
        return best

    def disasm(self, source: bool = False, relocations: bool = False) -> str:
        """This program in llvm-objdump's format (`disasm.disassemble_program`); with
        `source`, each source line before the instructions it starts; with `relocations`,
        what each relocation refers to."""
        from .disasm import disassemble_program
        return disassemble_program(self, source, relocations)

    def __repr__(self) -> str:
        flags = ", sleepable" if self.sleepable else ""
        return (f"<ProgramSpec {self.name!r} section {self.section!r} ({self.kind}{flags}): "
                f"{self.slot_count} slots, {len(self.relocations)} relocations>")

    def linked(self) -> "ProgramSpec":
        """What libbpf hands the kernel: this program, then every `.text` function it calls
        (transitively, each once, in the order first called), each pseudo call and function
        address fixed to its relative slot; relocations, line_info and func_info re-based."""
        return _Linker(self).link()

    _repr_html_ = display.program_html   # Jupyter's view: linked disassembly with source lines


def _by_slot(insns: Iterable[Instruction]) -> dict[int, Instruction]:
    insns = list(insns)
    return dict(isa.with_slots(insns))


class _Linker:
    def __init__(self, prog: ProgramSpec) -> None:
        self.prog = prog
        self.text = {f.offset: f for f in prog.subprograms}
        self.offsets = sorted(self.text)   # bisected: a program may call thousands of functions
        self.pieces: list[tuple[ProgramSpec, int]] = [(prog, 0)]   # (function, base slot)
        self.base: dict[int, int] = {}                              # .text offset → base
        if prog.section == ".text":   # a subprogram linked on its own may call itself
            self.base[prog.offset] = 0
        self.size = prog.slot_count

    def callee(self, target: int, where: str) -> int:
        """The linked slot of `.text` slot `target`, appending its function if needed."""
        at = bisect.bisect_right(self.offsets, target) - 1
        func = self.text[self.offsets[at]] if at >= 0 else None
        if func is None or target >= func.offset + func.slot_count:
            raise ObjectError(f"{where} calls .text slot {target}, where no function is")
        if func.offset not in self.base:
            self.base[func.offset] = self.size
            self.pieces.append((func, self.size))
            self.size += func.slot_count
        return self.base[func.offset] + target - func.offset

    def link(self) -> ProgramSpec:
        insns: list[Instruction] = []
        relocs: list[Relocation] = []
        lines: list[btfmod.LineInfo] = []
        funcs: list[btfmod.FuncInfo] = []
        cores: list[btfmod.CoreRelo] = []
        i = 0
        while i < len(self.pieces):   # pieces grow while we walk them
            func, base = self.pieces[i]
            code = _by_slot(func.instructions)
            for rel in func.relocations:
                slot = base + rel.insn_index
                if rel.kind in ("call", "func"):
                    target = self.callee(rel.target, f"{func.name} (slot {rel.insn_index})")
                    code[rel.insn_index] = _patch_call(code[rel.insn_index], target - slot - 1)
                    rel = replace(rel, target=target)
                relocs.append(replace(rel, insn_index=slot))
            insns.extend(code[s] for s in sorted(code))
            lines += [replace(li, insn=li.insn + base) for li in func.line_info]
            funcs += [replace(fi, insn=fi.insn + base) for fi in func.func_info]
            cores += [replace(c, insn=c.insn + base) for c in func.core_relos]
            i += 1
        return replace(self.prog, instructions=tuple(insns), relocations=tuple(relocs),
                       line_info=tuple(lines), func_info=tuple(funcs), core_relos=tuple(cores),
                       subprograms=())


def _patch_call(ins: Instruction, rel: int) -> Instruction:
    if ins.is_wide:   # address of a function: src says "imm is a relative slot"
        return Instruction(ins.opcode, ins.dst, isa.PSEUDO_FUNC, ins.off, rel, 0)
    return Instruction(ins.opcode, ins.dst, isa.CALL_PSEUDO, ins.off, rel)


# --- the object -------------------------------------------------------------------------------
@dataclass
class BpfObject:
    """Everything a BPF ELF object describes.  `elf` keeps the original bytes (write() saves
    them unchanged, so a compiled object can be inspected with llvm-objdump or bpftool)."""

    elf: bytes = field(repr=False)
    programs: list[ProgramSpec]
    maps: list[MapSpec]
    license: str
    btf: btfmod.Btf | None = field(default=None, repr=False)
    btf_ext: btfmod.BtfExt | None = field(default=None, repr=False)
    subprograms: list[ProgramSpec] = field(default_factory=list, repr=False)
    sections: list[Section] = field(default_factory=list, repr=False)
    symbols: list[Symbol] = field(default_factory=list, repr=False)
    path: str | None = None
    # the ELF's relocation entries, by target section index: (offset, symbol index, type)
    relocation_records: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, source: str | os.PathLike | bytes | bytearray) -> "BpfObject":
        """Read an object from a path or from its bytes; ObjectError if it is not one."""
        path = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        else:
            path = os.fspath(source)
            data = read_object_file(path)
        try:
            return _build(data, path)
        except ObjectError as exc:
            if exc.path is None and path is not None:
                raise ObjectError(exc.message, path) from None
            raise

    def write(self, path: str | os.PathLike) -> None:
        """Save the ELF exactly as read (for llvm-objdump, bpftool, libbpf)."""
        with open(path, "wb") as f:
            f.write(self.elf)

    def program(self, name: str) -> ProgramSpec:
        for p in self.programs:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.programs) or "none"
        raise KeyError(f"no program named {name!r} in the object (programs: {known})")

    def map(self, name: str) -> MapSpec:
        for m in self.maps:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.maps) or "none"
        raise KeyError(f"no map named {name!r} in the object (maps: {known})")

    @user_facing
    def load(self, **options):
        """Create the maps and load the programs into the running kernel: `load.load(self,
        **options)`, a LoadedObject usable as a context manager.  The spec stays pure data;
        this is only a shortcut to the loader stage, which the package installs (hooks.py says
        why objfile does not import it)."""
        return hooks.load_object(self, **options)

    def kernel_btf(self) -> bytes | None:
        """The object's BTF with libbpf's fix-ups (DATASEC sizes and offsets from the ELF,
        externs made loadable), ready for BPF_BTF_LOAD; None without BTF.  Line and func info
        of the programs (`btf.encode_line_info`) index its strings."""
        if self.btf is None:
            return None
        names = {s.index: s.name for s in self.sections}
        sizes = {s.name: s.size for s in self.sections if s.name}
        offsets = {(names.get(sym.section, ""), sym.name): sym.value for sym in self.symbols
                   if sym.type == "object" and sym.section in names}
        try:
            return self.btf.for_kernel(sizes, offsets)
        except btfmod.BtfError as exc:
            raise ObjectError(f"BTF the kernel cannot take: {exc}") from None

    def disasm(self, relocations: bool = False, source: bool = False) -> str:
        """The whole object as `llvm-objdump -d` (`-dr` with relocations) prints it, without
        the file-name line (see `disasm.disassemble`); with `source`, each program linked as it
        is loaded, its source lines before the instructions they start (`disasm -S`)."""
        if source:
            return "".join(p.linked().disasm(source=True, relocations=relocations) for p in self.programs)
        from .disasm import disassemble
        return disassemble(self, relocations=relocations)

    def __repr__(self) -> str:
        return (f"<BpfObject programs={[p.name for p in self.programs]} "
                f"maps={[m.name for m in self.maps]} license={self.license!r}>")

    _repr_html_ = display.object_html    # Jupyter's view: programs, maps, disassembly with source


# --- step 1: pyelftools → plain records ------------------------------------------------------
_SYM_TYPES = {"STT_FUNC": "func", "STT_OBJECT": "object", "STT_SECTION": "section",
              "STT_NOTYPE": "notype", "STT_FILE": "file"}
_SYM_BINDS = {"STB_LOCAL": "local", "STB_GLOBAL": "global", "STB_WEAK": "weak"}


@dataclass
class ElfRecords:
    """Sections, symbols and relocations of an ELF, before any BPF meaning is given to them
    (enough for `disasm.disassemble` on objects that are not valid programs)."""

    sections: list[Section]
    symbols: list[Symbol]
    relocations: dict[int, list[tuple[int, int, int]]]   # target section → (offset, sym, type)
    _defined: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def defined(self, section: int, type: str) -> tuple[list[Symbol], list[int]]:
        """The `type` symbols of `section` sorted by value (table order within a value), and
        their values: relocations look symbols up by address, and an object may have thousands
        of both, so the lookups bisect instead of scanning the table.  Made once per section."""
        key = (section, type)
        if key not in self._defined:
            syms = sorted((s for s in self.symbols if s.section == section and s.type == type),
                          key=lambda s: s.value)
            self._defined[key] = (syms, [s.value for s in syms])
        return self._defined[key]


def read_elf(source: str | os.PathLike | bytes) -> ElfRecords:
    """The plain records of any EM_BPF relocatable ELF; ObjectError if it is not one."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read_elf(bytes(source))
    path = os.fspath(source)
    data = read_object_file(path)
    try:
        return _read_elf(data)
    except ObjectError as exc:
        raise ObjectError(exc.message, exc.path or path) from None


# A BPF object is a few KB to a few MB (the kernel takes at most 1M instructions, 8 MB of code);
# anything larger is not one, and a device such as /dev/zero never ends.
MAX_OBJECT_BYTES = 64 << 20


def read_object_file(path: str) -> bytes:
    """The bytes of the object at `path`, read only as far as they can be one: the ELF magic is
    checked in the first bytes before the rest is read, and at most MAX_OBJECT_BYTES are; an
    ObjectError naming the file otherwise (never an unbounded read of a device or a pipe)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if head != b"\x7fELF":
                raise ObjectError("not an ELF file (no \\x7fELF magic)" if len(head) == 4 else
                                  f"file is {len(head)} bytes, too short for an ELF header", path)
            data = head + f.read(MAX_OBJECT_BYTES + 1 - len(head))
    except OSError as exc:
        raise ObjectError(f"cannot read: {exc.strerror or exc}", path) from None
    if len(data) > MAX_OBJECT_BYTES:
        raise ObjectError(f"larger than {MAX_OBJECT_BYTES >> 20} MiB, the most read as a BPF "
                          "object (no BPF object comes near it)", path)
    return data


def _read_elf(data: bytes) -> ElfRecords:
    if len(data) < 64:
        raise ObjectError(f"file is {len(data)} bytes, too short for an ELF header")
    if data[:4] != b"\x7fELF":
        raise ObjectError("not an ELF file (no \\x7fELF magic)")
    if data[4] != 2:
        raise ObjectError("not a 64-bit ELF file: BPF objects are ELF64")
    if data[5] != 1:
        raise ObjectError("not a little-endian ELF file (big-endian BPF is not supported)")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    if shoff + shentsize * shnum > len(data):
        raise ObjectError(f"the section header table ({shnum} entries at offset {shoff}) runs past "
                          f"the end of the {len(data)}-byte file (truncated?)")
    try:
        from elftools.elf.elffile import ELFFile
        elf = ELFFile(io.BytesIO(data))
        if elf["e_machine"] not in ("EM_BPF", EM_BPF):
            raise ObjectError(f"ELF machine is {elf['e_machine']}, not EM_BPF: not a BPF object")
        if elf["e_type"] != "ET_REL":
            raise ObjectError(f"ELF type is {elf['e_type']}, not a relocatable object (ET_REL)")
        return _records(elf, data)
    except ObjectError:
        raise
    except Exception as exc:  # pyelftools raises ELFError, construct errors, struct.error, ...
        raise ObjectError(f"malformed ELF: {type(exc).__name__}: {exc}") from None


def _records(elf, data: bytes) -> ElfRecords:
    sections: list[Section] = []
    raw_sections = list(elf.iter_sections())
    for i, sec in enumerate(raw_sections):
        sh_type, off, size = sec["sh_type"], sec["sh_offset"], sec["sh_size"]
        type_num = _SH_TYPES.get(sh_type, sh_type if isinstance(sh_type, int) else -1)
        if type_num not in (SHT_NOBITS, 0) and off + size > len(data):
            raise ObjectError(f"section {sec.name or i!r} ({size} bytes at offset {off}) runs "
                              f"past the end of the {len(data)}-byte file")
        body = b"" if type_num in (SHT_NOBITS, 0) else data[off:off + size]
        sections.append(Section(i, sec.name, type_num, sec["sh_flags"], size, body,
                                sec["sh_link"], sec["sh_info"]))
    symbols: list[Symbol] = []
    symtab = elf.get_section_by_name(".symtab")
    if symtab is not None and not hasattr(symtab, "iter_symbols"):
        raise ObjectError(".symtab is not a symbol table (its section type is "
                          f"{symtab['sh_type']})")
    if symtab is not None:
        for s in symtab.iter_symbols():
            shndx = s["st_shndx"]
            shndx = shndx if isinstance(shndx, int) else (0 if shndx == "SHN_UNDEF" else -1)
            symbols.append(Symbol(s.name, s["st_value"], s["st_size"],
                                  _SYM_TYPES.get(s["st_info"]["type"], "other"),
                                  _SYM_BINDS.get(s["st_info"]["bind"], "other"), shndx))
    relocations: dict[int, list[tuple[int, int, int]]] = {}
    for sec, raw in zip(sections, raw_sections):
        if sec.type not in (SHT_REL, SHT_RELA):
            continue
        if not 0 < sec.info < len(sections):
            raise ObjectError(f"relocation section {sec.name!r} targets section {sec.info}, "
                              "which does not exist")
        entry = 24 if sec.type == SHT_RELA else 16
        if sec.size % entry:
            raise ObjectError(f"relocation section {sec.name!r} is {sec.size} bytes, not a "
                              f"multiple of its {entry}-byte entries")
        relocations[sec.info] = [(r["r_offset"], r["r_info_sym"], r["r_info_type"])
                                 for r in raw.iter_relocations()]
    return ElfRecords(sections, symbols, relocations)


_SH_TYPES = {"SHT_NULL": 0, "SHT_PROGBITS": SHT_PROGBITS, "SHT_SYMTAB": SHT_SYMTAB,
             "SHT_STRTAB": 3, "SHT_RELA": SHT_RELA, "SHT_NOBITS": SHT_NOBITS, "SHT_REL": SHT_REL}


# --- step 2: records → spec -------------------------------------------------------------------
def _build(data: bytes, path: str | None) -> BpfObject:
    elf = _read_elf(data)
    by_name = {s.name: s for s in elf.sections}
    license = _license(by_name.get("license"))
    btf, ext = _read_btf(by_name)
    if "maps" in by_name and by_name["maps"].size:
        raise ObjectError("legacy `maps` section (struct bpf_map_def) is not supported: define "
                          "maps in `.maps` with BTF (__uint/__type members, compiled with -g)")
    maps = _btf_maps(elf, by_name.get(".maps"), btf) + _data_maps(elf)
    text_sec = by_name.get(".text")
    text: list[ProgramSpec] = []
    if text_sec is not None and text_sec.executable and text_sec.size:
        text = _functions(elf, text_sec, ext)
    programs: list[ProgramSpec] = []
    for sec in elf.sections:
        if not sec.executable or sec.name == ".text" or sec.size == 0:
            continue
        kind, sleepable = program_kind(sec.name) or (UNKNOWN_KIND, False)
        programs += [replace(f, kind=kind, sleepable=sleepable) for f in _functions(elf, sec, ext)]
    # every function can be linked: each carries the .text functions it may call
    subprograms = tuple(text)
    text = [replace(f, subprograms=subprograms) for f in text]
    programs = [replace(p, subprograms=subprograms) for p in programs]
    return BpfObject(data, programs, maps, license, btf, ext, text, elf.sections, elf.symbols, path,
                     elf.relocations)


def _license(sec: Section | None) -> str:
    if sec is None:
        return ""
    return sec.data.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _read_btf(by_name: dict[str, Section]):
    btf = ext = None
    try:
        if ".BTF" in by_name:
            btf = btfmod.parse_btf(by_name[".BTF"].data)
            if ".BTF.ext" in by_name:
                ext = btfmod.parse_btf_ext(by_name[".BTF.ext"].data, btf)
    except btfmod.BtfError as exc:
        raise ObjectError(f"corrupt BTF: {exc}") from None
    return btf, ext


def _functions(elf: ElfRecords, sec: Section, ext) -> list[ProgramSpec]:
    """The functions of an executable section, each with its instructions, relocations and
    debug records; kind/sleepable are filled in by the caller."""
    if sec.size % isa.INSN_SIZE:
        raise ObjectError(f"section {sec.name!r} is {sec.size} bytes, not a whole number of "
                          "8-byte instructions")
    syms = sorted({(s.value, s.name): s for s in elf.symbols
                   if s.section == sec.index and s.type == "func"}.values(), key=lambda s: s.value)
    if not syms:  # hand-written code without symbols: the whole section is one program
        syms = [Symbol(re.sub(r"\W", "_", sec.name), 0, sec.size, "func", "global", sec.index)]
    starts: dict[int, str] = {}   # slot → the first function starting there
    for sym in syms:
        starts.setdefault(sym.value // 8, sym.name)
    relocs = _section_relocations(elf, sec)
    reloc_slots = [slot for slot, _, _ in relocs]
    relocated = set(reloc_slots)
    lines, funcs, cores = (_ByInsn(getattr(ext, what).get(sec.name, []) if ext else [])
                           for what in ("line_info", "func_info", "core_relos"))
    out = []
    for i, sym in enumerate(syms):
        end = sym.value + sym.size if sym.size else (syms[i + 1].value if i + 1 < len(syms) else sec.size)
        if sym.value % 8 or end % 8 or end > sec.size or end <= sym.value:
            raise ObjectError(f"function {sym.name!r} ({sym.value}..{end}) does not lie on whole "
                              f"instructions inside section {sec.name!r} ({sec.size} bytes)")
        first, last = sym.value // 8, end // 8
        try:
            insns = isa.decode(sec.data[sym.value:end])
        except isa.DecodeError as exc:
            raise ObjectError(f"function {sym.name!r} in {sec.name!r}: {exc}") from None
        code = _by_slot(insns)
        mine = []   # (Relocation, its symbol or None)
        for slot, target, offset in relocs[bisect.bisect_left(reloc_slots, first):
                                           bisect.bisect_left(reloc_slots, last)]:
            if slot - first not in code:
                raise ObjectError(f"relocation at byte {offset} of {sec.name!r} points into "
                                  "the middle of a lddw")
            rel = _classify(slot - first, code[slot - first], target, elf, sec, offset)
            mine.append((rel, target))
        mine += _local_calls(insns, first, sec, relocated, starts)
        mine.sort(key=lambda pair: pair[0].insn_index)
        out.append(ProgramSpec(
            name=sym.name, section=sec.name, kind="",
            instructions=tuple(_fold_data(insns, mine)),
            relocations=tuple(rel for rel, _ in mine),
            line_info=lines.rebased(first, last), func_info=funcs.rebased(first, last),
            offset=first, core_relos=cores.rebased(first, last)))
    return out


class _ByInsn:
    """A section's .BTF.ext records (line_info, func_info, CO-RE) sorted by slot, so each
    function takes its own by bisection: a section may hold thousands of functions, and
    filtering every record for each would read it in quadratic time.  The sort is stable, so
    records of one slot keep their order (the first line of a slot is the one loaded)."""

    def __init__(self, records) -> None:
        self.records = sorted(records, key=lambda r: r.insn)
        self.keys = [r.insn for r in self.records]

    def rebased(self, first: int, last: int) -> tuple:
        """The records of slots first..last-1, numbered from the function's first slot."""
        lo, hi = bisect.bisect_left(self.keys, first), bisect.bisect_left(self.keys, last)
        return tuple(replace(r, insn=r.insn - first) for r in self.records[lo:hi])


def _section_relocations(elf: ElfRecords, sec: Section) -> list[tuple[int, Symbol, int]]:
    """(slot, symbol, byte offset) per relocation of `sec`, checked against the section and
    the symbol table; classified once the instruction is known (`_classify`)."""
    out = []
    for offset, sym_index, _rtype in elf.relocations.get(sec.index, []):
        if offset % 8 or offset >= sec.size:
            raise ObjectError(f"relocation at byte {offset} of {sec.name!r} is not on an "
                              f"instruction of the {sec.size}-byte section")
        if not 0 <= sym_index < len(elf.symbols):
            raise ObjectError(f"relocation at byte {offset} of {sec.name!r} refers to symbol "
                              f"{sym_index}, but the symbol table has {len(elf.symbols)}")
        out.append((offset // 8, elf.symbols[sym_index], offset))
    return sorted(out, key=lambda r: r[0])   # stable: entries of one slot keep their order


def _classify(index: int, ins: Instruction, sym: Symbol, elf: ElfRecords, sec: Section,
              offset: int) -> Relocation:
    where = f"relocation at byte {offset} of {sec.name!r} ({sym.name or 'section symbol'})"
    target = elf.sections[sym.section] if 0 < sym.section < len(elf.sections) else None
    if sym.section == SHN_UNDEF:
        kind = "kfunc" if ins.is_call else "extern"
        return Relocation(index, sym.name, kind)
    if target is None:
        raise ObjectError(f"{where}: symbol is in section {sym.section}, which does not exist")
    if ins.is_call:
        if target.name != ".text":
            raise ObjectError(f"{where}: calls into {target.name!r}; subprograms must be in .text")
        if ins.src != isa.CALL_PSEUDO:
            raise ObjectError(f"{where}: relocated call is not a BPF-to-BPF call (src={ins.src})")
        dest = sym.value // 8 + ins.imm + 1
        return Relocation(index, _function_at(elf, target, dest), "call", dest)
    if not ins.is_wide:
        raise ObjectError(f"{where}: patches a {ins.name}, not a call or lddw")
    if target.name == ".maps":
        if sym.type != "section":
            return Relocation(index, sym.name, "map")
        # a static map is reached through the section symbol, its offset in imm (as libbpf
        # finds it: the map whose symbol sits at that offset)
        var = _object_at(elf, target, ins.imm)
        if var is None:
            raise ObjectError(f"{where}: no map starts at offset {ins.imm} of .maps")
        return Relocation(index, var.name, "map")
    if _DATA_SECTION.match(target.name):
        var = sym if sym.type == "object" else _object_at(elf, target, ins.imm)
        return Relocation(index, target.name, "data", sym.value, var.name if var else "")
    if target.executable and target.name == ".text":
        dest = (sym.value + ins.imm) // 8
        return Relocation(index, _function_at(elf, target, dest), "func", dest)
    raise ObjectError(f"{where}: refers to section {target.name!r}, which is neither .maps, "
                      "data nor .text")


def _object_at(elf: ElfRecords, sec: Section, offset: int) -> Symbol | None:
    """The first object symbol (in table order) at byte `offset` of `sec`."""
    syms, values = elf.defined(sec.index, "object")
    at = bisect.bisect_left(values, offset)
    return syms[at] if at < len(syms) and values[at] == offset else None


def _function_at(elf: ElfRecords, sec: Section, slot: int) -> str:
    """`name` or `name+N` of `slot`: the function starting last at or before it (the first in
    table order of several at one address)."""
    syms, values = elf.defined(sec.index, "func")
    at = bisect.bisect_left(values, (slot + 1) * 8) - 1   # the last whose first slot <= slot
    if at < 0:
        return f"{sec.name}+{slot}"
    best = syms[bisect.bisect_left(values, values[at])]
    return best.name if best.value // 8 == slot else f"{best.name}+{slot - best.value // 8}"


def _local_calls(insns, first: int, sec: Section, relocated: set[int], starts: dict[int, str]) -> list:
    """Pseudo calls clang resolved itself (no relocation): within .text, target = own slot +
    imm + 1.  Expressed as "call" relocations so linking has one path."""
    out = []
    for idx, ins in isa.with_slots(insns):
        if ins.is_pseudo_call and first + idx not in relocated:
            dest = first + idx + ins.imm + 1
            if sec.name != ".text":
                # libbpf resolves such calls in .text only
                raise ObjectError(f"{sec.name!r} slot {first + idx}: BPF-to-BPF call without a "
                                  "relocation outside .text")
            name = starts.get(dest, f".text+{dest}")
            out.append((Relocation(idx, name, "call", dest), None))
    return out


def _fold_data(insns: list[Instruction], relocs: list) -> list[Instruction]:
    """A data relocation against a named variable leaves imm = 0 and the variable's offset in
    its symbol: add it, so imm is always the byte offset in the section (what libbpf does)."""
    fold = {r.insn_index: sym.value for r, sym in relocs
            if r.kind == "data" and sym is not None and sym.type != "section" and sym.value}
    if not fold:
        return insns
    out = []
    for idx, ins in isa.with_slots(insns):
        out.append(ins.with_imm(ins.imm + fold[idx]) if idx in fold else ins)
    return out


# --- maps -------------------------------------------------------------------------------------
def _btf_maps(elf: ElfRecords, sec: Section | None, btf: btfmod.Btf | None) -> list[MapSpec]:
    if sec is None:
        return []
    syms = [s for s in elf.symbols if s.section == sec.index and s.type == "object"]
    if syms and btf is None:
        raise ObjectError("maps in .maps need BTF to describe them: compile with -g")
    out = []
    variables = _map_vars(btf) if syms else {}
    for sym in sorted(syms, key=lambda s: s.value):
        var = variables.get(sym.name)
        if var is None:
            raise ObjectError(f"map {sym.name!r} has no variable in the BTF .maps section")
        try:
            out.append(_map_from_btf(btf, sym.name, var.type))
        except btfmod.BtfError as exc:
            raise ObjectError(f"map {sym.name!r}: corrupt BTF: {exc}") from None
    return out


def _map_vars(btf: btfmod.Btf) -> dict[str, btfmod.Var]:
    """The variables of the BTF `.maps` sections by name (the first of a name), found in one
    pass: an object may define thousands of maps."""
    out: dict[str, btfmod.Var] = {}
    for t in btf.find_all(".maps", "datasec"):
        for v in btf[t].vars:
            var = btf[v.type]
            if isinstance(var, btfmod.Var):
                out.setdefault(var.name, var)
    return out


def _map_from_btf(btf: btfmod.Btf, name: str, type_id: int) -> MapSpec:
    """libbpf's parse_btf_map_def: `__uint(x, N)` is `int (*x)[N]`, `__type(x, T)` is `T *x`."""
    struct = btf[btf.resolve(type_id)]
    if not isinstance(struct, btfmod.Struct):
        raise ObjectError(f"map {name!r}: its BTF type is a {struct.kind}, not a struct")
    values: dict[str, int] = {}
    key_id = value_id = 0
    for m in struct.members:
        ptr = btf[btf.resolve(m.type)]
        if not isinstance(ptr, btfmod.Ptr):
            raise ObjectError(f"map {name!r}: member {m.name!r} is a {ptr.kind}, not a pointer "
                              "(use __uint or __type)")
        if m.name in ("key", "value"):
            size = btf.size_of(ptr.type)
            if m.name == "key":
                key_id, values["key_size_of_type"] = ptr.type, size
            else:
                value_id, values["value_size_of_type"] = ptr.type, size
            continue
        if m.name == "values":
            continue  # inner map prototypes of map-in-map: not decoded
        arr = btf[btf.resolve(ptr.type)]
        if not isinstance(arr, btfmod.Array):
            raise ObjectError(f"map {name!r}: member {m.name!r} must be __uint (a pointer to "
                              f"an array), not a pointer to {arr.kind}")
        values[m.name] = arr.nelems
    for what in ("key", "value"):
        given, typed = values.get(f"{what}_size"), values.get(f"{what}_size_of_type")
        if given is not None and typed is not None and given != typed:
            raise ObjectError(f"map {name!r}: {what}_size {given} disagrees with the "
                              f"{typed}-byte {what} type")
    if "type" not in values:
        raise ObjectError(f"map {name!r} has no `type` member")
    return _fits_kernel(MapSpec(
        name, values["type"], values.get("key_size", values.get("key_size_of_type", 0)),
        values.get("value_size", values.get("value_size_of_type", 0)),
        values.get("max_entries", 0), values.get("map_flags", 0), key_id, value_id,
        None, values.get("pinning", 0), values.get("map_extra", 0), values.get("numa_node", 0)))


def _fits_kernel(spec: MapSpec) -> MapSpec:
    """BPF_MAP_CREATE takes key_size, value_size, max_entries and map_flags as u32: a map whose
    key or value type (an array of arrays, a huge `.bss`) is larger cannot be created as the
    object says, and would be silently cut to its low 32 bits on the way to the kernel."""
    for what in ("key_size", "value_size", "max_entries", "flags"):
        value = getattr(spec, what)
        if value > MAX_MAP_ENTRIES:
            raise ObjectError(f"map {spec.name!r}: {what} {value} does not fit the kernel's "
                              f"32-bit field (at most {MAX_MAP_ENTRIES})")
    return spec


def _data_maps(elf: ElfRecords) -> list[MapSpec]:
    """`.data`, `.rodata*`, `.bss*`: one array map of one value each, as libbpf makes them."""
    out = []
    for sec in elf.sections:
        if sec.size and _DATA_SECTION.match(sec.name) and sec.type in (SHT_PROGBITS, SHT_NOBITS):
            readonly = sec.name.startswith(".rodata")
            out.append(_fits_kernel(MapSpec(sec.name, BPF_MAP_TYPE_ARRAY, 4, sec.size, 1,
                                            BPF_F_RDONLY_PROG if readonly else 0, 0, 0,
                                            sec.data if sec.type == SHT_PROGBITS else None)))
    return out
