"""docs/tutorial.ipynb, executed headless the way Jupyter runs it (nbclient driving a `python3`
ipykernel): every cell must run, and what it shows must be what the tutorial says -- a program
run in the kernel returning 42, map tables with the values the program wrote there, an io_uring
program answering on a real ring.  The copy in docs/ must hold the outputs of such a run."""
from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "tutorial.ipynb"


def cell_output(nb, source: str, mime: str) -> str:
    """The `mime` output of the one code cell whose source ends with `source`."""
    found = [c for c in nb.cells if c.cell_type == "code" and c.source.rstrip().endswith(source)]
    assert len(found) == 1, f"{len(found)} cells end with {source!r}"
    shown = [o["data"][mime] for o in found[0].outputs if mime in o.get("data", {})]
    assert shown, f"the cell ending with {source!r} shows no {mime}"
    return shown[0]


def cells(page: str) -> list[str]:
    """The text of every table cell of an HTML output, in order."""
    return [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", page)]


def table(page: str) -> dict[str, str]:
    """A key/value table of an HTML output as {first cell: second cell}."""
    c = cells(page)
    return dict(zip(c[::2], c[1::2]))


def check_outputs(nb) -> None:
    """What each part of the tutorial shows, as the text says it."""
    # the disassembly: add's instructions under its source lines, twice linked in after it
    listing = html.unescape(re.sub(r"<[^>]+>", "", cell_output(nb, 'obj.program("add")', "text/html")))
    for line in ("; runs[0] += 1", "; doubled[ctx.b[0]] = twice(ctx.a)", "; return ctx.a + ctx.b[0]",
                 "<twice>:", "r0 <<= 0x1", "exit"):
        assert line in listing
    assert listing.index("<add>:") < listing.index("<twice>:")
    # the loaded object: program, kind, fd, and the verifier's count of processed instructions
    program, kind, fd, verified = cells(cell_output(nb, "live", "text/html"))[:4]
    assert (program, kind) == ("add", "syscall") and int(fd) > 2 and int(verified) > 20
    # test_run, computed in the kernel: 40 + 2
    assert cell_output(nb, "result.retval", "text/plain") == "42"
    run = table(cell_output(nb, "result", "text/html"))
    assert run["retval"] == "42 (0x2a)" and run["signed retval"] == "42"
    assert run["ctx"] == "Pair(a=40, b=[2, 0, 0, 0])"
    # the hash map the 20 runs wrote: key i holds twice (i + 100); 16 shown, 4 more said
    doubled_page = cell_output(nb, 'live.maps["doubled"]', "text/html")
    assert table(doubled_page) == {str(i): str(2 * (i + 100)) for i in range(16)}
    assert "… 4 more entries (20 in all)" in doubled_page
    assert table(cell_output(nb, 'live.maps["runs"]', "text/html")) == {"0": "21", "1": "0", "2": "0", "3": "0"}
    # the ring: the request parked on CQ 1, then the answer on CQ 2 and the completion on CQ 0
    parked = html.unescape(cell_output(nb, 'ring.submit_bpf("echo", user_data=5)\nring', "text/html"))
    assert "BPF requests: 0 runnable, 1 parked" in parked and "parked: waits for 1 CQE on CQ 1" in parked
    assert cell_output(nb, "answer, done", "text/plain") == \
        "(Cqe(user_data=40, res=0, flags=0), Cqe(user_data=5, res=0, flags=0))"
    assert table(cell_output(nb, 'ring.maps["seen"]', "text/html")) == {"0": "1"}


def execute(notebook: Path):
    """A docs/ notebook run headless from its first cell, as Jupyter runs it (in its own
    directory); a failing cell fails the test with its traceback.  Nothing of the stored run may
    stand in for this one's, so the stored outputs are cleared first."""
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(nb, kernel_name="python3", timeout=60, allow_errors=False,
                            resources={"metadata": {"path": str(notebook.parent)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"a cell of {notebook.name} failed:\n{exc}", pytrace=False)
    return nb


def check_stored_run(notebook: Path, check_outputs) -> None:
    """The copy in docs/ holds the outputs of one whole run, in order, without errors, that
    `check_outputs` accepts, and no path of the machine it ran on."""
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    check_outputs(nb)
    assert "/work/" not in notebook.read_text()


@pytest.fixture(scope="module")
def executed():
    return execute(NOTEBOOK)


@pytest.mark.kernel
@pytest.mark.uring
def test_every_cell_runs_and_shows_what_the_tutorial_says(executed):
    check_outputs(executed)


def test_the_stored_notebook_holds_the_outputs_of_a_run():
    check_stored_run(NOTEBOOK, check_outputs)
