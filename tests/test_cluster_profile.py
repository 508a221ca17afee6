"""The SLURM profile (workflow/profiles/slurm) plans the paper run with the resources it declares, and the SLURM
executor plugin turns them into sbatch requests (a GPU for the training rules).

No cluster is needed: a dry run never calls SLURM, and the submission test puts fake `sbatch`, `sinfo` and `sacct`
first on PATH; the fake `sbatch` records its arguments and refuses the job, so nothing runs.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from workflow_helpers import REPO_ROOT, job_blocks, planned_jobs, run_snakemake

from sharpgen.config import validate_config
from sharpgen.errors import SharpgenError

PROFILE_DIR = REPO_ROOT / "workflow" / "profiles" / "slurm"
PROFILE = yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())
STAGES = {"retrieve", "normalize", "train_gan", "sample", "fit_directions", "train_ssl", "build_index"}
GPU_RULES = {"train_gan", "train_ssl"}


def profile_run(results: Path, *args: str, extra_path=()):
    return run_snakemake(
        "--profile", str(PROFILE_DIR), "--configfile", "config/paper.yaml", "--config", f"results_dir={results}",
        *args, extra_path=extra_path,
    )  # fmt: skip


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> str:
    proc = profile_run(tmp_path_factory.mktemp("paper"), "--dry-run")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


@pytest.mark.slow
def test_profile_is_for_the_slurm_executor_and_names_only_existing_rules(dry_run):
    assert PROFILE["executor"] == "slurm"
    assert "Using profile" in dry_run
    planned = set(planned_jobs(dry_run))
    assert STAGES <= planned, f"missing stages: {sorted(STAGES - planned)}"
    # a misspelt rule name in the profile would be silently ignored by Snakemake
    assert set(PROFILE["set-resources"]) <= planned and set(PROFILE["set-threads"]) <= planned


@pytest.mark.slow
def test_dry_run_gives_each_rule_the_profiles_resources_and_threads(dry_run):
    jobs = job_blocks(dry_run)
    for rule, wanted in PROFILE["set-resources"].items():
        resources = jobs[rule]["resources"]
        assert {key: resources.get(key) for key in wanted} == wanted, rule
        assert jobs[rule]["threads"] == PROFILE["set-threads"][rule] == wanted["cpus_per_task"], rule
        # the command is told the threads SLURM grants (no silent cap at one core)
        assert re.search(rf"--threads {jobs[rule]['threads']}\b", jobs[rule]["shell"]), rule
    for rule, job in jobs.items():
        if job["shell"] is None:  # `all`
            continue
        resources = job["resources"]
        assert resources["runtime"] > 0 and resources["mem_mb"] > 0, rule
        assert resources.get("cpus_per_task", job["threads"]) == job["threads"] <= PROFILE["cores"], rule
        asks_gpu = bool(resources.get("gpu")) or "gpu" in str(resources.get("gres", ""))
        assert asks_gpu == (rule in GPU_RULES), f"{rule}: GPU request {asks_gpu}"


@pytest.mark.slow
def test_training_rules_ask_for_a_gpu_and_a_day_or_more(dry_run):
    jobs = job_blocks(dry_run)
    for rule in GPU_RULES:
        resources = jobs[rule]["resources"]
        assert resources["gpu"] == 1, rule
        assert resources["runtime"] >= 24 * 60 and resources["mem_mb"] >= 16000, rule
    assert jobs["train_gan"]["resources"]["runtime"] >= jobs["sample"]["resources"]["runtime"]


FAKE_SBATCH = """#!{python}
import json, sys
with open({log!r}, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
sys.stderr.write("sbatch: error: test double, nothing was submitted\\n")
sys.exit(1)
"""


def _write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="fake SLURM commands are POSIX scripts")
def test_plugin_submits_the_training_rules_with_a_gpu_and_their_resources(tmp_path):
    """A real (not dry) run on a fake SLURM: the sbatch lines of the two GPU rules, made by the plugin itself."""
    fake_bin, calls = tmp_path / "bin", tmp_path / "sbatch_calls.jsonl"
    fake_bin.mkdir()
    _write_script(fake_bin / "sbatch", FAKE_SBATCH.format(python=sys.executable, log=str(calls)))
    _write_script(fake_bin / "sinfo", "#!/bin/sh\nprintf 'PARTITION\\nbatch*\\ngpu\\n'\n")
    _write_script(fake_bin / "sacct", "#!/bin/sh\nexit 0\n")  # no past jobs: no account to guess
    # upstream outputs exist (oldest first), so the two training rules are the jobs to submit
    results = tmp_path / "paper"
    for path in ("raw/jsoc/manifest.parquet", "data/patches.parquet"):
        (results / path).parent.mkdir(parents=True, exist_ok=True)
        (results / path).write_bytes(b"")
    (results / "data" / "patches.zarr").mkdir()
    os.utime(results / "raw/jsoc/manifest.parquet", (1e9, 1e9))
    targets = [str(results / "gan/generator.pt"), str(results / "retrieval/ssl/encoder.pt")]

    proc = profile_run(
        results, "--retries", "0", "--slurm-logdir", str(tmp_path / "slurm_logs"),
        "--slurm-init-seconds-before-status-checks", "1",  # the plugin otherwise waits 40 s before exiting
        *targets, extra_path=[fake_bin],
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "test double" in output, output[-4000:]  # refused by the fake sbatch

    submitted = {}
    for line in calls.read_text().splitlines():
        args = json.loads(line)
        rule = re.fullmatch(r"rule_(\w+)", args[args.index("--comment") + 1]).group(1)
        submitted[rule] = args
    assert set(submitted) == GPU_RULES, output[-4000:]
    for rule, args in submitted.items():
        wanted = PROFILE["set-resources"][rule]
        assert "--gpus=1" in args, args
        assert args[args.index("-t") + 1] == str(wanted["runtime"])
        assert args[args.index("--mem") + 1] == str(wanted["mem_mb"])
        assert f"--cpus-per-task={wanted['cpus_per_task']}" in args
        assert args[args.index("-p") + 1] == "batch"  # SLURM's default partition, as sinfo marks it


@pytest.mark.parametrize("address", ["nonsense", "http://10.0.0.5:8786"])
def test_a_malformed_dask_scheduler_address_is_one_clear_error(address):
    from sharpgen.data.normalize import dask_client

    with pytest.raises(SharpgenError, match="not a Dask scheduler address"), dask_client(address, workers=1):
        pass
    with pytest.raises(SharpgenError, match=r"dask\.scheduler_address"):
        validate_config({"dask": {"scheduler_address": address}})


@pytest.mark.parametrize(
    "address", ["tcp://10.0.0.5:8786", "10.0.0.5:8786", "tls://sched.cluster:8786", "tcp://[::1]:1"]
)
def test_a_well_formed_dask_scheduler_address_passes_the_schema(address):
    assert validate_config({"dask": {"scheduler_address": address}})["dask"]["scheduler_address"] == address
