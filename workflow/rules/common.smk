# Shared wiring: config validation, result paths (from sharpgen.run), and the helper that hands a config section
# to the CLI.
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from sharpgen.config import validate_config
from sharpgen.errors import SharpgenError
from sharpgen.figures.registry import FIGURES
from sharpgen.run import RETRIEVER, STEERING, RunLayout

SCHEMA = workflow.source_path("../../config/schema.yaml")

try:
    # One clear line naming the offending key, before any job starts.
    validate_config(config)
except SharpgenError as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None
validate(config, SCHEMA)  # fills the schema's defaults into `config`

# Jobs call the `sharpgen` CLI. Put the one installed beside this Snakemake first on PATH, so
# `.venv/bin/snakemake` works without an activated venv (conda jobs activate their own env on top).
_SNAKEMAKE_BIN = os.path.dirname(sys.executable)
if _SNAKEMAKE_BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _SNAKEMAKE_BIN + os.pathsep + os.environ.get("PATH", "")

# Every path of the results directory comes from sharpgen.run (the rules write no file name of their own).
LAYOUT = RunLayout(config["results_dir"], config["source"])  # Path() drops a trailing slash
RESULTS = str(LAYOUT.results_dir)


def artefact(key):
    """The path of artefact `key` of sharpgen.run.ARTEFACTS in this run."""
    return str(LAYOUT.path(key))


def artefacts(*keys):
    """Named inputs or outputs: artefact key -> path."""
    return {key: artefact(key) for key in keys}


def results_dir_of(path, key):
    """The results_dir holding a job's file `path`, artefact `key` (or "figure"), as the job sees it.

    Params derived from a job's files (here and `os.path.dirname(output.x)` for a stage's folder) stay right
    where a storage plugin remaps them; a literal path would not (`snakemake --lint`).
    """
    declared = LAYOUT.figure("any") if key == "figure" else LAYOUT.path(key)
    depth = len(declared.relative_to(LAYOUT.results_dir).parts)
    return str(Path(path).parents[depth - 1])


def log_of(rule):
    """logs/<rule>.log"""
    return str(LAYOUT.log(rule))


def benchmark_of(rule):
    """benchmarks/<rule>.tsv"""
    return str(LAYOUT.benchmark(rule))


def figure_inputs(name):
    """What `sharpgen figure NAME` reads, by artefact key: its rule's inputs."""
    return artefacts(*FIGURES[name].reads)


def as_json_arg(mapping):
    """Quote a config section as one shell word of JSON, for the CLI's --settings option."""
    return shlex.quote(json.dumps(mapping, sort_keys=True))


def figure_output(name, category, subcategory):
    """The report-marked PNG of figure `name` (caption workflow/report/<name>.rst) and its numbers' JSON."""
    return {
        "png": report(
            str(LAYOUT.figure(name)),
            caption=f"../report/{name}.rst",
            category=category,
            subcategory=subcategory,
        ),
        "numbers": str(LAYOUT.figure_numbers(name)),
    }


def check_slurm_jobs_fit():
    """On the SLURM executor, stop before submitting if a job asks for more than any node offers (it would pend
    forever, silently)."""
    if workflow.executor_plugin is None or workflow.executor_plugin.name != "slurm":
        return
    from sharpgen.cluster import check_jobs_fit

    jobs = [(job.rule.name, job.threads, dict(job.resources)) for job in workflow.dag.needrun_jobs() if not job.is_local]
    try:
        check_jobs_fit(jobs)
    except SharpgenError as exc:
        raise WorkflowError(f"SLURM pre-flight check: {exc}") from None
