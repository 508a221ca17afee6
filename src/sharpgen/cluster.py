"""Pre-flight check of a SLURM run: every job must fit on some node before anything is submitted.

SLURM accepts a job that asks for more CPUs, memory or GPUs than any node of its partition has, and leaves it
``PENDING (PartitionConfig)`` forever; Snakemake then waits silently. The workflow's ``onstart`` handler calls
:func:`check_jobs_fit` with the jobs it is about to submit, so such a run stops at once with one line per job
that cannot run, naming the rule, its request and the largest node.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import SharpgenError

SINFO_FORMAT = "%N|%c|%m|%G|%P"  # node, CPUs, memory [MB], generic resources, partition ("main*" = default)


@dataclass(frozen=True)
class Node:
    """One SLURM node as a partition offers it: CPUs, memory in MB, GPUs."""

    name: str
    partition: str
    cpus: int
    mem_mb: int
    gpus: int
    default_partition: bool = False


@dataclass(frozen=True)
class Request:
    """What one job asks SLURM for (the executor plugin's translation of the rule's threads and resources)."""

    rule: str
    cpus: int
    mem_mb: int
    gpus: int
    partition: str | None = None


def _gpu_count(gres: str) -> int:
    """GPUs in a SLURM GRES string such as ``gpu:1``, ``gpu:a100:4(S:0-1)`` or ``(null)``."""
    total = 0
    for item in gres.split(","):
        fields = re.sub(r"\(.*?\)", "", item).strip().split(":")
        if fields[0] == "gpu":
            count = fields[-1] if len(fields) > 1 else "1"
            total += int(count) if count.isdigit() else 1
    return total


def parse_sinfo(text: str) -> list[Node]:
    """Nodes from ``sinfo -h -N -o '%N|%c|%m|%G|%P'`` (one line per node and partition)."""
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.strip().split("|")
        if len(fields) != 5 or not fields[1].rstrip("+").isdigit() or not fields[2].rstrip("+").isdigit():
            raise SharpgenError(f"cannot read this line of `sinfo -h -N -o '{SINFO_FORMAT}'`: {line.strip()!r}")
        name, cpus, mem, gres, partition = fields
        nodes.append(
            Node(
                name=name,
                partition=partition.rstrip("*"),
                cpus=int(cpus.rstrip("+")),
                mem_mb=int(mem.rstrip("+")),
                gpus=_gpu_count(gres),
                default_partition=partition.endswith("*"),
            )
        )
    return nodes


def slurm_nodes() -> list[Node]:
    """The nodes of the SLURM cluster this machine submits to (``sinfo``)."""
    if shutil.which("sinfo") is None:
        raise SharpgenError("the SLURM executor needs `sinfo` on PATH (is this a SLURM login node?)")
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise SharpgenError(f"sinfo failed: {proc.stderr.strip() or proc.returncode}")
    return parse_sinfo(proc.stdout)


def job_request(rule: str, threads: int, resources: Mapping) -> Request:
    """A job's request as the SLURM plugin submits it: ``cpus_per_task`` (else the threads), ``mem_mb`` (or
    ``mem_mb_per_cpu`` x CPUs), ``gpu`` (or a ``gres`` of GPUs) and ``slurm_partition``."""
    cpus = int(resources.get("cpus_per_task") or threads or 1)
    mem_mb = resources.get("mem_mb")
    if mem_mb is None and resources.get("mem_mb_per_cpu") is not None:
        mem_mb = resources["mem_mb_per_cpu"] * cpus
    gpus = int(resources.get("gpu") or 0) or _gpu_count(str(resources.get("gres") or ""))
    partition = resources.get("slurm_partition") or None
    return Request(rule=rule, cpus=cpus, mem_mb=int(mem_mb or 0), gpus=gpus, partition=partition)


def _fits(request: Request, node: Node) -> bool:
    return request.cpus <= node.cpus and request.mem_mb <= node.mem_mb and request.gpus <= node.gpus


def _describe(cpus: int, mem_mb: int, gpus: int) -> str:
    return f"{cpus} CPUs, {mem_mb} MB" + (f", {gpus} GPU{'s' if gpus != 1 else ''}" if gpus else "")


def misfits(requests: Iterable[Request], nodes: list[Node]) -> list[str]:
    """Per partition, one line naming every rule whose request no node of that partition can grant."""
    unfit: dict[str | None, list[Request]] = {}
    for request in requests:
        partition = request.partition
        candidates = [n for n in nodes if (n.partition == partition if partition else n.default_partition)]
        if not candidates and partition is None:
            candidates = nodes  # no default partition marked: SLURM picks one
        if not any(_fits(request, node) for node in candidates):
            if all(r.rule != request.rule for r in unfit.get(partition, [])):
                unfit.setdefault(partition, []).append(request)
    lines = []
    for partition, requests_ in unfit.items():
        candidates = [n for n in nodes if (n.partition == partition if partition else n.default_partition)] or (
            nodes if partition is None else []
        )
        where = f"partition '{partition}'" if partition else "the default partition"
        if candidates:
            largest = max(candidates, key=lambda n: (n.cpus, n.mem_mb, n.gpus))
            offer = f"largest node {largest.name}: {_describe(largest.cpus, largest.mem_mb, largest.gpus)}"
        else:
            offer = "it has no nodes"
        asked = ", ".join(f"{r.rule} ({_describe(r.cpus, r.mem_mb, r.gpus)})" for r in requests_)
        lines.append(
            f"{len(requests_)} rule(s) ask for more than any node of {where} offers ({offer}): {asked}; "
            "lower cpus_per_task/mem_mb/gpu under set-resources (and set-threads) in the profile"
        )
    return lines


def check_jobs_fit(jobs: Iterable[tuple[str, int, Mapping]], nodes: list[Node] | None = None) -> None:
    """Raise :class:`SharpgenError` naming every job (rule, threads, resources) that no node can run."""
    nodes = slurm_nodes() if nodes is None else nodes
    problems = misfits((job_request(rule, threads, resources) for rule, threads, resources in jobs), nodes)
    if problems:
        raise SharpgenError("; ".join(problems))
