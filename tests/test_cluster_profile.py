"""The SLURM profile (workflow/profiles/slurm) plans the paper run with the resources it declares.

No cluster is needed: a dry run never calls SLURM. What the plugin submits to a real SLURM, and that the run
finishes there, is tested in tests/test_slurm.py.
"""

from __future__ import annotations

import re
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
