"""docs/tracing.ipynb, executed headless the way Jupyter runs it (nbclient driving a `python3`
ipykernel): the three io_uring tracing tools loaded and attached from a notebook, filtered to the
notebook kernel's own pid, while the notebook runs a workload with known counts on a real ring.
What the cells show must be those counts, as the kernel's maps hold them: the latency histograms
(SVG bars) with every NOP and every read in its opcode's, top's operations per opcode, errors'
EBADF reads, and the same in the text `pybpf-uring run` prints; and a record written by hand
without the kernel's common header refused at compile time, located in its cell.  The copy in
docs/ must hold the outputs of such a run."""
from __future__ import annotations

import ast
import errno
import re
from pathlib import Path

import pytest

from test_tutorial import cell_output, check_stored_run, execute, table

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "tracing.ipynb"
NOPS, READS, BAD_READS = 10, 3, 2          # the notebook's workload


def printed(nb, source: str) -> str:
    """What the one code cell whose source ends with `source` printed."""
    found = [c for c in nb.cells if c.cell_type == "code" and c.source.rstrip().endswith(source)]
    assert len(found) == 1, f"{len(found)} cells end with {source!r}"
    return "".join(o["text"] for o in found[0].outputs if o["output_type"] == "stream")


def svg_histograms(page: str) -> dict[str, list[int]]:
    """The SVG bar charts of an HTML output: {header: the count beside each bar}, with a check
    that every bucket has its bar."""
    charts = {}
    for svg in re.findall(r"<svg.*?</svg>", page):
        header = re.match(r'<svg[^>]*><text x="0" y="13">(.*?)</text>', svg).group(1)
        counts = [int(n) for n in re.findall(r'<rect [^>]*/><text x="\d+" y="\d+">(\d+)</text>', svg)]
        assert len(counts) == svg.count("<rect") > 0, svg
        charts[header] = counts
    return charts


def text_histogram_total(text: str, group: str) -> int:
    block = text.split(f"@lat_ns[{group}]:\n", 1)[1].split("\n@", 1)[0].split("\n\n", 1)[0]
    return sum(int(n) for n in re.findall(r"^\[.*?[\])]\s+(\d+) \|", block, re.M))


def check_outputs(nb) -> None:
    """The workload's counts, in every view the notebook shows."""
    me = int(cell_output(nb, "me", "text/plain"))
    ebadf = errno.EBADF
    # the workload itself, on the ring: NOPs complete with 0, reads with 4 bytes, bad reads EBADF
    assert ast.literal_eval(cell_output(nb, "results", "text/plain")) == \
        [0] * NOPS + [4] * READS + [-ebadf] * BAD_READS
    attached = cell_output(nb, "links", "text/plain")
    assert attached.count(" attached>") == 5 and "detached" not in attached   # 2 + 1 + 2 programs
    # latency: one SVG histogram per opcode, each request in its opcode's, then the entries
    # table with the keys by their fields
    page = cell_output(nb, 'live["latency"].maps["lat_ns"]', "text/html")
    assert page.startswith("<svg")
    charts = svg_histograms(page)
    assert {h: sum(c) for h, c in charts.items()} == \
        {"@lat_ns[opcode=NOP]:": NOPS, "@lat_ns[opcode=READ]:": READS + BAD_READS}, charts
    entries = re.findall(r"<td>opcode=(\w+), log2=\d+</td><td>(\d+)</td>", page)
    assert sum(int(n) for op, n in entries if op == "NOP") == NOPS
    assert sum(int(n) for op, n in entries if op == "READ") == READS + BAD_READS
    assert "(no entries)" in cell_output(nb, 'live["latency"].maps["start"]', "text/html")
    # top: this notebook's kernel process, its command as the kernel knows it
    ops = table(cell_output(nb, 'live["top"].maps["ops"]', "text/html"))
    [comm] = {re.fullmatch(rf"pid={me}, comm=(.+), opcode=\w+", k).group(1) for k in ops}
    assert ops == {f"pid={me}, comm={comm}, opcode=NOP": str(NOPS),
                   f"pid={me}, comm={comm}, opcode=READ": str(READS + BAD_READS)}
    # errors: the reads of a closed fd, and nothing else
    assert table(cell_output(nb, 'live["errors"].maps["errors"]', "text/html")) == \
        {f"opcode=READ, errno={ebadf}": str(BAD_READS)}
    # the text pybpf-uring run prints at exit
    text = printed(nb, 'print(format_maps(loaded.maps), end="\\n\\n")')
    assert text_histogram_total(text, "opcode=NOP") == NOPS, text
    assert text_histogram_total(text, "opcode=READ") == READS + BAD_READS, text
    assert f"@ops[pid={me}, comm={comm}, opcode=READ]: {READS + BAD_READS}\n" \
           f"@ops[pid={me}, comm={comm}, opcode=NOP]: {NOPS}\n" in text, text
    assert f"@errors[opcode=READ, errno={ebadf}]: {BAD_READS}\n" in text and text.count("@errors[") == 1, text
    assert "@start: (empty)" in text and "@opcode_of: (empty)" in text, text
    # detached at the end
    assert cell_output(nb, "[link.attached for link in links]", "text/plain") == repr([False] * 5)
    # a hand-written record without the common header: refused at compile time, in the cell
    refused = printed(nb, "print(exc)")
    assert re.match(r"Cell In\[\d+\], line 10, col 19: error: Complete: the record starts with the "
                    r"8-byte common header .*\(ctx is at 8\)\n", refused), refused
    assert "note: add `_common: u64` as the first field" in refused, refused


@pytest.fixture(scope="module")
def executed():
    return execute(NOTEBOOK)


@pytest.mark.kernel("bpf", "tracefs", "vmlinux")
@pytest.mark.uring
def test_the_tools_count_the_notebooks_workload_in_every_view(executed):
    check_outputs(executed)


def test_the_stored_notebook_holds_the_outputs_of_a_run():
    check_stored_run(NOTEBOOK, check_outputs)
