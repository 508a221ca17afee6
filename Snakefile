# sharpgen: physically interpretable generative model of solar active regions.
# Run:   snakemake --cores all                       (config/config.yaml, the offline default)
#        snakemake --cores all --configfile config/test.yaml
# The stages live in workflow/rules/*.smk; every rule calls the `sharpgen` package and holds no logic.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


envvars:
    "PATH",


include: "workflow/rules/common.smk"
include: "workflow/rules/retrieve.smk"
include: "workflow/rules/normalize.smk"
include: "workflow/rules/gan.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/directions.smk"
include: "workflow/rules/retrieval.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        **artefacts(
            "raw_manifest",
            "patches",
            "patch_table",
            "normalization",
            "generator",
            "sample_table",
            "directions",
            "index_info",
            "evaluation",
        ),
        figures=FIGURE_FILES,
    localrule: True


onstart:
    check_slurm_jobs_fit()


onsuccess:
    print(f"sharpgen: done. Artefacts are in {RESULTS}/")


onerror:
    print(f"sharpgen: a job failed; its log is under {RESULTS}/logs/ (rerun resumes from what is complete).")
