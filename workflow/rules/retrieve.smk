# Stage 1: retrieve SHARP(-like) CEA records into raw/<source>/ (+ manifest.parquet, written last).


rule retrieve:
    output:
        manifest=artefact("raw_manifest"),
    params:
        source=config["source"],
        settings=lambda wildcards: as_json_arg(config[config["source"]]),
        seed=config["seed"],
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
    log:
        log_of("retrieve"),
    benchmark:
        benchmark_of("retrieve")
    threads: workflow.cores
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/data.yaml"
    shell:
        "sharpgen retrieve --source {params.source} --out-dir {params.out_dir} "
        "--settings {params.settings} --seed {params.seed} --threads {threads} > {log} 2>&1"
