"""The object reader: clang-22 objects read into specs, and corrupt ELFs rejected cleanly."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

from pybpf_uring import btf as btfmod
from pybpf_uring import isa
from pybpf_uring.objfile import BpfObject, MapSpec, ObjectError, Relocation, program_kind

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
CLANG = shutil.which("clang-22") or "clang-22"   # required: CI installs it


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
    ("xdp", None),
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


def test_programs_in_order(obj):
    assert [(p.name, p.section, p.kind, p.sleepable) for p in obj.programs] == PROGRAMS
    assert [f.name for f in obj.subprograms] == ["leaf", "middle", "helper_static", "step"]
    assert obj.license == "Dual BSD/GPL"


def test_program_bytes_match_section(obj):
    sec = next(s for s in obj.sections if s.name == "syscall")
    assert obj.program("sys_prog").bytes() == sec.data
    assert obj.program("sys_prog").instructions[-1].is_exit


def test_program_lookup_names_the_known_ones(obj):
    with pytest.raises(KeyError, match="no program named 'nope' in the object .programs: sys_prog, sock_prog"):
        obj.program("nope")


# --- maps -------------------------------------------------------------------------------------
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


@pytest.mark.parametrize("name", sorted(RELOCATIONS))
def test_relocations(obj, name):
    prog = obj.program(name)
    assert [(r.insn_index, r.symbol, r.kind) for r in prog.relocations] == RELOCATIONS[name]
    for r in prog.relocations:
        ins = prog.instruction_at(r.insn_index)
        assert ins.is_wide if r.kind in ("map", "data", "func") else ins.is_call


def test_data_relocation_offsets_are_in_imm(obj):
    # scratch[1] = 3 stores at offset 4 of scratch; counter at offset 0 of .data
    prog = obj.program("sys_prog")
    assert prog.instruction_at(7).imm == 0 and prog.relocations[1].variable == "scratch"


# --- linking ----------------------------------------------------------------------------------
def test_linked_appends_callees_transitively_and_fixes_calls(obj):
    prog = obj.program("ring_sleepy")
    linked = prog.linked()
    names = [f.name for f in linked.func_info]
    assert names == ["ring_sleepy", "middle", "leaf", "helper_static"]
    starts = {f.name: f.insn for f in linked.func_info}
    code = dict(zip(isa.slot_indexes(linked.instructions), linked.instructions))
    for r in linked.relocations:
        if r.kind == "call":
            ins = code[r.insn_index]
            assert ins.src == isa.CALL_PSEUDO
            assert r.insn_index + ins.imm + 1 == starts[r.symbol]
    assert linked.slot_count == prog.slot_count + sum(
        f.slot_count for f in obj.subprograms if f.name in names)
    # the data relocation of leaf moved with it
    assert (starts["leaf"] + 1, ".rodata", "data") in [(r.insn_index, r.symbol, r.kind)
                                                       for r in linked.relocations]
    assert linked.line_info == tuple(sorted(linked.line_info, key=lambda li: li.insn))


def test_linked_callback_address(obj):
    linked = obj.program("ring_prog").linked()
    starts = {f.name: f.insn for f in linked.func_info}
    ld = dict(zip(isa.slot_indexes(linked.instructions), linked.instructions))[5]
    assert ld.is_wide and ld.src == isa.PSEUDO_FUNC and 5 + ld.imm + 1 == starts["step"]


def test_linked_without_calls_is_the_program(obj):
    prog = obj.program("tp_prog")
    assert prog.linked().instructions == prog.instructions


# --- BTF and line info ------------------------------------------------------------------------
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


def test_line_info_maps_instructions_to_source(obj):
    prog = obj.program("sock_prog")
    first = prog.line_info[0]
    assert first.insn == 0 and first.file.endswith("read_objects.c")
    with open(first.file) as f:
        source = f.read().splitlines()
    for li in prog.line_info:   # the text the compiler recorded is that line of the file
        assert source[li.line - 1] == li.text
    assert {li.text.strip() for li in prog.line_info} == {"return leaf(2);"}


def test_object_without_btf_reads_programs(tmp_path):
    src = tmp_path / "nobtf.c"
    src.write_text('__attribute__((section("socket"), used)) int f(void *c) { return 1; }\n'
                   'char LICENSE[] __attribute__((section("license"), used)) = "GPL";\n')
    out = tmp_path / "nobtf.o"
    subprocess.run([CLANG, "-O2", "-target", "bpf", "-c", str(src), "-o", str(out)], check=True)
    o = BpfObject.read(str(out))
    assert o.btf is None and [p.name for p in o.programs] == ["f"] and o.programs[0].line_info == ()


def test_write_round_trips(obj, tmp_path):
    path = tmp_path / "copy.o"
    obj.write(path)
    again = BpfObject.read(path)
    assert again.programs == obj.programs and again.maps == obj.maps


def test_repr_html_escapes(obj):
    page = obj._repr_html_()
    assert "<table>" in page and "struct_ops.s/loop_step_s" in page
    assert "&lt;sys_prog&gt;:" in page and "<sys_prog>" not in page
