"""Struct and array globals with initial values (`history: u64[8] = [1, 2, ...]`,
`origin: Pt = Pt(x=-5, tags=[7, 8, 9])`): laid out in `.data` (`.rodata` for a Const) byte for
byte as clang lays out the C twin, with the same symbols and BTF DATASEC; read and written by
programs in the kernel and the engine, and by the host through `globals`; and the located
errors for values that are not constants of the global's shape."""
from __future__ import annotations

import pytest

from pybpf_uring import Ring, compile_source
from pybpf_uring.bpf import btf as btfmod

from kernel_harness import clang_object, diagnostic

SRC = '''
from pybpf_uring import syscall, Struct, Const, i16, i32, u16, u32, u64

class Pt(Struct):
    x: i32
    y: u64
    tags: u16[3]

class Args(Struct):
    which: u32

history: u64[8] = [1, 2, 3, 4, 5, 6, 7, 8]
table: Const[i16[2][3]] = [[-1, 2], [3, -4], [5, 6]]
origin: Pt = Pt(x=-5, tags=[7, 8, 9])
zeros: u32[4] = [0] * 4
ramp: u16[6] = [1, 2] * 3

@syscall
def p(ctx: Args) -> i32:
    history[ctx.which & 7] += 10
    origin.tags[0] += 1
    return history[ctx.which & 7] + table[1][1] + origin.x + origin.tags[2] + zeros[1] + ramp[5]
'''

C_TWIN = r'''
struct Pt { int x; unsigned long long y; unsigned short tags[3]; };
unsigned long long history[8] = {1, 2, 3, 4, 5, 6, 7, 8};
const volatile short table[3][2] = {{-1, 2}, {3, -4}, {5, 6}};
struct Pt origin = {.x = -5, .tags = {7, 8, 9}};
unsigned int zeros[4];
unsigned short ramp[6] = {1, 2, 1, 2, 1, 2};

__attribute__((section("syscall"), used)) int p(unsigned int *which)
{
    history[*which & 7] += 10;
    origin.tags[0] += 1;
    return history[*which & 7] + table[1][1] + origin.x + origin.tags[2] + zeros[1] + ramp[5];
}
char LICENSE[] __attribute__((section("license"), used)) = "GPL";
'''

DATA = (".data", ".rodata", ".bss")


def layout(obj):
    """What clang decides for the globals: each data section's bytes, its symbols (name, offset,
    size) and its BTF DATASEC's variables (name, size)."""
    names = {s.index: s.name for s in obj.sections}
    out = {}
    for sec in obj.sections:
        if sec.name in DATA:
            out[sec.name] = (sec.data if sec.name != ".bss" else sec.size,
                             sorted((s.name, s.value, s.size) for s in obj.symbols
                                    if s.type == "object" and names.get(s.section) == sec.name))
    for t in obj.btf.types:
        if isinstance(t, btfmod.Datasec) and t.name in DATA:
            out[t.name + " BTF"] = sorted((obj.btf[v.type].name, v.size) for v in t.vars)
    return out


@pytest.mark.tools("clang")
def test_initial_values_are_laid_out_as_clang_lays_out_the_c_twin(tmp_path):
    ours = layout(compile_source(SRC, "values.py"))
    assert ours == layout(clang_object(tmp_path, "values", C_TWIN))
    assert ours[".data"][0][:16] == (1).to_bytes(8, "little") + (2).to_bytes(8, "little")
    assert ours[".rodata"][0] == b"\xff\xff\x02\x00\x03\x00\xfc\xff\x05\x00\x06\x00"
    assert ours[".bss"][1] == [("zeros", 0, 16)]           # all zeros: .bss, as clang puts it


@pytest.mark.kernel
def test_the_kernel_reads_and_writes_the_initialised_globals_the_host_sees():
    with compile_source(SRC, "values.py").load() as live:
        run = live.programs["p"].test_run
        g = live.globals
        assert list(g.history) == [1, 2, 3, 4, 5, 6, 7, 8]
        assert [list(row) for row in g.table] == [[-1, 2], [3, -4], [5, 6]]
        assert (g.origin.x, g.origin.y, list(g.origin.tags)) == (-5, 0, [7, 8, 9])
        assert list(g.ramp) == [1, 2, 1, 2, 1, 2]
        # history[3] 4 + 10, table[1][1] -4, origin.x -5, origin.tags[2] 9, zeros[1] 0, ramp[5] 2
        assert run((3).to_bytes(4, "little")).signed_retval == 14 - 4 - 5 + 9 + 2
        assert list(g.history) == [1, 2, 3, 14, 5, 6, 7, 8] and g.origin.tags[0] == 8
        g.history[7] = 100
        g.origin.x = 1000
        assert run((7).to_bytes(4, "little")).signed_retval == 110 - 4 + 1000 + 9 + 2


ENGINE_SRC = '''
from pybpf_uring import iouring, Struct, i32, i64, u32
from pybpf_uring.uring import IoUringCtx

class Acc(Struct):
    runs: u32
    weights: i64[3]

acc: Acc = Acc(runs=1, weights=[10, -20, 30])
steps: i64[4] = [5, 6, 7, 8]
total: i64 = 0

@iouring
def bump(ctx: IoUringCtx) -> i32:
    acc.runs += 1
    total += steps[acc.runs & 3] + acc.weights[1]
    return 0
'''


@pytest.mark.uring
def test_the_engine_runs_with_the_initial_values():
    obj = compile_source(ENGINE_SRC, "engine_values.py")
    with Ring(entries=8) as ring:
        ring.register(obj)
        g = ring.globals
        assert list(g.steps) == [5, 6, 7, 8] and g.acc.runs == 1 and list(g.acc.weights) == [10, -20, 30]
        ring.submit_bpf("bump", 1)
        assert ring.wait_cqe(0, timeout=5).res == 0
        assert g.total == 7 - 20 and g.acc.runs == 2


HEAD = ('from pybpf_uring import syscall, Struct, Const, u8, u16, u32, u64, i32\n\n'
        'class Pt(Struct):\n    x: i32\n    tags: u16[3]\n\nclass Args(Struct):\n    which: u32\n\n')
TAIL = '\n@syscall\ndef p(ctx: Args) -> i32:\n    return 0\n'

ERRORS = {
    'count: u64 = 3\nhist: u64[4] = [1, 2, count, 4]\n':
        "g.py:11:23: error: global 'hist' needs constant values: numbers, module-level constants and "
        "expressions of them\nhist: u64[4] = [1, 2, count, 4]\n                      ^~~~~\n"
        "  note: write a constant here; the program or the host (live.globals.hist) can set other values "
        "after loading",
    'hist: u64[4] = [1, 2, 3]\n':
        "g.py:10:16: error: u64[4] needs 4 values, got 3\nhist: u64[4] = [1, 2, 3]\n"
        "               ^~~~~~~~~\n  note: list every element, or repeat one: [0] * 4",
    'hist: u8[2] = [1, 256]\n':
        "g.py:10:19: error: 256 does not fit in u8\nhist: u8[2] = [1, 256]\n                  ^~~",
    'hist: u8[2] = 5\n':
        "g.py:10:15: error: the value of u8[2] is a list\nhist: u8[2] = 5\n              ^\n"
        "  note: e.g. [0] * 2, or every element listed: [1, 2, ...]",
    'grid: u8[2][2] = [[1, 2], 3]\n':
        "g.py:10:27: error: the value of u8[2] is a list\ngrid: u8[2][2] = [[1, 2], 3]\n"
        "                          ^\n  note: e.g. [0] * 2, or every element listed: [1, 2, ...]",
    'origin: Pt = Pt(x=1, tag=[1, 2, 3])\n':
        "g.py:10:22: error: struct Pt has no field 'tag'\norigin: Pt = Pt(x=1, tag=[1, 2, 3])\n"
        "                     ^~~~~~~~~~~~~\n  note: did you mean 'tags'?",
    'origin: Pt = Pt(1)\n':
        "g.py:10:17: error: Pt(...) takes keyword arguments\norigin: Pt = Pt(1)\n                ^\n"
        "  note: write Pt(x=...)",
    'origin: Pt = [1, 2]\n':
        "g.py:10:14: error: the value of struct Pt is Pt(...)\norigin: Pt = [1, 2]\n             ^~~~~~\n"
        "  note: e.g. Pt(x=...), its fields by keyword, the others zero",
    'origin: Pt = Pt(tags=[1, 2])\n':
        "g.py:10:22: error: u16[3] needs 3 values, got 2\norigin: Pt = Pt(tags=[1, 2])\n"
        "                     ^~~~~~\n  note: list every element, or repeat one: [0] * 3",
    'n: Const[u32[2]] = [1, 2]\nhist: u8[n] = [0]\n':   # only a Const integer is a size
        "g.py:11:10: error: array length must be a positive integer constant\nhist: u8[n] = [0]\n         ^",
}


@pytest.mark.parametrize("body", ERRORS)
def test_a_value_that_is_not_a_constant_of_the_globals_shape_is_located(body):
    assert diagnostic(HEAD + body + TAIL, "g.py") == ERRORS[body]
