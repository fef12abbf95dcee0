"""The Dockerfile, read as text (no Docker engine here): what matters for the image to start and
to be the README's install."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def instruction(name: str) -> list[str]:
    """Arguments of every `name` instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", joined, re.M)]


def test_python_satisfies_requires_python():
    (base,) = instruction("FROM")
    version = re.match(r"python:(\d+\.\d+)", base).group(1)
    assert f"{version}.0" in SpecifierSet(PROJECT["requires-python"])


def test_entry_point_is_the_console_script():
    (command,) = instruction("CMD")
    assert json.loads(command) == ["worker-yolo-training"]
    assert "worker-yolo-training" in PROJECT["scripts"]


def test_install_is_the_readme_one():
    readme = (ROOT / "README.md").read_text()
    assert "pip install ." in readme
    assert any(
        re.search(r"\bpip install (--no-cache-dir )?\.(\s|$)", run) for run in instruction("RUN")
    )


def test_libmagic_is_installed_for_base_worker():
    # arkindex-base-worker imports python-magic, which loads libmagic at import time
    assert any("libmagic1" in run for run in instruction("RUN"))
