"""The helper registry (pybpf_uring/helpers.py) and every table derived from it agree: the
compiler's helpers, the engine's tables on both backends, the native ring's symbols, the docs'
helper tables, and the way faults name a helper."""
from __future__ import annotations

import errno
import re
import sys
import textwrap
from pathlib import Path

import pytest

from pybpf_uring import compile_source, helpers as registry
from pybpf_uring.bpf import isa
from pybpf_uring.compiler.builtins import CTX, HELPERS as COMPILER_HELPERS, INT, REF_SIZE
from pybpf_uring.runtime.engine import BpfFault, Interpreter, InvalidProgram, Memory, MemoryFault
from pybpf_uring.runtime.engine.instance import EngineError, instantiate
from pybpf_uring.runtime.engine.jit_lift import NATIVE_HELPERS
from pybpf_uring.compiler.typesys import IntT

DOCS = Path(__file__).resolve().parent.parent / "docs"
ALL_HELPERS = list(registry.HELPERS.values())
ENGINE_IDS = {h.id for h in ALL_HELPERS if h.engine is not None}


# -- the registry itself ---------------------------------------------------------------------------
@pytest.mark.parametrize("h", ALL_HELPERS, ids=lambda h: h.name)
def test_each_helper_is_well_formed(h):
    assert registry.HELPERS[h.id] is h and registry.BY_NAME[h.name] is h
    assert len(h.args) <= 5 and len(h.masks) == 5
    for i, a in enumerate(h.args):
        assert a.bits in (8, 16, 32, 64)
        if a.kind == registry.MEM:            # a pointer into program memory carries its size
            assert i + 1 < len(h.args) and h.args[i + 1].kind == registry.SIZE, a
        if a.kind == registry.SIZE:
            assert i > 0 and h.args[i - 1].kind == registry.MEM, a
    assert all(isinstance(getattr(errno, e, None), int) for e in h.errors), h.errors
    assert h.errnos == tuple(getattr(errno, e) for e in h.errors)
    assert h.kernel.startswith(("bpf_", "iouring_"))
    assert h.native is None or h.native.startswith("nh_")


def test_labels_name_the_helper_and_its_id():
    assert registry.label(165) == "emit_cqe (165)"
    assert registry.label(1) == "map_lookup_elem (1)"
    assert registry.label(99) == "helper 99"
    assert registry.HELPERS[165].kernel == "iouring_emit_cqe"


@pytest.mark.parametrize("h", [h for h in ALL_HELPERS if h.dsl], ids=lambda h: h.name)
def test_each_dsl_helper_imports_as_python_and_says_where_it_runs(h):
    """A program's module runs as Python: every helper the compiler calls by name is importable
    (the io_uring ones from pybpf_uring.uring, the others from pybpf_uring), and a call from
    Python says it runs only in a program rather than returning something."""
    import pybpf_uring
    from pybpf_uring import uring
    stub = getattr(uring if h.programs == registry.IOURING else pybpf_uring, h.name)
    assert stub.__name__ == h.name
    with pytest.raises(RuntimeError, match=rf"^{h.name}\(\) runs only inside a BPF program, not in Python$"):
        stub()


# -- the compiler -----------------------------------------------------------------------------------
def test_the_compiler_calls_by_name_exactly_the_dsl_helpers():
    assert set(COMPILER_HELPERS) == {h.name for h in ALL_HELPERS if h.dsl}


@pytest.mark.parametrize("h", [h for h in ALL_HELPERS if h.dsl], ids=lambda h: h.name)
def test_the_compilers_view_of_a_helper(h):
    c = COMPILER_HELPERS[h.name]
    assert (c.id, c.programs, c.ret) == (h.id, h.programs, IntT(h.ret.bits, h.ret.signed))
    machine = iter(h.args)
    for p in c.params:                 # each Python argument is one machine argument, or two
        a = next(machine)
        if p.kind == CTX:
            assert a.kind == registry.CTX
        elif p.kind == INT:
            assert a.kind in (registry.INT, registry.UPTR) and p.type == IntT(a.bits, a.signed)
        else:
            assert p.kind == REF_SIZE and a.kind == registry.MEM and p.struct == a.struct
            assert next(machine).kind == registry.SIZE
    assert next(machine, None) is None


EMIT = textwrap.dedent("""
    from pybpf_uring import iouring, i32
    from pybpf_uring.uring import IoUringCtx, emit_cqe

    @iouring
    def post(ctx: IoUringCtx) -> i32:
        emit_cqe(ctx, 1, ctx.user_data, -3, 5)
        r = emit_cqe(ctx, 7, 0, 0, 0)          # no CQ 7: -EINVAL, posted on CQ 1 below
        emit_cqe(ctx, 1, 0xFFFF_FFFF_FFFF, r, 0xFFFF_FFFF)
        return 0
""")


@pytest.mark.uring
@pytest.mark.parametrize("backend", ["interpreter", "jit"])
def test_emit_cqe_reaches_the_ring_with_its_widths_and_errors(backend):
    """Compiler (the call's id and argument widths) and engine (its table, narrowing and the
    ring's errors) agree: the CQEs arrive on the real ring as the program wrote them."""
    from pybpf_uring import Ring
    obj = compile_source(EMIT, "emit.py")
    calls = [ins.imm for ins in obj.programs[0].instructions
             if ins.is_call and ins.src == isa.CALL_HELPER]
    assert calls == [165] * 3
    with Ring(entries=4, cq_sizes=(8,)) as ring:
        ring.register(obj, engine=lambda o: instantiate(o, backend=backend))
        ring.submit_bpf("post", user_data=0x1234_5678_9ABC)
        assert ring.wait_cqe(0, timeout=2).res == 0
        got = [ring.wait_cqe(1, timeout=2) for _ in range(2)]
    assert (got[0].user_data, got[0].res, got[0].flags) == (0x1234_5678_9ABC, -3, 5)
    assert (got[1].user_data, got[1].res, got[1].flags) == (0xFFFF_FFFF_FFFF,
                                                            -registry.HELPERS[165].errnos[0],
                                                            0xFFFF_FFFF)


# -- the engine ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["interpreter", "jit"])
def test_the_engines_table_is_the_registrys(backend):
    inst = instantiate(compile_source(EMIT, "emit.py"), backend=backend)
    table = inst.runner("post").vm.helpers
    assert set(table) == ENGINE_IDS
    for helper_id, fn in table.items():
        assert fn.__name__ == registry.HELPERS[helper_id].engine


def test_native_helpers_are_the_registrys_native_symbols():
    from pybpf_uring.runtime.engine import native_ring
    natives = registry.native_symbols()
    assert NATIVE_HELPERS == frozenset(natives) and set(natives) <= ENGINE_IDS
    assert set(native_ring.native_helpers()) == set(natives)
    text = "".join(getattr(m, "TEXT", "") for name, m in list(sys.modules.items())
                   if name.startswith("pybpf_uring.runtime.engine.native"))
    for symbol in natives.values():
        assert re.search(rf"define \w+ @{symbol}\(", text), symbol


# -- faults name the helper ------------------------------------------------------------------------
def _call(helper_id: int) -> bytes:
    return isa.encode([isa.Instruction(isa.JMP | isa.CALL, imm=helper_id),
                       isa.Instruction(isa.JMP | isa.EXIT)])


@pytest.mark.parametrize("engine", ["interpreter", "jit"])
def test_a_call_the_engine_lacks_names_the_helper(engine):
    make = Interpreter
    if engine == "jit":
        from pybpf_uring.runtime.engine import Jit as make
    with pytest.raises(InvalidProgram, match=r"call to skb_load_bytes \(26\), a helper this engine "
                                             r"does not have \(known: 1\)"):
        make(_call(26), helpers={1: lambda *_: 0})
    with pytest.raises(InvalidProgram, match=r"call to unknown helper 99 \(known: none\)"):
        make(_call(99))


@pytest.mark.parametrize("engine", ["interpreter", "jit"])
def test_a_fault_in_a_helper_names_it(engine):
    make = Interpreter
    if engine == "jit":
        from pybpf_uring.runtime.engine import Jit as make

    def refuse(mem, *_):
        raise MemoryFault("no such CQ region", 0)
    vm = make(_call(165), memory=Memory(), helpers={165: refuse})
    with pytest.raises(BpfFault, match=r"emit_cqe \(165\): no such CQ region"):
        vm.run()


SOCKET = textwrap.dedent("""
    from pybpf_uring import socket_filter, i32, u32, SkBuff, skb_load_bytes

    @socket_filter
    def filt(ctx: SkBuff) -> i32:
        word: u32 = 0
        skb_load_bytes(ctx, 0, word)
        return 0
""")


def test_a_compiled_program_calling_a_helper_the_engine_lacks_is_refused_by_name():
    inst = instantiate(compile_source(SOCKET, "socket.py"))
    with pytest.raises(EngineError, match=r"skb_load_bytes \(26\), a helper this engine does not have"):
        inst.runner("filt")


def test_a_ring_helper_without_a_ring_names_the_helper():
    from pybpf_uring.runtime.ring import ProgramFault
    inst = instantiate(compile_source(EMIT, "emit.py"))
    with pytest.raises(ProgramFault, match=r"emit_cqe \(165\) needs an io_uring request"):
        inst.runner("post").run(bytes(16))


# -- the docs ----------------------------------------------------------------------------------------
def _table(doc: str, heading: str) -> list[list[str]]:
    """The rows of the first table under `heading` in docs/`doc`, as cells."""
    text = (DOCS / doc).read_text()
    section = text[text.index(heading + "\n"):]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif rows:
            break
    return rows[2:]                    # the header and its rule


def _signature(cell: str) -> tuple[str, list[str]]:
    m = re.fullmatch(r"`(\w+)\(([^)]*)\)`", cell)
    assert m, cell
    return m[1], [a.strip() for a in m[2].split(",") if a.strip()]


def test_runtime_md_helper_table_matches_the_registry():
    seen = set()
    for ident, helper, semantics in _table("runtime.md", "## Helpers"):
        if "-" in ident:               # a range: the names, in id order
            lo, hi = map(int, ident.split("-"))
            names = re.findall(r"`(\w+)`", helper)
            assert names == [registry.HELPERS[i].name for i in range(lo, hi + 1)]
            seen.update(range(lo, hi + 1))
            continue
        h = registry.HELPERS[int(ident)]
        name, args = _signature(helper)
        assert name in (h.name, h.kernel) and args == [a.name for a in h.args], helper
        for code in h.errors:
            assert f"-{code}" in semantics, (h.label, code)
        seen.add(h.id)
    assert seen == ENGINE_IDS          # every helper the engine has, and no other


def test_abi_md_rfc_helper_table_matches_the_registry():
    rows = _table("abi.md", "### Helpers")
    assert {int(r[0]) for r in rows} == {h.id for h in ALL_HELPERS if h.programs == registry.IOURING}
    for ident, kernel, python, _args, returns in rows:
        h = registry.HELPERS[int(ident)]
        assert kernel == f"`{h.kernel}`"
        name, args = _signature(python)
        assert name == h.name and len(args) == len(COMPILER_HELPERS[h.name].params)
        for code in h.errors:
            assert f"-{code}" in returns, (h.label, code)


def test_language_md_helper_table_matches_the_registry():
    rows = _table("language.md", "## Helpers")
    for h in ALL_HELPERS:
        if not h.dsl:
            continue
        row = next(r for r in rows if f"`{h.name}(" in r[0])
        calls = re.findall(r"`(\w+)\(", row[0])
        assert row[1] == (", ".join(sorted(h.programs)) or "all"), h.name
        ids = [int(n) for n in re.findall(r"\b\d+\b", row[2])]
        assert ids[-len(calls):][calls.index(h.name)] == h.id, (h.name, row[2])
