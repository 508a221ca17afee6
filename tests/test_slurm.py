"""The pipeline on a real SLURM cluster, through the project's profile (workflow/profiles/slurm).

CI starts a single-node SLURM with a fake `gpu` GRES (.ci/slurm-up); on a machine without `sinfo` these tests
skip, unless SHARPGEN_REQUIRE_SLURM is set (as in CI), where they fail instead. The profile is the real one,
with each rule's CPUs and memory scaled down to what the node has (a cluster user edits the same numbers).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from workflow_helpers import REPO_ROOT, run_snakemake

from sharpgen.cluster import Node, slurm_nodes

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

PROFILE_DIR = REPO_ROOT / "workflow" / "profiles" / "slurm"
GPU_RULES = {"train_gan", "train_ssl"}


@pytest.fixture(scope="module")
def node() -> Node:
    if shutil.which("sinfo") is None:
        if os.environ.get("SHARPGEN_REQUIRE_SLURM"):
            pytest.fail("SHARPGEN_REQUIRE_SLURM is set but `sinfo` is not on PATH (.ci/slurm-up starts SLURM)")
        pytest.skip("no SLURM here (Debian: apt-get install slurm-wlm munge; then .ci/slurm-up)")
    defaults = [n for n in slurm_nodes() if n.default_partition]
    assert defaults, "SLURM has no default partition"
    return max(defaults, key=lambda n: (n.cpus, n.mem_mb))


def scaled_profile(directory: Path, node: Node) -> Path:
    """The project's profile with every rule's CPUs and memory capped at what `node` offers."""
    profile = yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())
    for rule, resources in profile["set-resources"].items():
        cpus = min(resources["cpus_per_task"], node.cpus)
        resources["cpus_per_task"] = profile["set-threads"][rule] = cpus
        resources["mem_mb"] = min(resources["mem_mb"], node.mem_mb // 4)
    profile["default-resources"]["mem_mb"] = min(profile["default-resources"]["mem_mb"], node.mem_mb // 4)
    profile["cores"] = node.cpus
    profile["slurm-logdir"] = str(directory / "slurm_logs")
    profile["slurm-init-seconds-before-status-checks"] = 5  # a tiny run's jobs take seconds, not hours
    path = directory / "profile"
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def sbatch_spy(directory: Path) -> Path:
    """A `sbatch` first on PATH that records its arguments, then runs the real one."""
    real = shutil.which("sbatch")
    spy = directory / "bin" / "sbatch"
    spy.parent.mkdir()
    spy.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {directory / "sbatch_calls.txt"}\nexec {real} "$@"\n')
    spy.chmod(0o755)
    return spy.parent


def cancel_training_after_first_checkpoint(results: Path, cancelled: list, stop: threading.Event) -> None:
    """Once train_gan has written its first checkpoint, scancel its SLURM job (a node failure, a time limit)."""
    checkpoint = results / "gan" / "checkpoints" / "last.pt"
    while not stop.is_set():
        if checkpoint.exists():
            jobs = subprocess.run(["squeue", "-h", "-o", "%i %k"], capture_output=True, text=True).stdout
            for line in jobs.splitlines():
                job_id, _, comment = line.partition(" ")
                if comment.strip() == "rule_train_gan":
                    subprocess.run(["scancel", job_id], check=True)
                    cancelled.append(job_id)
                    return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def slurm_run(node, tmp_path_factory):
    work = tmp_path_factory.mktemp("slurm")
    results = work / "results"
    cancelled: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=cancel_training_after_first_checkpoint, args=(results, cancelled, stop))
    watcher.start()
    try:
        proc = run_snakemake(
            "--profile", str(scaled_profile(work, node)), "--configfile", "config/test.yaml",
            "--config", f"results_dir={results}", extra_path=[sbatch_spy(work)], timeout=1500,
        )  # fmt: skip
    finally:
        stop.set()
        watcher.join()
    return proc, results, work, cancelled


def test_the_test_config_runs_to_the_end_on_slurm(slurm_run):
    proc, results, _, _ = slurm_run
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (results / "retrieval" / "evaluation.json").exists()
    assert sorted(p.name for p in (results / "figures").glob("*.png"))


def submitted(work: Path) -> list[tuple[str, str]]:
    """(rule, sbatch arguments) of every job the run submitted, as the sbatch spy recorded them."""
    calls = (work / "sbatch_calls.txt").read_text().splitlines()
    return [(call.split("--comment ")[1].split()[0].strip("'\"").removeprefix("rule_"), call) for call in calls]


def test_only_the_two_training_rules_ask_for_a_gpu(slurm_run):
    _, _, work, _ = slurm_run
    asked = {}
    for rule, call in submitted(work):
        asked.setdefault(rule, set()).add("--gpus=" in call or "--gres=gpu" in call)
    assert {rule for rule, gpu in asked.items() if True in gpu} == GPU_RULES
    assert all(gpu == {False} for rule, gpu in asked.items() if rule not in GPU_RULES)


def test_each_rule_is_submitted_with_the_profiles_time_memory_and_cpus(slurm_run):
    _, _, work, _ = slurm_run
    profile = yaml.safe_load((work / "profile" / "config.yaml").read_text())
    seen = set()
    for rule, call in submitted(work):
        wanted = profile["set-resources"].get(rule)
        if wanted is None:
            continue
        seen.add(rule)
        args = call.split()
        assert args[args.index("-t") + 1] == str(wanted["runtime"]), rule
        assert args[args.index("--mem") + 1] == str(wanted["mem_mb"]), rule
        assert f"--cpus-per-task={wanted['cpus_per_task']}" in args, rule
    assert seen == set(profile["set-resources"])


def test_a_cancelled_training_job_is_resubmitted_and_resumes_from_its_checkpoint(slurm_run):
    proc, results, work, cancelled = slurm_run
    assert proc.returncode == 0 and len(cancelled) == 1, "train_gan was not cancelled after its first checkpoint"
    assert [rule for rule, _ in submitted(work)].count("train_gan") == 2  # the profile's retry resubmitted it
    # The resubmitted job continued from the checkpoint (its progress starts past step 0) and the log holds every
    # step once. (Bit-equality with an uninterrupted job is not asserted: two SLURM jobs of the same command
    # already differ in the 7th digit at step 1 here.)
    progress = re.search(r"(\d+)/(\d+) \[", (results / "logs" / "train_gan.log").read_text())
    assert progress and 0 < int(progress.group(1)) < int(progress.group(2))
    steps = [int(line.split(",")[0]) for line in (results / "gan" / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, int(progress.group(2)) + 1))


def test_a_request_larger_than_every_node_stops_the_run_at_once(node, tmp_path):
    profile = yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())
    profile["set-resources"]["normalize"]["cpus_per_task"] = node.cpus + 1
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    started = time.monotonic()
    proc = run_snakemake(
        "--profile", str(tmp_path / "profile"), "--configfile", "config/test.yaml",
        "--config", f"results_dir={tmp_path / 'results'}", timeout=120,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and time.monotonic() - started < 60
    line = next(line for line in output.splitlines() if "SLURM pre-flight check" in line)
    assert "normalize" in line and f"{node.cpus + 1} CPUs" in line and node.name in line
    assert not (tmp_path / "results" / "raw").exists()  # nothing was submitted, nothing ran
