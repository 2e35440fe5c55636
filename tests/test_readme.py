"""The README is the first thing a new user runs: its two commands for a fresh machine, the
table of samples and the layout must stay true to the tree."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def sh_blocks() -> list[str]:
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", README, re.S)]


def test_ci_runs_exactly_the_readme_test_command():
    test_command = next(b for b in sh_blocks() if "pytest" in b)
    script = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in script.splitlines() if line and not line.startswith(("#", "set ", "cd ", "export "))]
    assert commands == [test_command]


def test_the_main_command_installs_into_a_venv_and_runs_a_sample():
    main = sh_blocks()[0]
    assert "python3 -m venv .venv" in main and ".venv/bin/pip install ." in main
    sample = re.search(r"\.venv/bin/python (samples/\S+\.py)", main).group(1)
    assert (ROOT / sample).is_file()


def test_every_sample_named_in_the_readme_exists_and_every_sample_is_named():
    named = set(re.findall(r"`(?:samples/)?(\w+\.py)`", README.split("## Samples", 1)[1].split("##", 1)[0]))
    on_disk = {p.name for p in (ROOT / "samples").glob("*.py")}
    assert named == on_disk


def test_the_layout_names_every_module():
    layout = README.split("## Layout", 1)[1]
    modules = sorted(p.relative_to(ROOT / "pybpf_uring") for p in (ROOT / "pybpf_uring").rglob("*.py")
                     if p.name != "__init__.py" and p.name != "__main__.py")
    missing = [str(m) for m in modules if m.name not in layout]
    assert not missing, f"README's Layout does not name: {missing}"
