"""The Dockerfile, read as text (no Docker engine needed): each check returns the problems it finds,
and is shown to catch a broken Dockerfile as well as to pass ours."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "README.md"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REQUIRES_PYTHON = SpecifierSet(PYPROJECT["project"]["requires-python"])
CONSOLE_SCRIPTS = set(PYPROJECT["project"]["scripts"])
README_INSTALL = "pip install ."
# pip options that do not change what gets installed
NEUTRAL_PIP_OPTIONS = {
    "--no-cache-dir",
    "-q",
    "--quiet",
    "--no-compile",
    "--disable-pip-version-check",
    "--root-user-action=ignore",
    "--progress-bar=off",
}


# ---------------------------------------------------------------- parsing


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    result, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            instruction, _, arguments = current.strip().partition(" ")
            result.append((instruction.upper(), arguments.strip()))
        current = ""
    return result


def arguments_of(instrs, name: str) -> list[str]:
    return [arguments for instruction, arguments in instrs if instruction == name]


def shell_commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN line (split on &&, ||, ;)."""
    commands = []
    for part in re.split(r"&&|\|\||;", run):
        words = shlex.split(part)
        if words:
            commands.append(words)
    return commands


def env_values(instrs) -> dict[str, str]:
    values = {}
    for arguments in arguments_of(instrs, "ENV"):
        words = shlex.split(arguments)
        if words and "=" not in words[0]:
            values[words[0]] = " ".join(words[1:])  # legacy `ENV KEY value` form
            continue
        for word in words:
            key, _, value = word.partition("=")
            values[key] = value
    return values


def exec_form(arguments: str) -> list[str] | None:
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) else None


# ---------------------------------------------------------------- checks


def base_python_problems(instrs) -> list[str]:
    images = arguments_of(instrs, "FROM")
    if len(images) != 1:
        return [f"expected one FROM, got {images}"]
    image = images[0].split()[0]
    match = re.fullmatch(r"(?:docker\.io/)?(?:library/)?python:(\d+)\.(\d+)[^@]*(@.*)?", image)
    if not match:
        return [f"base image {image} is not an official python:X.Y image"]
    version = Version(f"{match[1]}.{match[2]}")
    if version not in REQUIRES_PYTHON:
        return [f"base image Python {version} does not satisfy requires-python {REQUIRES_PYTHON}"]
    return []


def pip_installs(instrs) -> list[list[str]]:
    """The arguments of each `pip install` in RUN lines, less the options that change nothing."""
    installs = []
    for run in arguments_of(instrs, "RUN"):
        for words in shell_commands(run):
            if words[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
                words = ["pip", *words[3:]]
            if words[:2] in (["pip", "install"], ["pip3", "install"]):
                installs.append([word for word in words[2:] if word not in NEUTRAL_PIP_OPTIONS])
    return installs


def install_problems(instrs) -> list[str]:
    installs = pip_installs(instrs)
    if installs != [["."]]:
        return [f"expected one `pip install .` (README's route), got {installs}"]
    return []


def command_problems(instrs) -> list[str]:
    entrypoints = arguments_of(instrs, "ENTRYPOINT")
    commands = arguments_of(instrs, "CMD")
    if entrypoints:
        argv = exec_form(entrypoints[-1])
    elif commands:
        argv = exec_form(commands[-1])
    else:
        return ["no CMD nor ENTRYPOINT"]
    if not argv:
        return ["CMD/ENTRYPOINT must use the exec form (a JSON list)"]
    if argv[0] not in CONSOLE_SCRIPTS:
        return [f"runs {argv[0]!r}, not a console script of pyproject ({sorted(CONSOLE_SCRIPTS)})"]
    return []


def apt_problems(instrs) -> list[str]:
    problems = []
    for run in arguments_of(instrs, "RUN"):
        commands = shell_commands(run)
        installs = [words for words in commands if words[:2] == ["apt-get", "install"]]
        if not installs:
            continue
        if any("--no-install-recommends" not in words for words in installs):
            problems.append(f"apt-get install without --no-install-recommends: {run}")
        if not any(words[:2] == ["apt-get", "update"] for words in commands):
            problems.append(f"apt-get install without apt-get update in the same RUN: {run}")
        if not any(
            words[:2] == ["rm", "-rf"] and any(w.startswith("/var/lib/apt/lists") for w in words)
            for words in commands
        ):
            problems.append(f"apt lists not removed in the same RUN: {run}")
    return problems


def user_problems(instrs) -> list[str]:
    """Runs as a non-root USER, or any user can write HOME (`docker run --user`)."""
    users = arguments_of(instrs, "USER")
    if users and users[-1].split(":")[0] not in ("root", "0"):
        return []
    home = env_values(instrs).get("HOME")
    if not home:
        return ["neither a non-root USER nor HOME is set"]
    for run in arguments_of(instrs, "RUN"):
        for words in shell_commands(run):
            if (
                words[0] == "chmod"
                and any(re.fullmatch(r"[01]?777|a\+rwx|o\+w", word) for word in words)
                and any(word in (home, "$HOME", "${HOME}") for word in words)
            ):
                return []
    return [f"HOME={home} is not made writable by every user (chmod 1777)"]


def env_problems(instrs) -> list[str]:
    if env_values(instrs).get("PYTHONUNBUFFERED") != "1":
        return ["PYTHONUNBUFFERED=1 is not set: logs would be held back by buffering"]
    return []


def copy_sources(instrs) -> list[str]:
    sources = []
    for instruction, arguments in instrs:
        if instruction not in ("COPY", "ADD"):
            continue
        words = exec_form(arguments) or shlex.split(arguments)
        if any(word.startswith("--from") for word in words):
            continue  # from another stage, not from the repository
        words = [word for word in words if not word.startswith("--")]
        sources.extend(words[:-1])
    return sources


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern]]:
    """(negated, regex) pairs, with Docker's syntax: anchored at the context root, `**` spans
    folders, a pattern matching a folder excludes its content."""
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        patterns.append((negated, re.compile(regex)))
    return patterns


def is_ignored(path: str, patterns) -> bool:
    parts = Path(path).parts
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    ignored = False
    for negated, regex in patterns:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def copy_problems(instrs, root: Path = ROOT) -> list[str]:
    ignore = dockerignore_patterns(DOCKERIGNORE.read_text()) if DOCKERIGNORE.exists() else []
    problems = []
    for source in copy_sources(instrs):
        path = root / source
        if not path.exists():
            problems.append(f"COPY {source}: no such file in the repository")
            continue
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(root).as_posix()
            if "__pycache__" not in relative and is_ignored(relative, ignore):
                problems.append(f"COPY {source}: {relative} is excluded by .dockerignore")
    return problems


CHECKS = [
    base_python_problems,
    install_problems,
    command_problems,
    apt_problems,
    user_problems,
    env_problems,
    copy_problems,
]


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def dockerfile():
    return instructions(DOCKERFILE.read_text())


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_dockerfile(dockerfile, check):
    assert check(dockerfile) == []


def test_install_route_is_the_readme_one(dockerfile):
    assert README.is_file(), "README.md must document the plain install route"
    fenced = []
    in_block = False
    for line in README.read_text().splitlines():
        if line.strip().startswith("```"):
            in_block = not in_block
        elif in_block:
            fenced.append(line.strip().removeprefix("$ ").strip())
    assert README_INSTALL in fenced, f"README.md has no fenced `{README_INSTALL}` line"
    assert pip_installs(dockerfile) == [README_INSTALL.split()[2:]]


GOOD = """
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 HOME=/home/worker
COPY pyproject.toml README.md ./
RUN pip install --no-cache-dir .
RUN mkdir -p "$HOME" && chmod 1777 "$HOME"
CMD ["worker-yolo-training"]
"""


@pytest.mark.parametrize(
    ("check", "old", "new"),
    [
        (base_python_problems, "python:3.11-slim", "python:3.10-slim"),
        (base_python_problems, "python:3.11-slim", "python:3.13-slim"),
        (base_python_problems, "python:3.11-slim", "ubuntu:24.04"),
        (install_problems, "pip install --no-cache-dir .", "pip install worker-yolo-training"),
        (install_problems, "pip install --no-cache-dir .", "pip install -e ."),
        (command_problems, '["worker-yolo-training"]', '["python", "-m", "worker"]'),
        (command_problems, '["worker-yolo-training"]', "worker-yolo-training"),
        (user_problems, 'chmod 1777 "$HOME"', 'chmod 755 "$HOME"'),
        (env_problems, "PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=0"),
        (copy_problems, "README.md ./", "README.md NOTES.md ./"),
    ],
)
def test_checks_catch_broken_dockerfiles(check, old, new):
    assert check(instructions(GOOD)) == []
    assert check(instructions(GOOD.replace(old, new))), f"{check.__name__} missed {new!r}"


@pytest.mark.parametrize(
    "run",
    [
        "apt-get update && apt-get install -y libglib2.0-0",
        "apt-get update && apt-get install -y --no-install-recommends libgomp1",
        "apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*",
    ],
)
def test_apt_check_catches_heavy_layers(run):
    good = "apt-get update && apt-get install -y --no-install-recommends libgomp1 \\\n"
    good += "    && rm -rf /var/lib/apt/lists/*"
    assert apt_problems(instructions(f"RUN {good}")) == []
    assert apt_problems(instructions(f"RUN {run}"))


def test_user_check_accepts_a_non_root_user():
    assert user_problems(instructions("FROM python:3.11-slim\nUSER worker")) == []
    assert user_problems(instructions("FROM python:3.11-slim\nUSER root"))


def test_dockerignore_keeps_the_build_context_small():
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text())
    for path in (".venv/bin/python", ".git/HEAD", "tests/test_cli.py", "benchmarks/README.md"):
        assert is_ignored(path, patterns), path
    for path in (
        "demo-output/model/model.pt",
        "output/x",
        "worker_yolo_training/__pycache__/a.pyc",
    ):
        assert is_ignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "worker_yolo_training/sample/export.sqlite"):
        assert not is_ignored(path, patterns), path


def test_dockerignore_matching_follows_docker():
    patterns = dockerignore_patterns("**/*.pyc\n*.md\n!README.md\ndata\n")
    assert is_ignored("a/b/c.pyc", patterns) and is_ignored("c.pyc", patterns)
    assert is_ignored("NOTES.md", patterns) and not is_ignored("docs/NOTES.md", patterns)
    assert not is_ignored("README.md", patterns)
    assert is_ignored("data/x/y.jpg", patterns) and not is_ignored("database.py", patterns)


def test_libraries_loaded_at_import_are_installed(dockerfile):
    """python-magic (imported by base-worker at start) opens libmagic with ctypes: no wheel brings
    it, so the image must install the Debian package that ships it."""
    import ctypes.util
    import subprocess

    soname = ctypes.util.find_library("magic")
    assert soname, "libmagic is not on this machine"
    owner = subprocess.run(["dpkg", "-S", soname], capture_output=True, text=True, check=True)
    package = owner.stdout.split(":")[0]
    installed = [
        word
        for run in arguments_of(dockerfile, "RUN")
        for words in shell_commands(run)
        if words[:2] == ["apt-get", "install"]
        for word in words[2:]
        if not word.startswith("-")
    ]
    assert package in installed, f"{package} (ships {soname}) is not installed by the Dockerfile"
