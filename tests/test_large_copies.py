"""A struct or array copied or zeroed whole, past what the BPF backend expands inline (at most
128 words of up to 8 bytes: limits.copy_stores): the backend would call memcpy, which BPF has
not, through LLVM's fatal error handler -- the end of the process, a notebook's kernel with it.
The checker refuses such an assignment at its value, with the loop to write instead; the loop
compiles (LLVM would turn it back into one memcpy: emit optimises such a module again without
builtins) and the kernel runs it; copies LLVM merges past the limit are an error at the
function, not the end of the process."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pybpf_uring import compile_source
from pybpf_uring.compiler import emit
from pybpf_uring.compiler.check import check
from pybpf_uring.compiler.lower import lower
from pybpf_uring.compiler.parse import parse_source
from pybpf_uring.limits import MAX_COPY_STORES, copy_stores

from kernel_harness import diagnostic

HEAD = ('from pybpf_uring import syscall, Struct, ArrayMap, u8, u16, u32, u64, i32\n\n'
        'class Args(Struct):\n    which: u32\n\n')


def between_maps(t: str) -> str:
    """A map value's array field assigned whole from another's."""
    return (HEAD + f'class Blob(Struct):\n    d: {t}\n\nblobs = ArrayMap(Blob, 2)\n\n'
            '@syscall\ndef p(ctx: Args) -> i32:\n    r = blobs.lookup(0)\n    s = blobs.lookup(1)\n'
            '    if r is None or s is None:\n        return 0\n    s.d = r.d\n    return s.d[7]\n')


def first_pass_copies(src: str) -> list:
    """The memcpy/memset calls too large for the backend in the module's first optimisation."""
    lowered = lower(check(parse_source(src, "x.py")))
    with emit.LLVM:
        return emit.large_copies(str(emit.optimise(lowered.ir, emit.target_machine("v3"), True)))


@pytest.mark.parametrize("t, fits", [("u8[1018]", True), ("u8[1015]", False), ("u8[1019]", False),
                                     ("u16[510]", True), ("u16[511]", False), ("u32[256]", True),
                                     ("u32[257]", False), ("u64[128]", True), ("u64[129]", False)])
def test_the_limit_is_the_backends(t, fits):
    """Each side of the limit, at each alignment: what the checker accepts the backend expands
    (compiled in a child process, which LLVM's fatal error would end), what it refuses it
    could not.  1018 bytes are 127 words and a u16 (128 stores), 1015 are 126 words, a u32, a
    u16 and a u8 (129)."""
    src = between_maps(t)
    size = eval(t.split("[")[1].rstrip("]")) * {"u8": 1, "u16": 2, "u32": 4, "u64": 8}[t.split("[")[0]]
    assert (copy_stores(size) <= MAX_COPY_STORES) == fits
    if fits:
        child = subprocess.run([sys.executable, "-c", "import sys\nfrom pybpf_uring import compile_source\n"
                                "print(len(compile_source(sys.stdin.read(), 'x.py').elf) > 0)"],
                               input=src, capture_output=True, text=True, timeout=120)
        assert child.stdout.strip() == "True", child.stderr
        assert first_pass_copies(src) == []
    else:
        assert f"is too large to assign at once" in diagnostic(src, "x.py")


@pytest.mark.kernel
def test_a_copy_at_the_limit_copies_in_the_kernel():
    with compile_source(between_maps("u8[1018]"), "x.py").load() as live:
        blobs = live.maps["blobs"]
        value = bytes(range(256)) * 3 + bytes(range(250))
        blobs[0] = value
        assert live.programs["p"].test_run(bytes(4)).retval == 7
        assert bytes(blobs[1]) == value


ERRORS = {
    'copy': (
        'a: u8[1100]\nb: u8[1100]\n\n@syscall\ndef p(ctx: Args) -> i32:\n    a = b\n    return 0\n',
        "x.py:11:9: error: a whole u8[1100] (1100 bytes) is too large to assign at once: the BPF backend "
        "copies at most 128 words of up to 8 bytes in one go, and 1100 bytes take 138\n    a = b\n        ^\n"
        "  note: copy it an element at a time in a loop: for i in range(1100): a[i] = b[i]"),
    'zeros': (
        'a: u64[200]\n\n@syscall\ndef p(ctx: Args) -> i32:\n    a = [0] * 200\n    return 0\n',
        "x.py:10:9: error: a whole u64[200] (1600 bytes) is too large to assign at once: the BPF backend "
        "copies at most 128 words of up to 8 bytes in one go, and 1600 bytes take 200\n    a = [0] * 200\n"
        "        ^~~~~~~~~\n  note: fill it an element at a time in a loop: for i in range(200): a[i] = ..."),
    'field_of_a_reference': (
        'class Blob(Struct):\n    d: u8[2000]\n\nblobs = ArrayMap(Blob, 2)\ng: u8[2000]\n\n'
        '@syscall\ndef p(ctx: Args) -> i32:\n    r = blobs.lookup(0)\n    if r is not None:\n'
        '        r.d = g\n    return 0\n',
        "x.py:16:15: error: a whole u8[2000] (2000 bytes) is too large to assign at once: the BPF backend "
        "copies at most 128 words of up to 8 bytes in one go, and 2000 bytes take 250\n        r.d = g\n"
        "              ^\n  note: copy it an element at a time in a loop: for i in range(2000): r.d[i] = g[i]"),
    'struct': (
        'class Big(Struct):\n    n: u32\n    d: u8[1100]\n\ng: Big\n\n'
        '@syscall\ndef p(ctx: Args) -> i32:\n    g = Big(n=1)\n    return 0\n',
        "x.py:14:9: error: a whole Big (1104 bytes) is too large to assign at once: the BPF backend copies "
        "at most 128 words of up to 8 bytes in one go, and 1104 bytes take 138\n    g = Big(n=1)\n"
        "        ^~~~~~~~\n  note: assign its fields one at a time (g.n = ...), an array field in a loop"),
}


@pytest.mark.parametrize("name", ERRORS)
def test_a_whole_copy_past_the_limit_is_refused_at_its_value(name):
    body, expected = ERRORS[name]
    assert diagnostic(HEAD + body, "x.py") == expected


LOOPS = HEAD + '''a: u8[1100]
b: u8[1100]
c: u8[64]

@syscall
def p(ctx: Args) -> i32:
    for i in range(1100):
        a[i] = b[i]
    for i in range(64):
        if i >= ctx.which:
            break
        c[i] = b[i]
    return a[1099]
'''


@pytest.mark.kernel
def test_the_loop_to_write_instead_compiles_and_copies_in_the_kernel():
    """LLVM makes one 1100-byte memcpy of the first loop; optimised without builtins it stays
    a loop, which the verifier accepts (beside a loop that stops early, which LLVM leaves)."""
    assert len(first_pass_copies(LOOPS)) == 1
    with compile_source(LOOPS, "x.py").load() as live:
        g = live.globals
        g.b = [i * 7 % 256 for i in range(1100)]
        assert live.programs["p"].test_run((5).to_bytes(4, "little")).retval == 1099 * 7 % 256
        assert list(g.a) == list(g.b) and list(g.c) == list(g.b)[:5] + [0] * 59


def test_copies_llvm_merges_past_the_limit_are_an_error_not_the_end_of_the_process():
    """Two 600-byte fields zeroed, then copied into another struct: LLVM makes one 1200-byte
    memset of the copies, even without builtins."""
    src = HEAD + ('class Big(Struct):\n    x: u8[600]\n    y: u8[600]\n\ng: Big\nh: Big\n\n'
                  '@syscall\ndef p(ctx: Args) -> i32:\n    g.x = [0] * 600\n    g.y = [0] * 600\n'
                  '    h.x = g.y\n    h.y = g.x\n    return 0\n')
    assert diagnostic(src, "x.py") == (
        "x.py:14:1: error: p: LLVM merged the copies or zeroings ending at line 18 into one of 1200 bytes, "
        "more than the BPF backend copies in one go (at most 128 words of up to 8 bytes)\n"
        "def p(ctx: Args) -> i32:\n^\n  note: copy or zero one of them an element at a time in a loop")
    looped = src.replace("    h.y = g.x\n", "    for i in range(600):\n        h.y[i] = g.x[i]\n")
    assert compile_source(looped, "x.py").elf


def test_a_byte_copy_whose_spills_pass_the_stack_is_refused_when_compiling():
    """A 200-byte map value of bytes copied into a local and back: 400 bytes of slots, but the
    backend's expanded copies spill past 512 bytes, which the verifier refuses ("invalid write
    to stack"); the stack is measured whenever the module copies, not only past 448 of slots."""
    src = HEAD + ('class Blob(Struct):\n    d: u8[200]\n\nblobs = ArrayMap(Blob, 2)\n\n'
                  '@syscall\ndef p(ctx: Args) -> i32:\n    c = blobs[0]\n    c.d[ctx.which & 7] = 1\n'
                  '    blobs[1] = c\n    return c.d[3]\n')
    assert diagnostic(src, "x.py") == (
        "error: x.py: p uses 1112 bytes of stack after optimisation; BPF allows 512\n"
        "  note: keep large structs in a map value (m.lookup(k)) instead of locals")
