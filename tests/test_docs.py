"""Every code block of README.md and docs/ is run or, where it needs a GPU, a download, real data or
minutes of training, parsed: shell blocks pass `bash -n`, each `encoder-clean` line is parsed by the real
command line (unknown commands, options and bad values fail), `encoder-clean list` lines run, Python
blocks compile and run on the tiny data they use, YAML blocks load and their commands are parsed too.
So the documentation cannot drift from the code without a test failing."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
import yaml
from typer.testing import CliRunner

import encoder_clean
from encoder_clean.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)
# Blocks naming any of these need a GPU, torchrun, a download or data outside the repository: parsed only.
NOT_HERE = ("torchrun", "hf://", "/data/", "OWNER", "joined(", "cuda")
COMMAND = typer.main.get_command(app)


def blocks(language: str) -> list[tuple[str, int, str]]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) == language:
                found.append((f"{document.relative_to(ROOT)}:{text[:match.start()].count(chr(10)) + 1}",
                              match.start(), match.group(2)))
    return found


def block_ids(items: list[tuple[str, int, str]]) -> list[str]:
    return [where for where, _, _ in items]


def shell_lines(script: str) -> list[list[str]]:
    """The simple commands of a shell block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", script)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            commands.append(shlex.split(line, comments=True))
    return commands


def encoder_clean_args(words: list[str]) -> list[str] | None:
    """The arguments after `encoder-clean` or `-m encoder_clean` in a command, or None."""
    for marker in ("encoder-clean", "encoder_clean"):
        if marker in words:
            index = words.index(marker)
            if marker == "encoder_clean" and (index == 0 or words[index - 1] != "-m"):
                continue
            return words[index + 1:]
    return None


def parse(args: list[str]) -> None:
    """Parse a command line the way `encoder-clean` would, without running the command."""
    if not args or args[0] in ("--help", "-h", "--version"):
        return
    name, rest = args[0], args[1:]
    command = COMMAND.get_command(click.Context(COMMAND), name)
    assert command is not None, f"no command {name!r}"
    if "--help" in rest or "-h" in rest:
        return
    with command.make_context(name, list(rest)):
        pass


def run_listing(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def check_shell(script: str) -> None:
    syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    for words in shell_lines(script):
        args = encoder_clean_args(words)
        if args is None:
            for word in words:  # benchmark scripts named in the docs exist
                if word.startswith("benchmarks/") and word.endswith(".py"):
                    assert (ROOT / word).is_file(), word
            continue
        if args and args[0] == "list" and not any(marker in " ".join(words) for marker in NOT_HERE):
            run_listing(args)
        else:
            parse(args)


BASH = blocks("bash")
PYTHON = blocks("python")
YAML = blocks("yaml")


def test_the_docs_have_code_blocks():
    assert len(BASH) >= 10 and len(PYTHON) >= 3 and len(YAML) >= 2


@pytest.mark.parametrize("where, start, script", BASH, ids=block_ids(BASH))
def test_shell_block(where, start, script):
    check_shell(script)


def check_api_names(source: str, where: str) -> None:
    """Every `ec.NAME` a block uses exists, and every keyword given to a config dataclass is one of its fields."""
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ec":
            assert hasattr(encoder_clean, node.attr), f"{where}: encoder_clean has no {node.attr}"
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "ec"):
            target = getattr(encoder_clean, node.func.attr)
            if dataclasses.is_dataclass(target):
                names = {f.name for f in dataclasses.fields(target)}
                for keyword in node.keywords:
                    assert keyword.arg in names, f"{where}: {node.func.attr} has no field {keyword.arg}"


def run_python(source: str, where: str, folder: Path) -> None:
    result = subprocess.run([sys.executable, "-c", source], cwd=folder, capture_output=True, text=True,
                            timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                                              "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, f"{where}: {result.stderr[-3000:]}"


def slow_example(source: str) -> bool:
    """A scan takes tens of seconds even on tiny data: blocks with one run in the slow suite."""
    return "ec.scan(" in source


@pytest.mark.parametrize("where, start, source", PYTHON, ids=block_ids(PYTHON))
def test_python_block(where, start, source, tmp_path):
    check_api_names(source, where)
    if any(marker in source for marker in NOT_HERE) or slow_example(source):
        return
    run_python(source, where, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("where, start, source", [b for b in PYTHON if slow_example(b[2])],
                         ids=block_ids([b for b in PYTHON if slow_example(b[2])]))
def test_python_block_with_a_scan(where, start, source, tmp_path):
    run_python(source, where, tmp_path)


@pytest.mark.parametrize("where, start, text", YAML, ids=block_ids(YAML))
def test_yaml_block(where, start, text):
    document = yaml.safe_load(text)
    scripts = []
    for job in (document.get("jobs") or {}).values():  # a GitHub Actions workflow
        scripts += [step["run"] for step in job["steps"] if "run" in step]
        assert all("run" in step or "uses" in step for step in job["steps"])
    for repo in document.get("repos") or []:  # a pre-commit configuration
        for hook in repo["hooks"]:
            assert re.compile(hook.get("files", ""))
            scripts.append(hook["entry"] + " encoder.safetensors")  # pre-commit appends the files
    assert scripts, f"{where}: neither a workflow nor a pre-commit configuration"
    for script in scripts:
        check_shell(script)


@pytest.mark.slow
def test_readme_shell_blocks_run(tmp_path):
    """The README's commands for real, in order, in one folder (the demo first: minutes of CPU)."""
    for where, _, script in blocks("bash"):
        if not where.startswith("README") or any(marker in script for marker in NOT_HERE):
            continue
        if "pip install" in script or "pytest" in script:
            continue
        result = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                                timeout=3600)
        assert result.returncode in (0, 1), f"{where}: {result.stderr[-3000:]}"  # scan exits 1 on a backdoor
