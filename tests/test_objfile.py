"""The object reader: clang-22 objects read into specs, and corrupt ELFs rejected cleanly."""
from __future__ import annotations

import os
import struct
import subprocess

import pytest
from probes import BPFTOOL, CLANG, VMLINUX_BTF

from pybpf_uring.bpf import btf as btfmod
from pybpf_uring.bpf import isa, kernel
from pybpf_uring.bpf.objfile import BpfObject, ObjectError, program_kind

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def compile_c(name: str, out_dir, cpu: str = "v3", extra: tuple = ()) -> str:
    out = os.path.join(str(out_dir), f"{name}-{cpu}.o")
    subprocess.run([CLANG, "-O2", "-g", "-target", "bpf", f"-mcpu={cpu}", *extra, "-c",
                    os.path.join(DATA, f"{name}.c"), "-o", out], check=True)
    return out


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    d = tmp_path_factory.mktemp("objs")
    return {"read": compile_c("read_objects", d), "syscall": compile_c("load_syscall", d)}


@pytest.fixture(scope="module")
def obj(objects):
    return BpfObject.read(objects["read"])


# --- section names ----------------------------------------------------------------------------
@pytest.mark.parametrize("section, expected", [
    ("syscall", ("syscall", True)),
    ("socket", ("socket_filter", False)),
    ("socket/filter1", ("socket_filter", False)),
    ("tracepoint/io_uring/io_uring_complete", ("tracepoint", False)),
    ("tp/sched/sched_switch", ("tracepoint", False)),
    ("iouring/step", ("iouring", False)),
    ("iouring.s/step", ("iouring", True)),
    ("struct_ops/loop_step", ("struct_ops", False)),
    ("struct_ops.s/loop_step", ("struct_ops", True)),
    ("tracepoint/", None),
    ("syscall/x", None),
    ("xdp", ("xdp", False)),
    ("fentry.s/do_exit", ("tracing", True)),
    ("my_own_section", None),
])
def test_program_kind(section, expected):
    assert program_kind(section) == expected


# --- programs ---------------------------------------------------------------------------------
PROGRAMS = [  # name, section, kind, sleepable
    ("sys_prog", "syscall", "syscall", True),
    ("sock_prog", "socket", "socket_filter", False),
    ("tp_prog", "tracepoint/io_uring/io_uring_complete", "tracepoint", False),
    ("tp_short", "tp/syscalls/sys_enter_read", "tracepoint", False),
    ("ring_prog", "iouring/plain", "iouring", False),
    ("ring_sleepy", "iouring.s/sleepy", "iouring", True),
    ("ops_prog", "struct_ops/loop_step", "struct_ops", False),
    ("ops_sleepy", "struct_ops.s/loop_step_s", "struct_ops", True),
]


@pytest.mark.kernel
def test_programs_in_order(obj):
    assert [(p.name, p.section, p.kind, p.sleepable) for p in obj.programs] == PROGRAMS
    assert [f.name for f in obj.subprograms] == ["leaf", "middle", "helper_static", "step"]
    assert obj.license == "Dual BSD/GPL"


@pytest.mark.kernel
def test_program_bytes_match_section(obj):
    sec = next(s for s in obj.sections if s.name == "syscall")
    assert obj.program("sys_prog").encode() == sec.data
    assert obj.program("sys_prog").instructions[-1].is_exit


@pytest.mark.kernel
def test_program_lookup_names_the_known_ones(obj):
    with pytest.raises(KeyError, match="no program named 'nope' in the object .programs: sys_prog, "):
        obj.program("nope")


# --- maps -------------------------------------------------------------------------------------
@pytest.mark.kernel
def test_maps(obj):
    assert [(m.name, m.type, m.key_size, m.value_size, m.max_entries, m.flags) for m in obj.maps] == [
        ("points", 1, 8, 12, 128, 1),
        ("sized", 2, 4, 24, 3, 0),
        ("events", 27, 0, 0, 4096, 0),
        (".data", 2, 4, 8, 1, 0),
        (".rodata", 2, 4, 4, 1, 0x80),
        (".bss", 2, 4, 16, 1, 0),
    ]
    points = obj.map("points")
    assert obj.btf.type_name(points.key_type_id) == "__u64"
    assert obj.btf.type_name(points.value_type_id) == "struct point"
    assert obj.map(".data").data == struct.pack("<Q", 7)
    assert obj.map(".rodata").data == struct.pack("<I", 42)
    assert obj.map(".bss").data is None


@pytest.mark.kernel
def test_maps_of_load_syscall(objects):
    o = BpfObject.read(objects["syscall"])
    assert [(m.name, m.type_name, m.key_size, m.value_size, m.max_entries) for m in o.maps] == [
        ("counters", "array", 4, 8, 8), ("last", "hash", 4, 16, 64)]


# --- relocations ------------------------------------------------------------------------------
RELOCATIONS = {
    "sys_prog": [(4, "points", "map"), (7, ".bss", "data"), (11, ".data", "data"), (19, "middle", "call")],
    "sock_prog": [(1, "leaf", "call")],
    "tp_prog": [(4, "sized", "map")],
    "ring_prog": [(5, "step", "func")],
    "ops_prog": [(0, "bpf_rcu_read_lock", "kfunc")],
    "ops_sleepy": [],
}


@pytest.mark.kernel
@pytest.mark.parametrize("name", sorted(RELOCATIONS))
def test_relocations(obj, name):
    prog = obj.program(name)
    assert [(r.insn_index, r.symbol, r.kind) for r in prog.relocations] == RELOCATIONS[name]
    for r in prog.relocations:
        ins = prog.instruction_at(r.insn_index)
        assert ins.is_wide if r.kind in ("map", "data", "func") else ins.is_call


@pytest.mark.kernel
def test_data_relocation_offsets_are_in_imm(obj):
    # scratch[1] = 3 stores at offset 4 of scratch; counter at offset 0 of .data
    prog = obj.program("sys_prog")
    assert prog.instruction_at(7).imm == 0 and prog.relocations[1].variable == "scratch"


# --- linking ----------------------------------------------------------------------------------
@pytest.mark.kernel
def test_linked_appends_callees_transitively_and_fixes_calls(obj):
    prog = obj.program("ring_sleepy")
    linked = prog.linked()
    names = [f.name for f in linked.func_info]
    assert names == ["ring_sleepy", "middle", "leaf", "helper_static"]
    starts = {f.name: f.insn for f in linked.func_info}
    code = dict(isa.with_slots(linked.instructions))
    for r in linked.relocations:
        if r.kind == "call":
            ins = code[r.insn_index]
            assert ins.src == isa.CALL_PSEUDO
            assert r.insn_index + ins.imm + 1 == starts[r.symbol] == r.target
    assert linked.slot_count == prog.slot_count + sum(
        f.slot_count for f in obj.subprograms if f.name in names)
    # the data relocation of leaf moved with it
    assert (starts["leaf"] + 1, ".rodata", "data") in [(r.insn_index, r.symbol, r.kind)
                                                       for r in linked.relocations]
    assert linked.line_info == tuple(sorted(linked.line_info, key=lambda li: li.insn))


@pytest.mark.kernel
def test_linked_callback_address(obj):
    linked = obj.program("ring_prog").linked()
    starts = {f.name: f.insn for f in linked.func_info}
    ld = dict(isa.with_slots(linked.instructions))[5]
    assert ld.is_wide and ld.src == isa.PSEUDO_FUNC and 5 + ld.imm + 1 == starts["step"]


@pytest.mark.kernel
def test_linked_without_calls_is_the_program(obj):
    prog = obj.program("tp_prog")
    assert prog.linked().instructions == prog.instructions


# --- BTF and line info ------------------------------------------------------------------------
@pytest.mark.kernel
def test_btf_types(obj):
    b = obj.btf
    point = b[b.find("point", "struct")]
    assert point.size == 12
    assert [(m.name, m.offset, b.type_name(m.type)) for m in point.members] == [
        ("x", 0, "int"), ("y", 4, "int"), ("tag", 8, "__u8[3]")]
    func = b[b.find("leaf", "func")]
    proto = b[func.type]
    assert b.type_name(proto.return_type) == "int" and [p.name for p in proto.params] == ["v"]
    assert b.size_of(b.find("__u64", "typedef")) == 8
    limit = b[b.find("limit", "var")]
    assert b.type_name(limit.type) == "const volatile __u32"


@pytest.mark.kernel
def test_line_info_maps_instructions_to_source(obj):
    prog = obj.program("sock_prog")
    first = prog.line_info[0]
    assert first.insn == 0 and first.file.endswith("read_objects.c")
    with open(first.file) as f:
        source = f.read().splitlines()
    for li in prog.line_info:   # the text the compiler recorded is that line of the file
        assert source[li.line - 1] == li.text
    assert {li.text.strip() for li in prog.line_info} == {"return leaf(2);"}


@pytest.mark.tools("clang")
def test_object_without_btf_reads_programs(tmp_path):
    src = tmp_path / "nobtf.c"
    src.write_text('__attribute__((section("socket"), used)) int f(void *c) { return 1; }\n'
                   'char LICENSE[] __attribute__((section("license"), used)) = "GPL";\n')
    out = tmp_path / "nobtf.o"
    subprocess.run([CLANG, "-O2", "-target", "bpf", "-c", str(src), "-o", str(out)], check=True)
    o = BpfObject.read(str(out))
    assert o.btf is None and [p.name for p in o.programs] == ["f"] and o.programs[0].line_info == ()


@pytest.mark.kernel
def test_write_round_trips(obj, tmp_path):
    path = tmp_path / "copy.o"
    obj.write(path)
    again = BpfObject.read(path)
    assert again.programs == obj.programs and again.maps == obj.maps


@pytest.mark.kernel
def test_repr_html_escapes(obj):
    page = obj._repr_html_()
    assert "<table>" in page and "<td>struct_ops.s/loop_step_s</td>" in page
    assert "&lt;sys_prog&gt;:" in page and "<sys_prog>" not in page
    assert "<td>8 (__u64)</td><td>12 (struct point)</td>" in page


# --- corrupt objects: rejected with a message, never a library traceback ----------------------
SHDR = 64   # ELF64 section header size; fields at sh_type 4, sh_offset 24, sh_size 32, sh_info 44


def section_header(data: bytes, name: str) -> int:
    """Byte offset of `name`'s section header (found with pyelftools, patched by hand)."""
    import io
    from elftools.elf.elffile import ELFFile
    elf = ELFFile(io.BytesIO(data))
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    for i, sec in enumerate(elf.iter_sections()):
        if sec.name == name:
            return shoff + i * SHDR
    raise KeyError(name)


def section_body(data: bytes, name: str) -> int:
    return struct.unpack_from("<Q", data, section_header(data, name) + 24)[0]


def patch(data: bytes, offset: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


CORRUPTIONS = [  # (case, how to corrupt the bytes of load_syscall.o, message fragment)
    ("empty", lambda d: b"", "file is 0 bytes, too short for an ELF header"),
    ("text", lambda d: b"int main() { return 0; }\n" * 4, "not an ELF file"),
    ("truncated header", lambda d: d[:40], "too short for an ELF header"),
    ("truncated body", lambda d: d[:len(d) // 2], "the section header table (27 entries at offset"),
    ("32-bit", lambda d: patch(d, 4, "B", 1), "not a 64-bit ELF file"),
    ("big-endian", lambda d: patch(d, 5, "B", 2), "not a little-endian ELF file"),
    ("x86-64", lambda d: patch(d, 0x12, "<H", 62), "ELF machine is EM_X86_64, not EM_BPF"),
    ("executable", lambda d: patch(d, 0x10, "<H", 2), "ELF type is ET_EXEC, not a relocatable object"),
    ("section headers past the end", lambda d: patch(d, 0x28, "<Q", len(d) + 4096),
     "section header table (27 entries at offset"),
    ("section count huge", lambda d: patch(d, 0x3C, "<H", 0xFFF0), "section header table (65520 entries"),
    ("section names index", lambda d: patch(d, 0x3E, "<H", 0x7000), "malformed ELF"),
    ("section size", lambda d: patch(d, section_header(d, "syscall") + 32, "<Q", 1 << 40),
     "section 'syscall' (1099511627776 bytes at offset"),
    ("code not whole instructions", lambda d: patch(d, section_header(d, "syscall") + 32, "<Q", 1412),
     "section 'syscall' is 1412 bytes, not a whole number of 8-byte instructions"),
    ("relocation to missing symbol", lambda d: patch(d, section_body(d, ".relsyscall") + 12, "<I", 999),
     "relocation at byte 384 of 'syscall' refers to symbol 999, but the symbol table has"),
    ("relocation off an instruction", lambda d: patch(d, section_body(d, ".relsyscall"), "<Q", 385),
     "relocation at byte 385 of 'syscall' is not on an instruction"),
    ("relocation on a non-lddw", lambda d: patch(d, section_body(d, ".relsyscall"), "<Q", 0),
     "relocation at byte 0 of 'syscall' (counters): patches a mov64, not a call or lddw"),
    ("relocation section target", lambda d: patch(d, section_header(d, ".relsyscall") + 44, "<I", 900),
     "relocation section '.relsyscall' targets section 900, which does not exist"),
    ("symtab type", lambda d: patch(d, section_header(d, ".symtab") + 4, "<I", 1),
     ".symtab is not a symbol table (its section type is SHT_PROGBITS)"),
    ("BTF magic", lambda d: patch(d, section_body(d, ".BTF"), "<H", 0x9FEB),
     "corrupt BTF: .BTF has magic 0x9feb, not 0xeb9f"),
    ("BTF version", lambda d: patch(d, section_body(d, ".BTF") + 2, "B", 9),
     "corrupt BTF: .BTF version 9 is not supported"),
    ("BTF type section length", lambda d: patch(d, section_body(d, ".BTF") + 12, "<I", 1 << 30),
     "corrupt BTF: .BTF sections (types 0+1073741824"),
    ("BTF unknown kind", lambda d: patch(d, section_body(d, ".BTF") + 24 + 4, "<I", 31 << 24),
     "corrupt BTF: type 1 has unknown kind 31"),
    ("BTF dangling type id", lambda d: patch(d, section_body(d, ".BTF") + 24 + 8, "<I", 5000),
     "corrupt BTF: type 1 (ptr '') refers to type 5000, but the BTF has only 33 types"),
    ("BTF.ext magic", lambda d: patch(d, section_body(d, ".BTF.ext"), "<H", 0),
     "corrupt BTF: .BTF.ext has magic 0x0000"),
    ("BTF.ext record count", lambda d: patch(d, section_body(d, ".BTF.ext") + 32 + 4 + 4, "<I", 1 << 20),
     "corrupt BTF: .BTF.ext func_info of 'syscall' claims 1048576 records"),
    ("second half of a lddw", lambda d: patch(d, section_body(d, "syscall") + 392, "B", 0x95),
     "function 'calc' in 'syscall': slot 49: the second slot of a lddw must have opcode"),
]


@pytest.mark.kernel
@pytest.mark.parametrize("case, corrupt, message", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_corrupt_object_rejected(objects, case, corrupt, message):
    with open(objects["syscall"], "rb") as f:
        data = corrupt(f.read())
    with pytest.raises(ObjectError) as exc:
        BpfObject.read(data)
    assert message in str(exc.value)


def test_error_names_the_file(tmp_path):
    path = tmp_path / "bad.o"
    path.write_bytes(b"\x7fELF")
    with pytest.raises(ObjectError, match=r"bad\.o: file is 4 bytes"):
        BpfObject.read(str(path))
    with pytest.raises(ObjectError, match="cannot read: No such file or directory"):
        BpfObject.read(str(tmp_path / "missing.o"))


@pytest.mark.tools("clang")
@pytest.mark.kernel
def test_unknown_sections_are_read_and_refused_by_the_loader(tmp_path):
    """As libbpf: an executable section of no known kind is still a program (kind "unknown"),
    readable and disassemblable; loading it is what fails."""
    src = tmp_path / "x.c"
    src.write_text('__attribute__((section("my_own_section"), used)) int f(void *c) { return 1; }\n'
                   '__attribute__((section("xdp"), used)) int g(void *c) { return 2; }\n')
    out = tmp_path / "x.o"
    subprocess.run([CLANG, "-O2", "-target", "bpf", "-c", str(src), "-o", str(out)], check=True)
    o = BpfObject.read(str(out))
    assert [(p.name, p.kind) for p in o.programs] == [("f", "unknown"), ("g", "xdp")]
    assert "<f>:" in o.disasm()
    from pybpf_uring.bpf import load as loadmod
    with pytest.raises(loadmod.UnsupportedProgramError, match="unknown program kind 'unknown'"):
        o.load(only={"f"})


@pytest.mark.tools("clang")
@pytest.mark.parametrize("source, message", [
    ('struct { int type; int max_entries; } m __attribute__((section("maps"), used)) = {2, 4};\n'
     '__attribute__((section("socket"), used)) int f(void *c) { return 1; }',
     "legacy `maps` section"),
    ('struct { int (*type)[2]; } m __attribute__((section(".maps"), used));\n'
     '__attribute__((section("socket"), used)) int f(void *c) { return 1; }',
     "maps in .maps need BTF to describe them: compile with -g"),
])
def test_unsupported_objects_rejected(tmp_path, source, message):
    src = tmp_path / "x.c"
    src.write_text(source + "\n")
    out = tmp_path / "x.o"
    subprocess.run([CLANG, "-O2", "-target", "bpf", "-c", str(src), "-o", str(out)], check=True)
    with pytest.raises(ObjectError, match=message.replace("(", r"\(").replace("`", "`")):
        BpfObject.read(str(out))


@pytest.mark.kernel
def test_random_corruption_never_escapes(objects):
    """ubpf-style fuzzing of the parts the reader trusts: header, section headers, symbols,
    relocations, BTF and code.  Whatever the bytes, the result is a BpfObject or ObjectError."""
    import io
    import random
    from elftools.elf.elffile import ELFFile
    with open(objects["read"], "rb") as f:
        data = f.read()
    elf = ELFFile(io.BytesIO(data))
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    regions = [(0, 64), (shoff, shoff + SHDR * elf.num_sections())]
    regions += [(s["sh_offset"], s["sh_offset"] + s["sh_size"]) for s in elf.iter_sections()
                if s["sh_size"] and s["sh_type"] != "SHT_NOBITS" and "debug" not in s.name]
    rnd = random.Random(9669)
    rejected = 0
    for _ in range(600):
        b = bytearray(data)
        lo, hi = rnd.choice(regions)
        for _ in range(rnd.randrange(1, 4)):
            p = rnd.randrange(lo, hi)
            b[p] = rnd.choice([0, 0xFF, rnd.randrange(256), b[p] ^ (1 << rnd.randrange(8))])
        try:
            obj = BpfObject.read(bytes(b))
            obj.disasm(relocations=True)
            obj.kernel_btf()
            obj._repr_html_()
            for prog in obj.programs:
                prog.linked().disasm(source=True)
        except ObjectError:
            rejected += 1
    assert rejected > 50   # the corruption did reach the checks


# --- every BTF kind ---------------------------------------------------------------------------
@pytest.mark.tools("clang")
def test_every_btf_kind(tmp_path):
    b = BpfObject.read(compile_c("btf_kinds", tmp_path)).btf
    kinds = {t.kind for t in b}
    assert kinds == {"void", "int", "ptr", "array", "struct", "union", "enum", "enum64", "fwd",
                     "typedef", "volatile", "const", "restrict", "func", "func_proto", "var",
                     "datasec", "float", "decl_tag", "type_tag"}
    shape = b[b.find("shape", "struct")]
    assert [(m.name, m.bit_offset, m.bitfield_size, b.type_name(m.type)) for m in shape.members] == [
        ("kind", 0, 3, "u32"), ("flags", 3, 5, "unsigned int"), ("pad", 32, 0, "int"),
        ("color", 64, 0, "enum color"), ("size", 128, 0, "enum big"),
        ("area", 192, 0, "union number"), ("name", 256, 0, "const volatile char[6]"),
        ("next", 320, 0, "struct opaque *"),
        ("user_ptr", 384, 0, 'int __attribute__((btf_type_tag("user"))) *'),
        ("ratio", 448, 0, "float")]
    assert shape.size == 64 and b.size_of(b.find("shape", "struct")) == 64
    color = b[b.find("color", "enum")]
    assert color.signed
    assert [(v.name, v.value) for v in color.values] == [("RED", 0), ("GREEN", 5), ("BLUE", -1)]
    big = b[b.find("big", "enum64")]
    assert big.size == 8 and big.values[1] == btfmod.EnumValue("HUGE", 0x123456789A)
    assert b[b.find("double", "float")].size == 8
    assert b[b.find("opaque", "fwd")].union is False
    tags = {(t.name, b[t.type].name, t.component_idx) for t in b if t.kind == "decl_tag"}
    assert tags == {("shape_tag", "shape", -1), ("var_tag", "global_shape", -1), ("param_tag", "helper", 0)}
    helper = b[b.find("helper", "func")]
    assert helper.linkage == 0 and b[b.find("use_all", "func")].linkage == 1
    assert b.type_name(b[helper.type].params[0].type) == "struct shape * restrict"
    sections = {t.name: [b[v.type].name for v in t.vars] for t in b if t.kind == "datasec"}
    assert sections == {".bss": ["global_shape"], ".rodata": ["answer"], "license": ["LICENSE"]}
    assert b.resolve(b.find("answer", "var")) == b.find("answer", "var")   # a var is not a modifier
    assert b.size_of(b[b.find("answer", "var")].type) == 4


@pytest.mark.parametrize("raw, message", [
    (b"\x9f\xeb", ".BTF is 2 bytes, shorter than its 24-byte header"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 12, 1) + struct.pack("<III", 0, 0, 0) + b"\0",
     "type 1 has unknown kind 0"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 8, 8, 1) + bytes(8) + b"\0",
     "type 1 is truncated at byte 0 of the type section"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 12, 2) + struct.pack("<III", 5, 2 << 24, 0) + b"\0a",
     "string offset 5 is past the 2-byte string section"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 0, 0, 2) + b"ab",
     ".BTF string section does not start with the empty string"),
])
def test_btf_parser_rejects(raw, message):
    with pytest.raises(btfmod.BtfError) as exc:
        btfmod.parse_btf(raw)
    assert message in str(exc.value)


# --- BTF written back, and what the kernel makes of it ----------------------------------------
@pytest.mark.tools("clang")
@pytest.mark.parametrize("fixture", ["read_objects", "load_syscall", "btf_kinds", "disasm_ops"])
def test_btf_encodes_back_to_the_same_bytes(tmp_path, fixture):
    b = BpfObject.read(compile_c(fixture, tmp_path)).btf
    assert btfmod.encode_btf(b.types, b.strings) == b.raw


@pytest.mark.kernel
def test_kernel_btf_fixups(obj):
    b = btfmod.parse_btf(obj.kernel_btf())
    secs = {t.name: t for t in b if t.kind == "datasec"}
    assert secs[".maps"].size == 40 + 32 + 16 and [v.offset for v in secs[".maps"].vars] == [0, 40, 72]
    assert secs[".data"].size == 8 and secs[".bss"].size == 16 and secs[".rodata"].size == 4
    ksyms = secs[".ksyms"]
    assert [(b[v.type].kind, v.offset, v.size) for v in ksyms.vars] == [("var", 0, 4)]
    assert b[b.find("bpf_rcu_read_lock", "func")].linkage == 1
    assert all(p.name for t in b if t.kind == "func_proto" for p in t.params)
    # everything else is unchanged, type ids included
    assert [t.kind for t in b][:len(obj.btf)] == [t.kind for t in obj.btf]


@pytest.mark.tools("clang")
@pytest.mark.kernel
@pytest.mark.parametrize("fixture", ["read_objects", "load_syscall", "btf_kinds", "disasm_ops"])
def test_kernel_accepts_kernel_btf(tmp_path, fixture):
    o = BpfObject.read(compile_c(fixture, tmp_path))
    os.close(kernel.btf_load(o.kernel_btf()))


@pytest.mark.kernel
def test_line_info_reaches_the_verifier_log(obj):
    """func_info and line_info of a linked program, as BPF_PROG_LOAD takes them: the verifier
    annotates its log with our source lines."""
    btf_fd = kernel.btf_load(obj.kernel_btf())
    try:
        prog = obj.program("ring_sleepy").linked()
        res = kernel.prog_load(kernel.BPF_PROG_TYPE_SYSCALL, isa.encode(prog.instructions), "GPL",
                               "ring_sleepy", kernel.BPF_F_SLEEPABLE, log_level=2, btf_fd=btf_fd,
                               func_info=btfmod.encode_func_info(prog.func_info),
                               func_info_rec_size=btfmod.FUNC_INFO_SIZE,
                               line_info=btfmod.encode_line_info(prog.line_info),
                               line_info_rec_size=btfmod.LINE_INFO_SIZE)
        if res.fd >= 0:
            os.close(res.fd)
        # the program is not relocated (leaf's .rodata load is a null pointer), so it may be
        # rejected; either way the kernel read our records
        assert "; return middle(1) + leaf(1); @ read_objects.c:" in res.log
        assert "Func#1 ('middle') is global" in res.log
    finally:
        os.close(btf_fd)


@pytest.mark.kernel
def test_load_shortcut(objects):
    with BpfObject.read(objects["syscall"]).load() as live:
        assert set(live.programs) == {"calc", "sum_counters"}


@pytest.mark.tools("clang")
def test_relocations_against_section_symbols(tmp_path):
    o = BpfObject.read(compile_c("read_static", tmp_path))
    first = next(f for f in o.subprograms if f.name == "first")
    # the variable is found by its offset in the section
    assert [(r.symbol, r.kind, r.variable) for r in first.relocations] == [
        (".bss", "data", "counter"), (".rodata.str1.1", "data", "msg")]
    assert [(m.name, m.value_size, m.flags, m.data) for m in o.maps] == [
        (".rodata.str1.1", 6, 0x80, b"hello\0"), (".bss", 4, 0, None)]
    prog = o.program("prog")
    # `call -1` against the .text symbol: imm + 1 is the callee's slot in .text
    assert [(r.symbol, r.kind, r.target) for r in prog.relocations] == [
        ("first", "call", 0), ("second", "call", first.slot_count)]
    linked = prog.linked()
    assert [f.name for f in linked.func_info] == ["prog", "first", "second"]
    starts = {f.name: f.insn for f in linked.func_info}
    code = dict(isa.with_slots(linked.instructions))
    calls = [(s, s + ins.imm + 1) for s, ins in code.items() if ins.is_pseudo_call]
    assert [target for _, target in calls] == [starts["first"], starts["second"], starts["first"]]


@pytest.mark.tools("clang")
@pytest.mark.kernel
def test_static_maps_and_variables_through_section_symbols(tmp_path):
    o = BpfObject.read(compile_c("read_static_maps", tmp_path))
    # in .maps order (clang lays static maps out last-defined first)
    assert [(m.name, m.max_entries, m.value_size) for m in o.maps] == [
        ("second_map", 2, 8), ("first_map", 1, 8), (".bss", 1, 8)]
    rels = [(r.symbol, r.kind, r.variable) for r in o.program("prog").relocations]
    assert rels[:2] == [("second_map", "map", ""), ("first_map", "map", "")]
    assert {v for _, kind, v in rels if kind == "data"} == {"hits", "misses"}
    with o.load() as live:
        live.maps["first_map"][0] = 5
        live.maps["second_map"][0] = 37
        assert live.programs["prog"].test_run(data=bytes(64)).retval == 42


@pytest.mark.tools("clang")
def test_core_relocations(tmp_path, obj):
    """CO-RE records are read (a loader that does not apply them can say so, naming the field)."""
    o = BpfObject.read(compile_c("read_core", tmp_path))
    prog = o.program("core_prog")
    assert [(c.insn, o.btf.type_name(c.type_id), c.access, c.kind) for c in prog.core_relos] == [
        (0, "struct task_like", "0:0", "field_byte_offset"),
        (1, "struct task_like", "0:1", "field_exists"),
        (3, "struct task_like", "0:2", "field_byte_size")]
    assert prog.linked().core_relos == prog.core_relos
    assert obj.program("sock_prog").core_relos == ()


# --- end to end: linked programs with data relocations run in the kernel ----------------------
@pytest.mark.kernel
def test_linked_program_with_maps_and_data_runs_in_the_kernel(obj):
    """sys_prog calls middle → helper_static → leaf (reads .rodata `limit`), bumps `counter`
    in .data and writes scratch[1] in .bss: linking and every relocation kind at work."""
    with obj.load(only={"sys_prog"}) as live:
        run = live.programs["sys_prog"].test_run
        assert run(bytes(16)).retval == ((0 * 3 + 42) + 1) ^ 5     # no point: x = 0
        live.maps["points"][1] = struct.pack("<ii3sx", 2, 0, b"abc")
        assert run(bytes(16)).retval == ((2 * 3 + 42) + 1) ^ 5
        assert live.maps[".data"][0] == 7 + 2
        assert live.maps[".bss"][0] == struct.pack("<4I", 0, 3, 0, 0)


@pytest.mark.tools("clang")
@pytest.mark.kernel
def test_section_symbol_relocations_run_in_the_kernel(tmp_path):
    o = BpfObject.read(compile_c("read_static", tmp_path))
    with o.load() as live:
        ret = live.programs["prog"].test_run(data=bytes(64)).retval
        # first(1) + second(2) = msg[1] + msg[2] * 2 + the counter's effect (order is clang's)
        assert ret in (101 + (108 + 1) * 2, (101 + 1) + 108 * 2)
        assert live.maps[".bss"][0] == 2


@pytest.mark.tools("clang")
def test_linking_a_recursive_subprogram_keeps_one_copy(tmp_path):
    o = BpfObject.read(compile_c("read_recursion", tmp_path))
    sub = next(f for f in o.subprograms if f.name == "fib")
    for linked, base in ((o.program("prog").linked(), o.program("prog").slot_count), (sub.linked(), 0)):
        assert [f.name for f in linked.func_info][-1] == "fib"
        code = dict(isa.with_slots(linked.instructions))
        self_calls = [s for s, ins in code.items() if ins.is_pseudo_call and s >= base]
        assert self_calls and all(s + code[s].imm + 1 == base for s in self_calls)
        assert linked.slot_count == base + sub.slot_count


def test_btf_parser_fuzz_raises_only_btf_error():
    """Random mutations of a real .BTF: parsed, or BtfError — never struct.error/IndexError."""
    import random
    rnd = random.Random(77)
    base = _btf_sample()
    for _ in range(400):
        b = bytearray(base)
        for _ in range(rnd.randrange(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        if rnd.random() < 0.2:
            del b[rnd.randrange(len(b)):]
        try:
            btfmod.parse_btf(bytes(b))
        except btfmod.BtfError:
            pass


def _btf_sample() -> bytes:
    """One of every kind, written by encode_btf and read back."""
    types = [btfmod.Void(), btfmod.Int("int", 4, 32, 0, 1), btfmod.Ptr(1),
             btfmod.Struct("s", 8, (btfmod.Member("a", 1, 0), btfmod.Member("b", 2, 32, 0))),
             btfmod.Enum("e", 4, (btfmod.EnumValue("A", 1),)), btfmod.Array(1, 1, 4),
             btfmod.FuncProto(1, (btfmod.Param("x", 2),)), btfmod.Func("f", 6, 1),
             btfmod.Var("v", 3, 1), btfmod.Datasec(".data", 8, (btfmod.VarSecinfo(8, 0, 8),)),
             btfmod.Enum64("big", 8, (btfmod.EnumValue("H", 1 << 40),)), btfmod.Float("double", 8),
             btfmod.DeclTag("tag", 3, -1), btfmod.TypeTag("user", 1), btfmod.Typedef("t", 1)]
    raw = btfmod.encode_btf(types)
    assert btfmod.parse_btf(raw).types == types
    return raw


@pytest.mark.tools("clang")
@pytest.mark.kernel
def test_verifier_rejection_maps_to_the_source_line(tmp_path):
    """The verifier's failing instruction (a slot of the linked program) → line_at → the C line."""
    import re
    from pybpf_uring.bpf import load as loadmod
    o = BpfObject.read(compile_c("read_reject", tmp_path))
    linked = o.program("reject_me").linked()
    with pytest.raises(loadmod.VerifierError) as exc:
        o.load()
    log = exc.value.log
    slot = int(re.findall(r"^(\d+): \(", log, re.M)[-1])
    line = linked.line_at(slot)
    assert line.text.strip() == "return *v + 1; /* no NULL check */"
    assert linked.instruction_at(slot).is_load
    assert loadmod.failing_insn(log)[0] == slot


@pytest.mark.kernel
def test_line_at_stays_inside_the_function(obj):
    linked = obj.program("ring_sleepy").linked()
    starts = {f.name: f.insn for f in linked.func_info}
    assert linked.line_at(starts["middle"]).text.strip() == "return helper_static(v) ^ 5;"
    assert linked.line_at(starts["middle"] - 1).text.strip() == "return middle(1) + leaf(1);"
    assert obj.program("tp_short").line_at(0).line > 0


@pytest.mark.kernel("vmlinux")
def test_parses_the_running_kernels_btf():
    """The biggest BTF there is (vmlinux): every record of the kernel's own layout, the loader
    needs it to find kfunc ids."""
    with open(VMLINUX_BTF, "rb") as f:
        b = btfmod.parse_btf(f.read())
    task = b[b.find("task_struct", "struct")]
    assert task.size > 1000 and task.member("pid") is not None
    assert b.type_name(task.member("pid").type) == "pid_t"
    ring = b.find("io_uring_sqe", "struct")
    assert ring is not None and b.size_of(ring) == 64
    assert len({t.kind for t in b}) >= 15
    assert b.find_all("task_struct", "struct") == [b.find("task_struct", "struct")]
    assert b.find("no such type anywhere") is None and b.find("task_struct", "enum") is None


@pytest.mark.tools("clang")
@pytest.mark.kernel
def test_extern_variable_relocation(tmp_path):
    src = tmp_path / "ext.c"
    src.write_text('extern unsigned int LINUX_KERNEL_VERSION __attribute__((section(".kconfig")));\n'
                   '__attribute__((section("socket"), used)) int f(void *c)\n'
                   '{ return LINUX_KERNEL_VERSION > 5; }\n')
    out = tmp_path / "ext.o"
    subprocess.run([CLANG, "-O2", "-g", "-target", "bpf", "-c", str(src), "-o", str(out)], check=True)
    o = BpfObject.read(str(out))
    assert [(r.insn_index, r.symbol, r.kind) for r in o.program("f").relocations] == [
        (0, "LINUX_KERNEL_VERSION", "extern")]
    b = btfmod.parse_btf(o.kernel_btf())
    kconfig = b[b.find(".kconfig", "datasec")]
    assert [(b[v.type].name, b[v.type].linkage, v.offset, v.size) for v in kconfig.vars] == [
        ("LINUX_KERNEL_VERSION", 1, 0, 4)]
    os.close(kernel.btf_load(o.kernel_btf()))


@pytest.mark.tools("clang", "bpftool")
def test_reads_what_the_libbpf_linker_writes(objects, obj, tmp_path):
    """`bpftool gen object` (libbpf's static linker) rewrites sections, symbols and BTF: the
    spec read from its output is the same as from clang's."""
    out = tmp_path / "linked.o"
    subprocess.run([BPFTOOL, "gen", "object", str(out), objects["read"]], check=True)
    again = BpfObject.read(str(out))
    assert again.maps == obj.maps
    assert [(p.name, p.kind, p.linked().instructions) for p in again.programs] == \
        [(p.name, p.kind, p.linked().instructions) for p in obj.programs]
    assert [p.linked().relocations for p in again.programs] == [p.linked().relocations for p in obj.programs]


@pytest.mark.kernel
def test_every_kernel_program_of_the_fixture_passes_the_verifier(obj):
    """Linking and relocation for each kernel-loadable kind (the verifier checks every call
    offset and map reference)."""
    names = {p.name for p in obj.programs if p.kind in ("syscall", "socket_filter", "tracepoint")}
    with obj.load(only=names) as live:
        assert set(live.programs) == names == {"sys_prog", "sock_prog", "tp_prog", "tp_short"}
