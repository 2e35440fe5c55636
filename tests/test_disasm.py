"""isa encoding tables and the llvm-objdump-compatible disassembler (golden against llvm-objdump-22)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from pybpf_uring.bpf import isa
from pybpf_uring.bpf.isa import Instruction

# (bytes as llvm-objdump prints them, fields, mnemonic)
ENCODINGS = [
    ("79 12 08 00 00 00 00 00", Instruction(0x79, 2, 1, 8, 0), "ldxdw"),
    ("b7 00 00 00 ff ff ff ff", Instruction(0xB7, 0, 0, 0, -1), "mov64"),
    ("65 01 02 00 03 00 00 00", Instruction(0x65, 1, 0, 2, 3), "jsgt"),
    ("85 00 00 00 01 00 00 00", Instruction(0x85, 0, 0, 0, 1), "call"),
    ("3c 21 01 00 00 00 00 00", Instruction(0x3C, 1, 2, 1, 0), "sdiv32"),
    ("bf 21 08 00 00 00 00 00", Instruction(0xBF, 1, 2, 8, 0), "movsx64"),
    ("d7 01 00 00 10 00 00 00", Instruction(0xD7, 1, 0, 0, 16), "bswap16"),
    ("dc 01 00 00 20 00 00 00", Instruction(0xDC, 1, 0, 0, 32), "be32"),
    ("db 21 00 00 01 00 00 00", Instruction(0xDB, 1, 2, 0, 1), "atomic64"),
    ("91 21 00 00 00 00 00 00", Instruction(0x91, 1, 2, 0, 0), "ldxsb"),
    ("06 00 00 00 05 00 00 00", Instruction(0x06, 0, 0, 0, 5), "gotol"),
    ("a6 01 04 00 07 00 00 00", Instruction(0xA6, 1, 0, 4, 7), "jlt32"),
    ("95 00 00 00 00 00 00 00", Instruction(0x95), "exit"),
]


@pytest.mark.parametrize("hexbytes, ins, name", ENCODINGS)
def test_encoding_table(hexbytes, ins, name):
    raw = bytes.fromhex(hexbytes)
    assert isa.decode(raw) == [ins]
    assert ins.encode() == raw
    assert ins.name == name


def test_lddw_takes_two_slots_and_keeps_both_halves():
    raw = bytes.fromhex("18 01 00 00 78 56 34 12 00 00 00 00 ef cd ab 90 95 00 00 00 00 00 00 00")
    insns = isa.decode(raw)
    assert len(insns) == 2 and insns[0].is_wide and insns[0].imm64 == 0x90ABCDEF12345678
    assert isa.slot_indexes(insns) == [0, 2] and isa.slot_count(insns) == 3
    assert [slot for slot, _ in isa.with_slots(insns)] == [0, 2]
    assert isa.encode(insns) == raw
    assert Instruction.lddw(1, 0x90ABCDEF12345678) == insns[0]


@pytest.mark.parametrize("ins", [Instruction(0xB7, dst=16), Instruction(0xBF, src=-1),
                                 Instruction(0xB7, imm=1 << 31), Instruction(0x79, off=1 << 15)])
def test_encode_rejects_fields_that_do_not_fit(ins):
    with pytest.raises(ValueError, match="does not fit an 8-byte slot"):
        ins.encode()


@pytest.mark.parametrize("raw, message", [
    (b"\x95" + bytes(6), "7 bytes is not a whole number of 8-byte instructions"),
    (bytes.fromhex("1801000001000000"), "slot 0: lddw is missing its second slot"),
    (bytes.fromhex("1801000001000000 9500000000000000"), "slot 1: the second slot of a lddw must"),
])
def test_decode_rejects(raw, message):
    with pytest.raises(isa.DecodeError) as exc:
        isa.decode(raw)
    assert str(exc.value).startswith(message)


@settings(deadline=None)   # a loaded CI machine must not turn slowness into failure
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 15), st.integers(0, 15),
                          st.integers(-2**15, 2**15 - 1), st.integers(-2**31, 2**31 - 1),
                          st.integers(-2**31, 2**31 - 1)), max_size=20))
def test_round_trip(fields):
    insns = [Instruction(op, d, s, o, i, hi if op == isa.LDDW else 0) for op, d, s, o, i, hi in fields]
    assert isa.decode(isa.encode(insns)) == insns


# --- llvm-objdump text, one instruction at a time ---------------------------------------------
import os  # noqa: E402
import subprocess  # noqa: E402

from probes import CLANG, OBJDUMP  # noqa: E402

from pybpf_uring.bpf import disasm  # noqa: E402
from pybpf_uring.bpf.objfile import BpfObject, read_elf  # noqa: E402

# (slot bytes, llvm-objdump-22 text) — read off its output; the golden tests below cover the rest
TEXTS = [
    ("b7 00 00 00 ff ff ff ff", "r0 = -0x1"),
    ("b4 00 00 00 00 00 00 80", "w0 = -0x80000000"),
    ("bf 21 00 00 00 00 00 00", "r1 = r2"),
    ("c7 01 00 00 01 00 00 00", "r1 s>>= 0x1"),
    ("3c 21 01 00 00 00 00 00", "w1 s/= w2"),
    ("94 01 01 00 fd ff ff ff", "w1 s%= -0x3"),
    ("bf 21 20 00 00 00 00 00", "r1 = (s32)r2"),
    ("bc 21 10 00 00 00 00 00", "w1 = (s16)w2"),
    ("bc 21 20 00 00 00 00 00", "<unknown>"),            # no 32-bit movsx from 32 bits
    ("87 01 00 00 00 00 00 00", "r1 = -r1"),
    ("8f 01 00 00 00 00 00 00", "<unknown>"),            # neg has no register form
    ("dc 01 00 00 10 00 00 00", "r1 = be16 r1"),
    ("d4 01 00 00 40 00 00 00", "r1 = le64 r1"),
    ("d4 01 00 00 08 00 00 00", "<unknown>"),
    ("d7 01 00 00 20 00 00 00", "r1 = bswap32 r1"),
    ("07 01 05 00 00 00 00 00", "<unknown>"),            # ALU offset must be 0
    ("07 21 00 00 00 00 00 00", "r1 += 0x0"),            # src of an immediate form is ignored
    ("71 21 01 00 00 00 00 00", "w1 = *(u8 *)(r2 + 0x1)"),
    ("79 a1 f8 ff 00 00 00 00", "r1 = *(u64 *)(r10 - 0x8)"),
    ("79 10 00 80 00 00 00 00", "r0 = *(u64 *)(r1 - 0x8000)"),
    ("91 21 01 00 00 00 00 00", "r1 = *(s8 *)(r2 + 0x1)"),
    ("6a 01 02 00 fd ff ff ff", "*(u16 *)(r1 + 0x2) = -0x3"),
    ("63 2a fc ff 00 00 00 00", "*(u32 *)(r10 - 0x4) = w2"),
    ("c3 21 00 00 00 00 00 00", "lock *(u32 *)(r1 + 0x0) += w2"),
    ("db 21 08 00 a0 00 00 00", "lock *(u64 *)(r1 + 0x8) ^= r2"),
    ("c3 21 00 00 41 00 00 00", "w2 = atomic_fetch_or((u32 *)(r1 + 0x0), w2)"),
    ("db 21 08 00 e1 00 00 00", "r2 = xchg_64(r1 + 0x8, r2)"),
    ("c3 21 00 00 f1 00 00 00", "w0 = cmpxchg32_32(r1 + 0x0, w0, w2)"),
    ("cb 12 00 00 00 01 00 00", "w2 = load_acquire((u16 *)(r1 + 0x0))"),
    ("db 12 00 00 10 01 00 00", "store_release((u64 *)(r2 + 0x0), r1)"),
    ("d3 12 00 00 00 00 00 00", "<unknown>"),            # byte-wide atomics are only acquire/release
    ("30 00 00 00 05 00 00 00", "r0 = *(u8 *)skb[0x5]"),
    ("48 30 00 00 00 00 00 00", "r0 = *(u16 *)skb[r3]"),
    ("65 01 02 00 03 00 00 00", "if r1 s> 0x3 goto +0x2"),
    ("c6 01 01 00 fd ff ff ff", "if w1 s< -0x3 goto +0x1"),
    ("4d 21 ff ff 00 00 00 00", "if r1 & r2 goto -0x1"),
    ("05 00 00 00 01 00 00 00", "goto +0x0"),            # goto reads off, not imm
    ("06 00 01 00 05 00 00 00", "gotol +0x5"),           # gotol reads imm, not off
    ("85 00 00 00 01 00 00 00", "call 0x1"),
    ("85 10 00 00 ff ff ff ff", "call -0x1"),
    ("8d 03 00 00 00 00 00 00", "callx r3"),
    ("e5 00 01 00 00 00 00 00", "may_goto +0x1"),
    ("95 00 05 00 00 00 00 00", "exit"),
    ("96 00 00 00 00 00 00 00", "<unknown>"),
    ("dc 0c 00 00 10 00 00 00", "<unknown>"),            # r12 does not exist
    ("ff 00 00 00 00 00 00 00", "<unknown>"),
    ("95 00 00 00 05 00 00 00", "<unknown>"),            # exit checks imm, not off
    ("87 01 ff ff 00 00 00 80", "r1 = -r1"),             # neg ignores off and imm
    ("dc 32 05 00 10 00 00 00", "r2 = be16 r2"),         # so does a byte swap's off
    ("0d 73 00 00 41 00 00 00", "gotox r3"),
    ("bf 00 01 00 04 00 03 00", "r0 = addr_space_cast(r0, 0x3, 0x4)"),
    ("bf 00 02 00 00 00 00 00", "<unknown>"),
    ("db 21 00 00 45 23 01 00", "lock *(u64 *)(r1 + 0x0) |= r2"),   # imm bits 0, 4-7, 8 only
    ("db 21 00 00 01 01 00 00", "r2 = atomic_fetch_add((u64 *)(r1 + 0x0), r2)"),
    ("db 21 00 00 02 01 00 00", "r1 = load_acquire((u64 *)(r2 + 0x0))"),
    ("cb 21 00 00 01 01 00 00", "w1 = load_acquire((u16 *)(r2 + 0x0))"),
    ("db 21 00 00 10 00 00 00", "<unknown>"),
]

WIDE = [
    ("18 01 00 00 ef cd ab 89 00 00 00 00 67 45 23 01", "r1 = 0x123456789abcdef ll"),
    ("18 01 00 00 00 00 00 80 00 00 00 00 00 00 00 80", "r1 = -0x7fffffff80000000 ll"),
    ("18 11 00 00 05 00 00 00 00 00 00 00 07 00 00 00", "ld_pseudo\tr1, 0x1, 0x5"),
    ("18 62 00 00 ff ff ff ff 00 00 00 00 07 00 00 00", "ld_pseudo\tr2, 0x6, 0xffffffff"),
]


@pytest.mark.parametrize("hexbytes, text", TEXTS + WIDE)
def test_instruction_text(hexbytes, text):
    ins, = isa.decode(bytes.fromhex(hexbytes))
    assert disasm.format_instruction(ins) == text == str(ins)


def test_format_instruction_takes_slot_records():
    """The interpreter passes its own 5-field slot records."""
    from types import SimpleNamespace
    slot = SimpleNamespace(opcode=0x07, dst=1, src=0, off=0, imm=-8)
    assert disasm.format_instruction(slot) == "r1 += -0x8"


def test_format_program_numbers_slots_and_targets():
    insns = isa.decode(bytes.fromhex("b7000000 00000000 18010000 01000000 00000000 00000000"
                                     "15010100 00000000 95000000 00000000 95000000 00000000"))
    assert disasm.format_program(insns) == (
        "    0: r0 = 0x0\n    1: r1 = 0x1 ll\n    3: if r1 == 0x0 goto +0x1 <5>\n"
        "    4: exit\n    5: exit\n")


# --- golden: whole objects against llvm-objdump-22 --------------------------------------------
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

GOLDEN = [  # (fixture, cpu, readable as a BpfObject)
    ("disasm_ops", "v1", True), ("disasm_ops", "v2", True), ("disasm_ops", "v3", True),
    ("disasm_ops", "v4", True), ("disasm_asm", "v4", False), ("disasm_gotol", "v4", True),
    ("read_objects", "v3", True), ("read_static", "v3", True), ("btf_kinds", "v3", True),
    ("load_syscall", "v1", True), ("load_socket", "v2", True),
]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden")

    def compile_(name: str, cpu: str) -> str:
        path = str(out / f"{name}-{cpu}.o")
        if not os.path.exists(path):
            subprocess.run([CLANG, "-O2", "-g", "-target", "bpf", f"-mcpu={cpu}", "-c",
                            os.path.join(DATA, f"{name}.c"), "-o", path], check=True)
        return path
    return compile_


@pytest.mark.tools("objdump", "clang")
@pytest.mark.parametrize("name, cpu, readable", GOLDEN, ids=[f"{n}-{c}" for n, c, _ in GOLDEN])
@pytest.mark.parametrize("relocations", [False, True], ids=["d", "dr"])
def test_golden_against_llvm_objdump(build, name, cpu, readable, relocations):
    path = build(name, cpu)
    want = subprocess.run([OBJDUMP, "-dr" if relocations else "-d", path], capture_output=True,
                          text=True, check=True).stdout
    assert disasm.disassemble(read_elf(path), path, relocations) == want
    if readable:
        obj = BpfObject.read(path)
        # all but the file-name header line
        assert obj.disasm(relocations=relocations) == want.split("\n", 2)[2]


@pytest.mark.tools("clang")
@pytest.mark.kernel
def test_golden_covers_every_opcode_family(build):
    """The fixtures above exercise every opcode llvm-objdump can print (a guard against a
    fixture losing its coverage when clang changes what it emits)."""
    seen = set()
    for name, cpu, _ in GOLDEN:
        for sec in read_elf(build(name, cpu)).sections:
            if sec.executable and sec.size:
                for pos in range(0, sec.size - 7, 8):
                    seen.add(sec.data[pos])
    expected = {0x07, 0x0f, 0x17, 0x1f, 0x27, 0x2f, 0x37, 0x3f, 0x47, 0x4f, 0x57, 0x5f, 0x67,
                0x6f, 0x77, 0x7f, 0x87, 0x97, 0x9f, 0xa7, 0xaf, 0xb7, 0xbf, 0xc7, 0xcf, 0xd7,
                0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c, 0x34, 0x3c, 0x44, 0x4c, 0x54, 0x5c, 0x64,
                0x6c, 0x74, 0x7c, 0x84, 0x94, 0x9c, 0xa4, 0xac, 0xb4, 0xbc, 0xc4, 0xcc, 0xd4,
                0xdc, 0x18, 0x20, 0x28, 0x30, 0x40, 0x48, 0x50, 0x61, 0x69, 0x71, 0x79, 0x81,
                0x89, 0x91, 0x62, 0x6a, 0x72, 0x7a, 0x63, 0x6b, 0x73, 0x7b, 0xc3, 0xdb, 0xcb,
                0xd3, 0x05, 0x15, 0x1d, 0x25, 0x2d, 0x35, 0x3d, 0x45, 0x4d, 0x55, 0x5d, 0x65,
                0x6d, 0x75, 0x7d, 0xa5, 0xad, 0xb5, 0xbd, 0xc5, 0xcd, 0xd5, 0xdd, 0x85, 0x8d,
                0x95, 0xe5, 0x06, 0x16, 0x1e, 0x26, 0x2e, 0x36, 0x3e, 0x46, 0x4e, 0x56, 0x5e,
                0x66, 0x6e, 0x76, 0x7e, 0xa6, 0xae, 0xb6, 0xbe, 0xc6, 0xce, 0xd6, 0xde}
    assert expected - seen == set()


@pytest.mark.tools("clang")
@pytest.mark.kernel
def test_program_disassembly_with_subprograms_and_source(build):
    obj = BpfObject.read(build("read_objects", "v3"))
    text = obj.program("ring_sleepy").linked().disasm(source=True)
    headers = [line for line in text.splitlines() if line.endswith(">:")]
    assert headers == ["0000000000000000 <ring_sleepy>:", "0000000000000038 <middle>:",
                       "0000000000000050 <leaf>:", "0000000000000080 <helper_static>:"]
    assert text.count("; return middle(1) + leaf(1);") == 1
    assert "; return leaf(v) + 1;\n      16:\t85 10 00 00 f9 ff ff ff\tcall -0x7\n" in text
    # unlinked, a program is its section's listing for its symbol
    plain = obj.program("tp_prog").disasm()
    header = "Disassembly of section tracepoint/io_uring/io_uring_complete:\n\n"
    section = disasm.disassemble(obj).split(header)[1]
    assert plain == section.split("\n\nDisassembly")[0] + "\n"


@pytest.mark.tools("clang", "objdump")
def test_random_encodings_match_llvm_objdump(tmp_path):
    """Differential test: seeded random slots (every opcode, odd fields, zero runs, labels, a
    lddw cut by the section end), assembled by clang-22, must read as llvm-objdump reads them."""
    import random
    rnd = random.Random(9669)
    offs = [0, 1, 2, 8, 16, 32, -1, 0x7FFF, -0x8000, 0x100]
    imms = [0, 1, -1, 16, 32, 64, 8, 0x100, 0x110, 0x1000, 0xE1, 0xF1, 0x41, 0x12345, 0x7FFFFFFF]
    lines = ['.section "socket/fuzz","ax"', ".globl f", ".type f,@function", "f:"]
    for i in range(3000):
        if rnd.random() < 0.02:
            lines.append(f"label{i}:")
        if rnd.random() < 0.03:
            lines += [".8byte 0"] * rnd.randrange(1, 3)
        op = rnd.randrange(256)
        regs = rnd.choice([rnd.randrange(256), rnd.randrange(11) | rnd.randrange(11) << 4])
        value = op | regs << 8 | (rnd.choice(offs) & 0xFFFF) << 16 | (rnd.choice(imms) & 0xFFFFFFFF) << 32
        lines.append(f".8byte {value:#x}")
        if op == isa.LDDW:
            lines.append(f".8byte {rnd.choice([0, rnd.randrange(1 << 64)]):#x}")
    lines += [".8byte 0x95", ".8byte 0x118"]
    src = tmp_path / "fuzz.s"
    src.write_text("\n".join(lines) + "\n")
    obj = tmp_path / "fuzz.o"
    subprocess.run([CLANG, "-target", "bpf", "-c", str(src), "-o", str(obj)], check=True)
    want = subprocess.run([OBJDUMP, "-d", str(obj)], capture_output=True, text=True, check=True).stdout
    got = disasm.disassemble(read_elf(str(obj)), str(obj))
    diff = [(w, g) for w, g in zip(want.splitlines(), got.splitlines()) if w != g]
    assert diff[:5] == [] and got == want


@settings(deadline=None)   # a loaded CI machine must not turn slowness into failure
@given(st.integers(0, 255), st.integers(0, 15), st.integers(0, 15), st.integers(-2**15, 2**15 - 1),
       st.integers(-2**31, 2**31 - 1), st.integers(-2**31, 2**31 - 1))
def test_any_fields_have_a_text_and_a_name(opcode, dst, src, off, imm, imm_hi):
    ins = Instruction(opcode, dst, src, off, imm, imm_hi if opcode == isa.LDDW else 0)
    assert disasm.format_instruction(ins)
    assert ins.name


def test_mnemonics_differ_except_for_the_operand_kind():
    """The ubpf-style names tell apart every opcode llvm-objdump decodes, except an immediate
    and a register operand of the same operation (`add64 r1, 1` / `add64 r1, r2`), so a
    message naming an instruction and its operands is unambiguous."""
    names = {}
    for opcode in range(256):
        fields = dict(imm=16) if opcode & 0xF7 in (0xD4, 0xD7) else {}
        ins = Instruction(opcode, 1, 2, 0, **fields)
        if disasm.format_instruction(ins) != disasm.UNKNOWN:
            names.setdefault(ins.name, []).append(opcode)
    shared = {n: ops for n, ops in names.items() if len(ops) > 1}
    assert all(len(ops) == 2 and ops[0] ^ ops[1] == isa.X for ops in shared.values()), shared


@pytest.mark.tools("objdump")
@pytest.mark.parametrize("cpu", ["v1", "v3", "v4"])
def test_compiled_python_disassembles_as_llvm_objdump_does(tmp_path, cpu):
    """What the CLI promises for the project's own objects (llvmlite-emitted, not clang)."""
    from pybpf_uring import compile_file
    sample = os.path.join(os.path.dirname(DATA), "..", "samples", "packet_stats.py")
    path = str(tmp_path / f"packet_stats-{cpu}.o")
    compile_file(sample, cpu=cpu).write(path)
    for flags, relocations in (("-d", False), ("-dr", True)):
        want = subprocess.run([OBJDUMP, flags, path], capture_output=True, text=True, check=True).stdout
        assert disasm.disassemble(read_elf(path), path, relocations) == want


@pytest.mark.tools("objdump", "clang")
def test_program_disassembly_with_relocations_matches_objdump_dr(build):
    """A program that starts its section reads as `llvm-objdump -dr` shows that section."""
    path = build("read_objects", "v3")
    obj = BpfObject.read(path)
    want = subprocess.run([OBJDUMP, "-dr", path], capture_output=True, text=True, check=True).stdout
    section = want.split("Disassembly of section syscall:\n\n")[1].split("\n\nDisassembly")[0]
    assert obj.program("sys_prog").disasm(relocations=True) == section + "\n"
    linked = obj.program("ring_sleepy").linked().disasm(relocations=True)
    assert "R_BPF_64_64\tlimit" in linked and linked.count("R_BPF_64_32\t") == 4
