"""Programs written in notebook cells, run through a real IPython shell (the machinery a Jupyter
kernel uses: cells compiled under IPython's own file names, registered with linecache, leading
blank lines stripped), not a simulation of it."""
from __future__ import annotations

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
    first, source, caret, note = message.splitlines()
    assert first.startswith("<ipython-input-") and first.endswith(":3:12: error: struct Args has no field 'b'")
    assert source == "    return ctx.b"
    assert caret == "           ^~~~~"
    assert note == "  note: its fields are: a"
