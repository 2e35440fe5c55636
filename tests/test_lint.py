"""Valid programs pass a standard linter: the language is Python's own syntax with Python's
scopes, so pyflakes must find nothing in the samples, in the complete modules docs/language.md
shows, or in the test programs of tests/test_python_forms.py (a global written without a
`global` statement, a name only an annotation uses, a builtin the compiler knows but Python
does not, would each be flagged)."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pyflakes.api as pyflakes_api
import pytest
from pyflakes.reporter import Reporter

import test_python_forms

ROOT = Path(__file__).resolve().parent.parent


def flakes(code: str, name: str) -> str:
    out = io.StringIO()
    pyflakes_api.check(code, name, Reporter(out, out))
    return out.getvalue()


def doc_modules() -> dict[str, str]:
    """The python blocks of docs/language.md that are whole modules: they import from
    pybpf_uring first and define a decorated program (the other blocks are fragments)."""
    text = (ROOT / "docs" / "language.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return {f"language.md block {i}": b for i, b in enumerate(blocks)
            if b.startswith("from pybpf_uring import ") and re.search(r"^@\w+", b, re.M)}


PROGRAMS = {**{p.name: p.read_text() for p in sorted((ROOT / "samples").glob("*.py"))},
            **doc_modules(),
            "test_python_forms.FORMS": test_python_forms.FORMS,
            "test_python_forms.TWIN_PY": test_python_forms.TWIN_PY,
            "test_python_forms.RING": test_python_forms.RING,
            "test_python_forms.NARROWED_LEN": test_python_forms.NARROWED_LEN}


def test_the_docs_show_a_whole_module_to_lint():
    assert doc_modules(), "docs/language.md should show at least one complete module"


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_valid_programs_pass_pyflakes(name):
    assert flakes(PROGRAMS[name], name) == ""


def test_pyflakes_flags_a_global_written_without_its_statement():
    """What the samples avoid: pyflakes reads `n += 1` in a function as a local used before it is
    assigned, though the compiler writes the module's global; `global n` says what is meant."""
    without = "from pybpf_uring import u64\nn: u64 = 0\n\ndef f() -> None:\n    n += 1\n"
    assert "referenced before assignment" in flakes(without, "g.py")
    assert flakes(without.replace("    n += 1", "    global n\n    n += 1"), "g.py") == ""
