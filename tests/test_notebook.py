"""Programs written in notebook cells, run through a real IPython shell (the machinery a Jupyter
kernel uses: cells compiled under IPython's own file names, registered with linecache, leading
blank lines stripped), not a simulation of it."""
from __future__ import annotations

import re

import pytest

from IPython.core.interactiveshell import InteractiveShell


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    sh.reset()
    yield sh
    sh.reset()
    InteractiveShell.clear_instance()


def run(shell, cell: str):
    result = shell.run_cell(cell, store_history=True)
    if not result.success:
        raise AssertionError(f"cell failed: {result.error_before_exec or result.error_in_exec!r}")
    return result.result


DEFINE = '''
from pybpf_uring import syscall, iouring, Struct, ArrayMap, i32, u64
from pybpf_uring.uring import IoUringCtx, Cqe, emit_cqe, reap_cqe

class Args(Struct):
    a: u64

def twice(x: u64) -> u64:
    return x * 2

@syscall
def doubled(ctx: Args) -> i32:
    return twice(ctx.a) + 1
'''


@pytest.mark.kernel
def test_a_cell_program_compiles_and_runs_in_the_kernel(shell):
    run(shell, DEFINE)
    assert run(shell, '''
obj = doubled.compile()
with obj.load() as live:
    value = live.programs["doubled"].test_run(ctx=Args(a=20)).retval
value
''') == 41
    # what the notebook shows for the compiled object: its programs and their disassembly
    html = run(shell, "obj._repr_html_()")
    assert "doubled" in html and "exit" in html


@pytest.mark.uring
def test_a_cell_io_uring_program_runs_on_a_real_ring(shell):
    run(shell, DEFINE)
    run(shell, '''
seen = ArrayMap(u64, 1)

@iouring
def echo(ctx: IoUringCtx) -> i32:
    cqe = Cqe()
    if reap_cqe(ctx, 1, cqe) == 0:
        seen[0] += 1
        emit_cqe(ctx, 2, cqe.user_data * 10, cqe.res, 0)
        return 0
    ctx.wait_idx = 1
    ctx.wait_nr = 1
    return 0
''')
    out = run(shell, '''
from pybpf_uring import Ring
from pybpf_uring.uring import prep_nop
with Ring(entries=8, cq_sizes=(8, 8)) as ring:
    ring.register(echo.compile())
    ring.submit_bpf("echo", user_data=5)
    sqe = ring.sqe()
    prep_nop(sqe)
    sqe.user_data, sqe.cq_idx = 4, 1
    ring.submit(sqe)
    got = ring.wait_cqe(2, timeout=5)
    done = ring.wait_cqe(0, timeout=5)
    result = (got.user_data, got.res, done.user_data, done.res, ring.maps["seen"][0])
result
''')
    assert out == (40, 0, 5, 0, 1)


def test_a_mistake_in_a_cell_names_the_cell_line_and_column(shell):
    run(shell, DEFINE)
    run(shell, '''
@syscall
def bad(ctx: Args) -> i32:
    return ctx.b
''')
    message = run(shell, '''
try:
    bad.compile()
    message = None
except Exception as exc:
    message = str(exc)
message
''')
    # named as IPython's own tracebacks name the cell: In[2] is the cell that defined `bad`
    assert message == BAD_FIELD.format(cell="Cell In[2], line 3, col 12", field="b")


BAD_FIELD = """{cell}: error: struct Args has no field '{field}'
    return ctx.{field}
           ^~~~~
  note: its fields are: a"""


def test_an_uncaught_mistake_shows_the_diagnostic_not_a_traceback(shell, capsys, monkeypatch):
    run(shell, DEFINE)
    run(shell, """
@syscall
def bad(ctx: Args) -> i32:
    return ctx.b
""")
    capsys.readouterr()
    result = shell.run_cell("bad.compile()", store_history=True)
    assert type(result.error_in_exec).__name__ == "CompileError"
    # IPython prints what CompileError._render_traceback_ returns instead of the traceback
    assert capsys.readouterr().out == BAD_FIELD.format(cell="Cell In[2], line 3, col 12", field="b") + "\n"

    monkeypatch.setenv("PYBPF_URING_DEBUG", "1")   # debugging pybpf_uring: the whole traceback
    shell.run_cell("bad.compile()", store_history=True)
    shown = capsys.readouterr().out
    assert "Traceback" in shown and "check.py" in shown and "struct Args has no field 'b'" in shown


TIMED = """
@syscall
def timed(ctx: Args) -> i32:
    return twice(ctx.a) + {add}
"""


@pytest.mark.kernel
@pytest.mark.parametrize("magic", ["%%time", "%%capture captured"])
def test_a_program_in_a_cell_magic_compiles_and_runs_in_the_kernel(shell, magic):
    """`%%time` compiles its cell's body itself, as `<timed exec>`, which linecache never
    sees; `%%capture` runs it as a cell of its own.  Either way the program compiles, with the
    subprogram it calls, and its mistakes name the cell."""
    run(shell, DEFINE)
    run(shell, f"{magic}\n" + TIMED.format(add=1))
    assert run(shell, """
with timed.compile().load() as live:
    value = live.programs["timed"].test_run(ctx=Args(a=20)).retval
value
""") == 41
    run(shell, f"""{magic}
@syscall
def bad(ctx: Args) -> i32:
    return ctx.z

def boom():
    raise ValueError("where IPython says this cell is")
""")
    message = run(shell, """
try:
    bad.compile()
except Exception as exc:
    message = str(exc)
message
""")
    if magic == "%%time":
        # IPython's own traceback says only `<timed exec>:6` here; the cell is the one that ran
        # the magic, lines counted in its body as that traceback counts them
        assert message == BAD_FIELD.format(cell="Cell In[4], line 3, col 12", field="z")
        return
    # %%capture: the cell is named and lines counted as IPython's own traceback of an error
    # raised in that cell names and counts them (IPython 8 and 9 number its body differently)
    ipython_says = run(shell, """
import sys
try:
    boom()
except ValueError:
    frames = get_ipython().InteractiveTB.structured_traceback(*sys.exc_info())
"\\n".join(frames)
""")
    cell = re.findall(r"(Cell In\[\d+\]), line 6", re.sub(r"\x1b\[[0-9;]*m", "", ipython_says))
    assert len(cell) == 1, ipython_says
    assert message == BAD_FIELD.format(cell=f"{cell[0]}, line 3, col 12", field="z")


@pytest.mark.kernel
def test_a_timed_cell_run_again_compiles_the_function_each_run_made(shell):
    """Every `%%time` cell compiles as `<timed exec>`: the source is the history's cell whose
    code is the function's own, so a redefinition and the function it replaced each compile
    from the text that made them."""
    run(shell, DEFINE)
    run(shell, "%%time\n" + TIMED.format(add=1))
    run(shell, "first = timed")
    run(shell, "%%time\n" + TIMED.format(add=2))
    assert run(shell, """
def value(program):
    with program.compile().load() as live:
        return live.programs["timed"].test_run(ctx=Args(a=20)).retval
(value(first), value(timed))
""") == (41, 42)


SUBPROGRAM_CELLS = ('''
from pybpf_uring import syscall, Struct, i32, u64

class Args(Struct):
    a: u64

def twice(x: u64) -> u64:
    return x * 2
''', '''
def plus(x: u64) -> u64:
    y = twice(x)
    return y + 1

@syscall
def doubled(ctx: Args) -> i32:
    return plus(ctx.a) + 1
''')


def _source_lines(disasm: str) -> dict[str, list[str]]:
    """Each function's `; source` lines in a disassembly, by function name."""
    out: dict[str, list[str]] = {}
    name = None
    for line in disasm.splitlines():
        if line.endswith(">:"):
            name = line.split("<", 1)[1][:-2]
            out[name] = []
        elif line.startswith("; ") and name is not None:
            out[name].append(line)
    return out


@pytest.mark.kernel
@pytest.mark.parametrize("magic", ["", "%%time\n"])
def test_subprograms_from_cells_show_their_own_source_lines(shell, tmp_path, magic):
    """A program's subprograms, from its own cell (plus) and an earlier one (twice), carry
    their own lines in .BTF.ext, as the same code compiled from a file does; under %%time,
    where every cell compiles as `<timed exec>`, each cell's lines stay its own."""
    for cell in SUBPROGRAM_CELLS:
        run(shell, magic + cell)
    obj = run(shell, "doubled.compile()")
    linked = obj.program("doubled").linked()
    lines = _source_lines(linked.disasm(source=True))
    assert lines["twice"][-1] == "; return x * 2"
    assert lines["plus"] == ["; y = twice(x)", "; return y + 1"]
    assert lines["doubled"] == ["; return plus(ctx.a) + 1"]
    path = tmp_path / "cells.py"
    path.write_text("".join(SUBPROGRAM_CELLS))
    from pybpf_uring import compile_file
    from_file = compile_file(path).program("doubled").linked()
    assert lines == _source_lines(from_file.disasm(source=True))
    assert linked.encode() == from_file.encode()
    # the subprogram as the object holds it, before linking, has its lines too
    (sub,) = [p for p in obj.subprograms if p.name == "twice"]
    assert "; return x * 2" in sub.disasm(source=True)
    with obj.load() as live:   # and the kernel takes the object's line info
        assert live.programs["doubled"].test_run(ctx=shell.user_ns["Args"](a=20)).retval == 42
