# Shared wiring: config validation, result paths, and the helper that hands a config section to the CLI.
import json
import os
import shlex
import sys

from snakemake.exceptions import WorkflowError

from sharpgen.config import validate_config
from sharpgen.errors import SharpgenError

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

RESULTS = config["results_dir"].rstrip("/")
SOURCE = config["source"]
RAW_DIR = f"{RESULTS}/raw/{SOURCE}"
RAW_MANIFEST = f"{RAW_DIR}/manifest.parquet"


def as_json_arg(mapping):
    """Quote a config section as one shell word of JSON, for the CLI's --settings option."""
    return shlex.quote(json.dumps(mapping, sort_keys=True))


def figure_output(name, category, subcategory):
    """The report-marked PNG of figure `name` (caption workflow/report/<name>.rst) and its numbers' JSON."""
    return {
        "png": report(
            f"{RESULTS}/figures/{name}.png",
            caption=f"../report/{name}.rst",
            category=category,
            subcategory=subcategory,
        ),
        "numbers": f"{RESULTS}/figures/{name}.json",
    }


def run_dir_of_figure(wildcards, output):
    """The results_dir a figure belongs to (`sharpgen figure --results`): two levels above figures/<name>.png."""
    return os.path.dirname(os.path.dirname(output.png))


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
