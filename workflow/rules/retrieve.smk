# Stage 1: retrieve SHARP(-like) CEA records into raw/<source>/ (+ manifest.parquet, written last).


rule retrieve:
    output:
        manifest=RAW_MANIFEST,
    params:
        source=SOURCE,
        settings=lambda wildcards: as_json_arg(config[SOURCE]),
        seed=config["seed"],
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
    log:
        f"{RESULTS}/logs/retrieve.log",
    benchmark:
        f"{RESULTS}/benchmarks/retrieve.tsv"
    threads: workflow.cores
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/data.yaml"
    shell:
        "sharpgen retrieve --source {params.source} --out-dir {params.out_dir} "
        "--settings {params.settings} --seed {params.seed} --threads {threads} > {log} 2>&1"
