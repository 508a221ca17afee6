"""Run the venv's Snakemake on the checkout and read what it prints (dry-run job blocks, job table, rule graph)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_snakemake(*args: str, extra_path: Iterable[Path] = (), timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m snakemake ARGS` in the checkout, with the venv's bin/ (its `sharpgen`) and `extra_path` on PATH."""
    env = dict(os.environ)
    path = [*map(str, extra_path), str(Path(sys.executable).parent), env.get("PATH", "")]
    env["PATH"] = os.pathsep.join(path)
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _value(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def planned_jobs(output: str) -> dict[str, int]:
    """The "Job stats" table of a (dry) run: rule -> number of jobs; {} when there is nothing to do."""
    match = re.search(r"^job\s+count\s*\n-+\s+-+\s*\n(.*?)^total\s+\d+", output, re.MULTILINE | re.DOTALL)
    if match is None:
        return {}
    rows = (line.split() for line in match.group(1).splitlines() if line.strip())
    return {name: int(count) for name, count in rows}


def job_blocks(output: str) -> dict[str, dict]:
    """Per rule, what a dry run prints about its (last) job: threads, resources, reason and shell command."""
    jobs: dict[str, dict] = {}
    current: dict | None = None
    for line in output.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            current = jobs[match.group(1)] = {"threads": 1, "resources": {}, "reason": "", "shell": None}
        elif current is None:
            continue
        elif match := re.match(r"^\s+(threads|reason|resources): (.*)$", line):
            key, text = match.groups()
            if key == "threads":
                current["threads"] = int(text)
            elif key == "reason":
                current["reason"] = text
            else:
                pairs = (item.split("=", 1) for item in text.split(", ") if "=" in item)
                current["resources"] = {name: _value(value) for name, value in pairs}
        elif line.startswith("Shell command: "):
            command = line.removeprefix("Shell command: ")
            current["shell"] = None if command == "None" else command
            current = None
    return jobs


def rule_graph(dot: str) -> dict[str, set[str]]:
    """`snakemake --rulegraph` (Graphviz dot) as rule -> the rules that consume its outputs."""
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', dot, re.MULTILINE))
    graph = {name: set() for name in names.values()}
    for source, target in re.findall(r"^\s*(\d+)\s*->\s*(\d+)", dot, re.MULTILINE):
        graph[names[source]].add(names[target])
    return graph


def downstream(graph: dict[str, set[str]], rule: str) -> set[str]:
    """Every rule that (transitively) consumes an output of `rule`, not `rule` itself."""
    seen: set[str] = set()
    todo = list(graph[rule])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return seen


def summary(output: str) -> list[dict[str, str]]:
    """`snakemake --summary` as one row per output file: output_file, date, rule, log-file(s), status, plan."""
    lines = [line for line in output.splitlines() if line.count("\t") >= 5]
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]
