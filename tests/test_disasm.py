"""isa encoding tables and the llvm-objdump-compatible disassembler (golden against llvm-objdump-22)."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from pybpf_uring import isa
from pybpf_uring.isa import Instruction

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
    assert isa.encode(insns) == raw
    assert Instruction.lddw(1, 0x90ABCDEF12345678) == insns[0]


@pytest.mark.parametrize("raw, message", [
    (b"\x95" + bytes(6), "7 bytes is not a whole number of 8-byte instructions"),
    (bytes.fromhex("1801000001000000"), "slot 0: lddw is missing its second slot"),
    (bytes.fromhex("1801000001000000 9500000000000000"), "slot 1: the second slot of a lddw must"),
])
def test_decode_rejects(raw, message):
    with pytest.raises(isa.DecodeError) as exc:
        isa.decode(raw)
    assert str(exc.value).startswith(message)


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 15), st.integers(0, 15),
                          st.integers(-2**15, 2**15 - 1), st.integers(-2**31, 2**31 - 1),
                          st.integers(-2**31, 2**31 - 1)), max_size=20))
def test_round_trip(fields):
    insns = [Instruction(op, d, s, o, i, hi if op == isa.LDDW else 0) for op, d, s, o, i, hi in fields]
    assert isa.decode(isa.encode(insns)) == insns
