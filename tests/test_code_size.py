"""Code as tight as clang's: bench/programs.py against its C twin bench/programs.c.

Per program and cpu, our object has at most clang-22 -O2's instructions (subprograms included,
as the kernel gets them).  The twins
must mean the same thing for that to mean anything, so both objects are loaded into the kernel
and run with test_run on the same ctx values, edge cases first: each must leave the same ctx
and return value, and the maps the same contents.

Loops: a constant-trip loop's exit value is folded as clang folds it (the sum of squares of 0..99
is one constant), and a loop whose closed form would need a multiply wider than 64 bits -- which
the BPF backend cannot lower and reports by ending the process -- still compiles, to a loop.
"""
from __future__ import annotations

import ctypes
import importlib.util
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import probes
from kernel_harness import loaded, wrap
from pybpf_uring import BpfObject, compile_file, compile_source

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS_PY, PROGRAMS_C = ROOT / "bench" / "programs.py", ROOT / "bench" / "programs.c"
CPUS = ("v1", "v2", "v3", "v4")


def host_module():
    """bench/programs.py run as Python: its Struct classes are the ctx types on the host."""
    spec = importlib.util.spec_from_file_location("bench_programs", PROGRAMS_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    """cpu → (ours, clang-22's) for the bench programs."""
    out = tmp_path_factory.mktemp("twins")
    probes.require("clang")
    built = {}
    for cpu in CPUS:
        o = out / f"twin-{cpu}.o"
        subprocess.run([probes.CLANG, "-O2", "-g", "-target", "bpf", f"-mcpu={cpu}", "-c",
                        str(PROGRAMS_C), "-o", str(o)], check=True)
        built[cpu] = compile_file(PROGRAMS_PY, cpu), BpfObject.read(o)
    return built


@pytest.mark.tools("clang")
@pytest.mark.parametrize("cpu", CPUS)
def test_no_program_is_longer_than_its_c_twin(objects, cpu):
    ours, theirs = objects[cpu]
    mine = {p.name: len(p.linked().instructions) for p in ours.programs}
    clangs = {p.name: len(p.linked().instructions) for p in theirs.programs}
    assert set(mine) == set(clangs)
    longer = {name: (mine[name], clangs[name]) for name in mine if mine[name] > clangs[name]}
    assert not longer, f"cpu {cpu}: (ours, clang's) instructions: {longer}"
    # the folds this file's docstring names, exactly as clang makes them
    assert mine["sum_squares"] == clangs["sum_squares"] <= 4


EDGES = (0, 1, -1, 2, -2, 3, -3, 7, -7, 10, -10, 13, -13, 1000, -1000,
         2**63 - 1, -2**63, 2**31 - 1, -2**31, 2**32, 0x5555_5555_5555_5555)


def ctx_values(module, rng: random.Random):
    """Args values: every pair of edge cases for a and b, then random ones."""
    pairs = [(a, b) for a in EDGES for b in EDGES[:13]] + [
        (rng.randrange(-2**63, 2**63), rng.choice([rng.randrange(-2**63, 2**63), rng.randrange(-50, 50)]))
        for _ in range(60)]
    for i, (a, b) in enumerate(pairs):
        data = [rng.choice([0, 1, 2**32 - 1, rng.randrange(2**32), rng.randrange(100)]) for _ in range(16)]
        key = rng.choice([0, 1, 7, 2**32 - 1, rng.randrange(2**32), rng.randrange(20)])
        n = rng.choice([0, 1, 3, 2**32 - 1, rng.randrange(2**32), rng.randrange(100)])
        yield module.Args(a=a, b=b, key=key, n=n, data=(ctypes.c_uint32 * 16)(*data), out=i)


@pytest.mark.tools("clang")
@pytest.mark.kernel("syscall_programs")
@pytest.mark.parametrize("cpu", ("v2", "v4"))
def test_the_twins_compute_the_same(objects, cpu):
    module, rng = host_module(), random.Random(12)
    ours, theirs = objects[cpu]
    with ours.load() as a, theirs.load() as b:
        names = [p.name for p in ours.programs]
        for name in names:
            if name == "struct_copy":
                for _ in range(20):
                    raw = bytes(rng.randrange(256) for _ in range(ctypes.sizeof(module.Boxes)))
                    ctx = module.Boxes.from_buffer_copy(raw)
                    got, want = a.programs[name].test_run(ctx), b.programs[name].test_run(ctx)
                    assert bytes(got.ctx) == bytes(want.ctx) and got.retval == want.retval
                continue
            for ctx in ctx_values(module, rng):
                got, want = a.programs[name].test_run(ctx), b.programs[name].test_run(ctx)
                assert (got.retval, bytes(got.ctx)) == (want.retval, bytes(want.ctx)), \
                    (name, ctx.a, ctx.b, ctx.key, ctx.n, got.ctx.out, want.ctx.out)
        for m in ("counts", "seen"):
            assert sorted(a.maps[m].items()) == sorted(b.maps[m].items()), m


QUADRATIC_FROM_RUNTIME_START = textwrap.dedent("""
    from pybpf_uring import syscall, Struct, i32, u64

    class A(Struct):
        m: u64
        out: u64

    @syscall
    def squares_from(ctx: A) -> i32:
        total: u64 = 0
        i: u64 = ctx.m
        while i < 1000:
            total += i * i
            i += 1
        ctx.out = total
        return 0
""")


def test_a_closed_form_wider_than_64_bits_leaves_the_loop():
    """LLVM's closed form of this loop multiplies in 65 bits (__multi3 on BPF, a fatal error that
    ends the process): compiled in a child process, so a regression fails here, not the run."""
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from pybpf_uring import compile_source; "
         "o = compile_source(sys.stdin.read(), 'q.py'); print(len(o.programs[0].instructions))"],
        input=QUADRATIC_FROM_RUNTIME_START, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    assert 8 <= int(child.stdout) <= 20   # the loop, not a closed form


def test_compiling_a_wide_closed_form_does_not_change_later_compiles():
    """-replexitval is process-wide in LLVM: the fallback for one module must not stop the next
    module's constant-trip loop from folding."""
    src = (ROOT / "bench" / "programs.py").read_text()
    before = len(compile_source(src, "p.py").programs[6].instructions)
    compile_source(QUADRATIC_FROM_RUNTIME_START, "q.py")
    after = compile_source(src, "p.py")
    assert after.programs[6].name == "sum_squares"
    assert len(after.programs[6].instructions) == before <= 4


def test_a_comment_naming_a_wide_type_does_not_change_the_code():
    """Only instructions are searched for a multiply wider than 64 bits: the source text, which
    travels in the debug metadata, once sent a module whose comment said "i65" down the
    fallback, and sum_squares' constant-trip loop stayed a loop (11 instructions, not 4)."""
    src = (ROOT / "bench" / "programs.py").read_text()
    plain = compile_source(src, "p.py")
    commented = compile_source(src + "# the closed form multiplies in i65 ( i128, i65)\n", "p.py")
    assert [len(p.instructions) for p in commented.programs] == [len(p.instructions) for p in plain.programs]
    assert len(commented.programs[6].instructions) <= 4


def test_threads_compiling_at_once_each_get_their_exit_value_setting():
    """Two threads compile at once, one a module whose loops keep their exit values (the wide
    closed form) and one whose constant-trip loop folds: each always gets its own setting, and
    neither races the other inside LLVM (one global context for every module llvmlite parses)."""
    import threading
    small = textwrap.dedent("""
        from pybpf_uring import syscall, Struct, i32, u64

        class A(Struct):
            out: u64

        @syscall
        def squares(ctx: A) -> i32:
            total: u64 = 0
            for i in range(100):
                total += u64(i * i)
            ctx.out = total
            return 0
    """)
    sizes, errors = [], []

    def compile_many(src: str, keep: bool) -> None:
        try:
            for _ in range(8):
                obj = compile_source(src, "t.py")
                if keep:
                    sizes.append(len(obj.programs[0].instructions))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=compile_many, args=(QUADRATIC_FROM_RUNTIME_START, False)),
               threading.Thread(target=compile_many, args=(small, True))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sizes == [sizes[0]] * 8 and sizes[0] <= 4, (errors, sizes)


@pytest.mark.kernel("syscall_programs")
@pytest.mark.parametrize("m", (0, 1, 2, 999, 1000, 5000, 2**32 + 3, 2**64 - 1))
def test_the_wide_closed_form_loop_runs_right(m):
    with loaded(QUADRATIC_FROM_RUNTIME_START) as (live, ns):
        res = live.programs["squares_from"].test_run(ns["A"](m=m, out=7))
        assert res.ctx.out == wrap(sum(i * i for i in range(m, 1000)), 64, False)
