"""The Dockerfile, read as text (the test suite needs no Docker engine; `make docker-check` builds
and runs the image, docs/docker.md): what matters for the image to start, to be the README's
install, to run as Teklia's non-root user and to keep a proxy's CA out of its layers."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
CHECK_SCRIPT = (ROOT / "scripts" / "docker_check.sh").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def instruction(name: str) -> list[str]:
    """Arguments of every `name` instruction, continuation lines joined, comments left out."""
    lines = [line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", joined, re.M)]


def build_arguments() -> dict[str, str]:
    return dict(arg.partition("=")[::2] for arg in instruction("ARG"))


def test_base_image_is_a_build_argument():
    (base,) = instruction("FROM")
    name = re.fullmatch(r"\$\{?(\w+)\}?", base).group(1)
    assert name in build_arguments()
    # The ARG comes before the FROM that uses it (else FROM sees it empty)
    assert DOCKERFILE.index(f"ARG {name}") < DOCKERFILE.index("FROM")


def test_default_base_python_satisfies_requires_python():
    (base,) = instruction("FROM")
    default = build_arguments()[base.strip("${}")]
    version = re.match(r"python:(\d+\.\d+)", default).group(1)
    assert f"{version}.0" in SpecifierSet(PROJECT["requires-python"])


def test_entry_point_is_the_console_script():
    (command,) = instruction("CMD")
    assert json.loads(command) == ["worker-yolo-training"]
    assert "worker-yolo-training" in PROJECT["scripts"]


def test_install_is_the_readme_one():
    readme = (ROOT / "README.md").read_text()
    assert "pip install ." in readme
    assert any(re.search(r"\bpip install (--\S+ )*\.(\s|$)", run) for run in instruction("RUN"))


def test_libmagic_is_installed_for_base_worker():
    # arkindex-base-worker imports python-magic, which loads libmagic at import time
    assert any("libmagic1" in run for run in instruction("RUN"))


def test_runs_as_teklia_non_root_user():
    assert instruction("USER")[-1] == "worker"
    (useradd,) = [run for run in instruction("RUN") if "useradd" in run]
    assert re.search(r"--uid 2000\b.*\bworker\b", useradd)


def test_no_certificate_is_copied_into_a_layer():
    copied = " ".join(instruction("COPY") + instruction("ADD"))
    assert not re.search(r"\.(crt|pem)\b|ca-certificates|/etc/ssl", copied)
    # The CA reaches pip only as a build secret, mounted for the one RUN that needs it
    for run in instruction("RUN"):
        if "PIP_CERT" in run:
            assert "--mount=type=secret,id=ca" in run
            assert "/etc/ssl" not in run


def test_check_script_passes_the_secrets_the_dockerfile_mounts():
    mounted = set(re.findall(r"--mount=type=secret,id=(\w+)", DOCKERFILE))
    passed = set(re.findall(r'--secret "id=(\w+),src=', CHECK_SCRIPT))
    assert mounted == passed == {"ca", "pipconf"}
