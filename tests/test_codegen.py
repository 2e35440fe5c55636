"""codegen.fill, the one form of the engine's generated code, and the interpreter's templates.

fill parses a template once and joins its parts; it must say exactly what string.Template says
(the form the native ring's IR and the interpreter's Python are written in), refuse a name it
was given no value for, and every semantic template must name only the placeholders its two
consumers (closures and blocks) fill.
"""
from __future__ import annotations

import string

import pytest
from hypothesis import given, settings, strategies as st

from pybpf_uring.runtime.engine import Interpreter, Memory, blocks, semantics
from pybpf_uring.runtime.engine.codegen import TemplateError, fill, uses
from pybpf_uring.runtime.engine.memory import BIAS, REGION_SHIFT

NAMES = ["A", "B", "MASK", "X_1", "_y"]
CHUNK = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="$"), max_size=6),
    st.sampled_from(NAMES).map(lambda n: "$" + n),
    st.sampled_from(NAMES).map(lambda n: "${" + n + "}"),
    st.just("$$"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(CHUNK, max_size=12).map("".join),
       st.fixed_dictionaries({n: st.one_of(st.integers(), st.text(max_size=5)) for n in NAMES}))
def test_fill_says_what_string_template_says(text, values):
    try:
        expected = string.Template(text).substitute(values)
    except KeyError as exc:                  # "$A" then "0": the name is A0, which has no value
        with pytest.raises(TemplateError, match=rf"\${exc.args[0]} has no value"):
            fill(text, values)
        return
    assert fill(text, values) == expected
    assert fill(text, values) == expected    # the parsed form is reused


def test_a_placeholder_without_a_value_is_an_error_naming_it():
    with pytest.raises(TemplateError, match=r"placeholder \$SIZE has no value"):
        fill("U$SIZE(b_, o_)", {"DST": "r1"})


@pytest.mark.parametrize("text", ["a $ b", "${MASK", "$1"])
def test_a_malformed_template_is_an_error(text):
    with pytest.raises(TemplateError, match="malformed template"):
        fill(text, {"MASK": 1})


def test_uses_counts_both_spellings_and_not_escapes():
    assert uses("$A + ${A} - $$A + $AB", "A") == 2


@pytest.mark.parametrize("key", sorted(semantics.ALU_EXPR))
def test_alu_expressions_name_only_operands_and_widths(key):
    text = semantics.ALU_EXPR[key]
    names = {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(text)}
    assert names <= {"A", "B", "MASK", "SIGN", "SHIFT"}
    fill(text, {"A": "a", "B": "b", **semantics.width(0x07)})   # a statement both paths can fill
    assert semantics.ALU_READS[key] == ("A" in names, "B" in names)


@pytest.mark.parametrize("op", sorted(semantics.COND_EXPR))
def test_conditions_name_only_operands(op):
    text = semantics.COND_EXPR[op]
    names = {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(text)}
    assert names <= {"A", "B", "SA", "SB"} and names & {"A", "SA"}


def test_block_source_spells_memorys_address_layout():
    """A load inlined in a block finds its region as memory.py lays addresses out."""
    memory = Memory()
    region = memory.map(bytearray(8), "in")
    region.buf[:] = (0x1122334455667788).to_bytes(8, "little")
    program = bytes.fromhex("7911000000000000" "bf10000000000000" "9500000000000000")
    vm = Interpreter(program, memory=memory)
    assert vm.run(region.base) == 0x1122334455667788
    assert f"a_ >> {REGION_SHIFT}" in vm.block_source
    assert f"- {semantics.literal(BIAS)}" in vm.block_source
    assert blocks.LOADS[1] in vm.block_source
