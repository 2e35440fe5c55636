"""The repository stands on its own: no tracked file reaches for the sibling reference directory.

A clone in an empty directory has nothing beside it, so any file that names the `shared`
directory next to the checkout -- a test reading cases from there, a doc pointing at it, a script
booting a VM from it -- breaks or misleads there.  What the project needs lives in it
(`tools/vm/`, `docs/abi.md`, `tests/data/conformance/`); the bpf_conformance suite comes from
BPF_CONFORMANCE_TESTS, whose optional default is computed in one place, tests/conftest.py.

Besides the literal relative path, the test catches the two ways code has spelt it: a path join
of `..` and the directory's name, and a pathlib `.parent` joined with it (allowed only in
tests/conftest.py, that one default).  This file builds its own examples from SIBLING, so it
passes its own check.
"""
from __future__ import annotations

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIBLING = "shared"
PATTERNS = (
    re.compile(re.escape(f"../{SIBLING}").encode()),
    re.compile(rb"""["']\.\.["']\s*,\s*["']""" + SIBLING.encode() + rb"""["']"""),
)
PARENT_JOIN = re.compile(rb"""\.parent\s*/\s*["']""" + SIBLING.encode() + rb"""["']""")
PARENT_JOIN_HOME = "tests/conftest.py"


def tracked_files() -> list[str]:
    """The repository's files (for tests marked tools("git"))."""
    run = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], capture_output=True)
    if run.returncode:
        pytest.skip(f"{ROOT} is not a git checkout: no tracked files to check")
    return [name for name in run.stdout.decode().split("\0") if name]


def mentions(relpath: str, data: bytes) -> list[str]:
    patterns = PATTERNS + (() if relpath == PARENT_JOIN_HOME else (PARENT_JOIN,))
    found = []
    for lineno, line in enumerate(data.splitlines(), start=1):
        if any(p.search(line) for p in patterns):
            found.append(f"{relpath}:{lineno}: {line.decode(errors='replace').strip()}")
    return found


@pytest.mark.tools("git")
def test_no_tracked_file_mentions_the_sibling_directory():
    files = tracked_files()
    assert "README.md" in files and "tools/vm/vmrun" in files     # the listing is this repository's
    found = []
    for relpath in files:
        path = os.path.join(ROOT, relpath)
        if not os.path.isfile(path):      # deleted in the work tree, not yet committed
            continue
        with open(path, "rb") as f:
            data = f.read()
        if b"\0" in data:                 # binary
            continue
        found += mentions(relpath, data)
    assert not found, "tracked files reach outside the repository:\n" + "\n".join(found)


@pytest.mark.parametrize("line, hit", [
    (f"see ../{SIBLING}/ABI.md", True),
    (f'VM = os.path.join(ROOT, "..", "{SIBLING}", "vm")', True),
    (f"SUITE = HERE.parent.parent / '{SIBLING}' / 'conformance'", True),
    ("values shared by every program", False),
    ('os.path.join(ROOT, "tools", "vm")', False),
])
def test_the_check_sees_each_spelling(line, hit):
    assert bool(mentions("bench/x.py", line.encode())) == hit
    assert not mentions(PARENT_JOIN_HOME, f"Path(ROOT).parent / '{SIBLING}' / 'conformance'".encode())
