"""Caching: after a complete run, changing one stage's settings reruns that stage and what consumes it, nothing else.

Reuses the session's finished run of config/test.yaml (conftest.py `test_run`) and only dry-runs on top of it, with
Snakemake's default rerun triggers. "What consumes it" comes from the workflow's own rule graph, so rules added
later (figures, evaluations) are covered without editing this file.
"""

from __future__ import annotations

import pytest
import yaml
from workflow_helpers import downstream, job_blocks, planned_jobs, rule_graph, run_snakemake

pytestmark = pytest.mark.slow

# (rule, config override that only that rule's params read). Values differ from config/test.yaml and the defaults.
CHANGES = [
    ("fit_directions", {"directions": {"svm_c": 0.123}}),
    ("sample", {"sample": {"n_samples": 61}}),
    ("train_ssl", {"ssl": {"epochs": 3}}),
]


@pytest.fixture(scope="module")
def graph(test_run) -> dict[str, set[str]]:
    """The rule graph, once the unchanged run is known to plan nothing (else no change can be judged)."""
    args = ("--cores", "1", "--configfile", "config/test.yaml", "--config", f"results_dir={test_run}")
    proc = run_snakemake(*args, "--dry-run")
    unchanged = planned_jobs(proc.stdout + proc.stderr)
    assert proc.returncode == 0 and not unchanged, f"the finished run still plans {unchanged}: {proc.stderr[-2000:]}"
    proc = run_snakemake(*args, "--rulegraph")
    assert proc.returncode == 0, proc.stderr[-4000:]
    graph = rule_graph(proc.stdout)
    assert {"train_gan", "fit_directions", "all"} <= set(graph), sorted(graph)
    return graph


@pytest.mark.parametrize(("rule", "change"), CHANGES, ids=[rule for rule, _ in CHANGES])
def test_changing_one_setting_reruns_only_its_rule_and_what_consumes_it(test_run, graph, tmp_path, rule, change):
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({**change, "results_dir": str(test_run)}))
    proc = run_snakemake("--configfile", "config/test.yaml", str(override), "--dry-run")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    planned = planned_jobs(output)
    expected = {rule} | downstream(graph, rule)
    assert set(planned) == expected, f"planned {sorted(planned)}, expected {sorted(expected)}"
    assert "train_gan" not in planned and "retrieve" not in planned  # the expensive, unaffected stages stay cached
    assert "params have changed" in job_blocks(output)[rule]["reason"].lower()  # rerun for the right reason
