"""What the compiler emits: the object's layout, BTF and line info, golden disassembly, objects
libbpf (bpftool) loads, and compiling from scripts and notebook cells (the command line's
contract is tests/test_cli.py)."""
from __future__ import annotations

import itertools
import linecache
import os
import shutil
import subprocess
import sys

import pytest
from elftools.elf.elffile import ELFFile

from pybpf_uring import compile_file, compile_source
from pybpf_uring.diagnostics import CompileError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden")
SOURCES = {"bench_programs": os.path.join(ROOT, "bench", "programs.py"),
           "packet_stats": os.path.join(ROOT, "samples", "packet_stats.py")}
OBJDUMP = "/usr/lib/llvm-22/bin/llvm-objdump"

KINDS = """
from pybpf_uring import syscall, socket_filter, tracepoint, iouring, Struct, ArrayMap, SkBuff, i32, u32, u64
from pybpf_uring.uring import IoUringCtx

hits = ArrayMap(u64, 4)

class Rec(Struct):
    _common: u64
    ctx: u64
    req: u64
    user_data: u64
    res: i32
    cflags: u32

class Args(Struct):
    a: u64

def bump(k: u32) -> i64:
    hits[k] += 1
    return 0

@syscall
def sys_prog(ctx: Args) -> i32:
    bump(0)
    return ctx.a

@socket_filter
def sock_prog(ctx: SkBuff) -> i32:
    return ctx.len

@tracepoint("io_uring/io_uring_complete")
def tp_prog(ctx: Rec) -> i32:
    bump(1)
    return 0

@iouring
def ring_prog(ctx: IoUringCtx) -> i32:
    ctx.wait_nr = 0
    return 0
""".replace("-> i64", "-> i32").replace("i32, u32, u64", "i32, i64, u32, u64")


def sections(elf: bytes) -> dict[str, object]:
    import io
    f = ELFFile(io.BytesIO(elf))
    return {s.name: s for s in f.iter_sections()}


def test_object_layout_sections_btf_and_no_eh_frame():
    obj = compile_source(KINDS, "kinds.py")
    secs = sections(obj.elf)
    for name in ("syscall", "socket", "tracepoint/io_uring/io_uring_complete", "iouring.s/ring_prog",
                 ".text", "license", ".maps", ".BTF", ".BTF.ext"):
        assert name in secs, name
    assert not any("eh_frame" in n for n in secs)
    assert secs["license"].data() == b"GPL\0"
    assert {p.name: p.kind for p in obj.programs} == {"sys_prog": "syscall", "sock_prog": "socket_filter",
                                                     "tp_prog": "tracepoint", "ring_prog": "iouring"}
    assert [(m.name, m.type, m.key_size, m.value_size, m.max_entries) for m in obj.maps] == [
        ("hits", 2, 4, 8, 4)]
    assert obj.program("ring_prog").sleepable


def test_line_info_maps_instructions_to_python_lines():
    obj = compile_source(KINDS, "kinds.py")
    lines = KINDS.splitlines()
    prog = obj.program("sys_prog").linked()
    assert prog.line_info
    for li in prog.line_info:
        assert li.text.strip() == lines[li.line - 1].strip()
    assert {lines[li.line - 1].strip() for li in prog.line_info} >= {"bump(0)", "return ctx.a", "hits[k] += 1"}


def test_field_exact_contexts_keep_each_access_at_its_size():
    """The RFC ctx and __sk_buff allow each field only at its own offset and size: LLVM must not
    merge `wait_idx` and `wait_nr` into one 8-byte store."""
    src = """
from pybpf_uring import iouring, i32
from pybpf_uring.uring import IoUringCtx

@iouring
def park(ctx: IoUringCtx) -> i32:
    ctx.wait_idx = 1
    ctx.wait_nr = 1
    ctx.user_data += 1
    return 0
"""
    from pybpf_uring.bpf import isa
    insns = compile_source(src, "park.py").program("park").instructions
    ctx_accesses = sorted((i.off, isa.SIZE_BYTES[i.opcode & isa.SIZE_MASK]) for i in insns
                          if i.cls in (isa.STX, isa.ST, isa.LDX) and 10 not in (i.dst, i.src))
    assert ctx_accesses == [(0, 8), (0, 8), (8, 4), (12, 4)]


@pytest.mark.tools("bpftool")
def test_btf_names_program_parameters_and_structs(tmp_path):
    obj = compile_source(KINDS, "kinds.py")
    assert obj.btf is not None
    obj.write(tmp_path / "k.o")
    text = subprocess.run(["bpftool", "btf", "dump", "file", str(tmp_path / "k.o")],
                          capture_output=True, text=True, check=True).stdout
    assert "FUNC 'sys_prog'" in text and "STRUCT 'Args'" in text and "'ctx' type_id=" in text
    assert "FUNC 'bump' type_id=" in text and "linkage=static" in text


@pytest.mark.parametrize("cpu", ["v1", "v2", "v3", "v4"])
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden_disassembly(name, cpu):
    """The code generated for the samples, instruction by instruction.  Regenerate with
    PYBPF_URING_REGEN=1 after a deliberate change, and read the diff."""
    text = compile_file(SOURCES[name], cpu).disasm()
    path = os.path.join(GOLDEN, f"{name}.{cpu}.txt")
    if os.environ.get("PYBPF_URING_REGEN"):
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read()


@pytest.mark.tools("objdump")
@pytest.mark.parametrize("cpu", ["v1", "v4"])
def test_our_disassembly_is_llvm_objdumps(tmp_path, cpu):
    obj = compile_file(SOURCES["bench_programs"], cpu)
    path = tmp_path / "p.o"
    obj.write(path)
    theirs = subprocess.run([OBJDUMP, "-d", str(path)], capture_output=True, text=True, check=True).stdout
    ours = obj.disasm()
    assert "Disassembly of section syscall:" in ours and theirs.endswith(ours)


@pytest.mark.tools("bpftool")
@pytest.mark.kernel
def test_libbpf_loads_our_objects(tmp_path):
    """bpftool (libbpf) opens, relocates and loads every program and map of our object."""
    src = KINDS.split("@tracepoint")[0]  # libbpf cannot load io_uring RFC sections; tracepoints need attach
    obj = compile_source(src, "kinds.py")
    path = tmp_path / "k.o"
    obj.write(path)
    pin = f"/sys/fs/bpf/pybpf_uring_test_{os.getpid()}"
    if not os.path.ismount("/sys/fs/bpf"):
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)
    try:
        run = subprocess.run(["bpftool", "prog", "loadall", str(path), pin], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert sorted(os.listdir(pin)) == ["sock_prog", "sys_prog"]
    finally:
        shutil.rmtree(pin, ignore_errors=True)


def kernel_test_sources() -> dict[str, str]:
    import test_kernel
    sources = {}
    for name in dir(test_kernel):
        src = getattr(test_kernel, name)
        if name.isupper() and isinstance(src, str) and "@" in src:
            sources[name] = src.format(T="i16") if "{T}" in src else src
    return sources


@pytest.mark.tools("bpftool")
@pytest.mark.parametrize("name", sorted(kernel_test_sources()))
def test_libbpf_loads_every_kernel_test_program(tmp_path, name):
    """The objects the kernel tests load through our loader also load through libbpf."""
    obj = compile_source(kernel_test_sources()[name], f"{name}.py")
    path = tmp_path / "p.o"
    obj.write(path)
    pin = f"/sys/fs/bpf/pybpf_uring_{name}_{os.getpid()}"
    try:
        run = subprocess.run(["bpftool", "prog", "loadall", str(path), pin], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]
        assert sorted(os.listdir(pin)) == sorted(p.name for p in obj.programs)
    finally:
        shutil.rmtree(pin, ignore_errors=True)


@pytest.mark.kernel
def test_runtime_loop_bound_needs_no_128_bit_multiply():
    src = """
from pybpf_uring import syscall, Struct, i32, u32, u64

class Args(Struct):
    a: u64
    n: u32
    out: u64

@syscall
def sums(ctx: Args) -> i32:
    i = ctx.a
    total: u64 = 0
    while i < 100:
        total += i
        i += 1
    for j in range(1000):
        if j >= ctx.n:
            break
        total += j * j
    ctx.out = total
    return 0
"""
    obj = compile_source(src, "sums.py")
    with obj.load() as live:
        from pybpf_uring import Struct, u32, u64

        class Args(Struct):
            a: u64
            n: u32
            out: u64
        for a, n in [(0, 0), (5, 10), (99, 1000), (200, 3)]:
            out = live.programs["sums"].test_run(ctx=Args(a=a, n=n)).ctx.out
            assert out == sum(range(a, 100)) + sum(j * j for j in range(min(n, 1000)))


def test_stack_beyond_512_bytes_is_an_error_not_a_crash():
    src = """
from pybpf_uring import syscall, Struct, HashMap, i32, u32, u64

class Big(Struct):
    data: u64[40]

m = HashMap(u32, Big, 4)

class Args(Struct):
    a: u64

@syscall
def big(ctx: Args) -> i32:
    local = Big()
    local.data[1] = ctx.a
    m[1] = local
    m[2] = Big(data=local.data)
    ctx.a = local.data[3]
    return 0
"""
    with pytest.raises(CompileError) as info:
        compile_source(src, "big.py")
    assert str(info.value) == ("error: big.py: big uses 648 bytes of stack after optimisation; BPF allows 512\n"
                               "  note: keep large structs in a map value (m.lookup(k)) instead of locals")


# ----- programs from scripts and notebooks ----------------------------------------------
@pytest.mark.kernel
def test_decorated_function_in_a_script_compiles_with_its_globals(tmp_path):
    script = tmp_path / "script.py"
    script.write_text('''
import json, sys                      # host code the BPF grammar never sees
from pybpf_uring import syscall, Struct, ArrayMap, i32, u32, u64

counts = ArrayMap(u64, 2)
SCALE = 3

class Args(Struct):
    a: u64

host_only = [x ** 2 for x in range(3)]

@syscall
def prog(ctx: Args) -> i32:
    counts[1] += 1
    return ctx.a * SCALE

if __name__ == "__main__":
    obj = prog.compile()
    with obj.load() as live:
        r = live.programs["prog"].test_run(ctx=Args(a=14))
        print(json.dumps([r.retval, live.maps["counts"][1]]))
''')
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[42, 1]"


@pytest.mark.kernel
def test_notebook_cell_compiles_from_the_cell_source():
    cell = '''
from pybpf_uring import syscall, Struct, i32, u64

class CellArgs(Struct):
    a: u64

def twice(x: u64) -> u64:
    return x * 2

@syscall
def cell_prog(ctx: CellArgs) -> i32:
    return twice(ctx.a) + 1
'''
    filename = "<ipython-input-7-0123456789ab>"
    linecache.cache[filename] = (len(cell), None, cell.splitlines(True), filename)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(cell, filename, "exec", dont_inherit=True), namespace)
    obj = namespace["cell_prog"].compile()
    assert [p.name for p in obj.programs] == ["cell_prog"]
    with obj.load() as live:
        assert live.programs["cell_prog"].test_run(ctx=namespace["CellArgs"](a=20)).retval == 41
    html = obj._repr_html_()
    assert "cell_prog" in html and "exit" in html


@pytest.mark.kernel
def test_readme_example_runs_as_written(tmp_path):
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "readme.py"
    script.write_text(snippet)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert (run.returncode, run.stdout) == (0, "42\n"), run.stderr


def test_cli_conformance_plugin_speaks_the_runner_protocol():
    """The project's own cases (tests/data/conformance: 32-bit wrap, loads from the memory
    argument, a wide multiply, a backward jump) through both engines, as the runner calls it."""
    from pybpf_uring.conformance import read_case
    own = os.path.join(ROOT, "tests", "data", "conformance")
    cases = sorted(os.path.join(own, name) for name in os.listdir(own) if name.endswith(".data"))
    assert len(cases) == 4
    for path, jit in itertools.product(cases, ([], ["--jit"])):
        case = read_case(path)
        argv = [sys.executable, "-m", "pybpf_uring", "conformance-plugin", *jit]
        if case.memory:
            argv.append(case.memory.hex(" "))
        run = subprocess.run(argv, input=case.program.hex(" "), capture_output=True, text=True)
        assert (run.returncode, int(run.stdout, 16)) == (0, case.result), run.stderr
    bad = subprocess.run([sys.executable, "-m", "pybpf_uring", "conformance-plugin"], input="zz",
                         capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr and "Traceback" not in bad.stderr
