# Stage 2: normalize raw records with Dask into data/patches.zarr + data/patches.parquet (+ normalization.json).


rule normalize:
    input:
        manifest=artefact("raw_manifest"),
    output:
        patches=directory(artefact("patches")),
        table=artefact("patch_table"),
        normalization=artefact("normalization"),
    params:
        raw_dir=lambda wildcards, input: os.path.dirname(input.manifest),
        out_dir=lambda wildcards, output: os.path.dirname(output.table),
        settings=lambda wildcards: as_json_arg(config["normalize"]),
        image_size=config["image_size"],
        seed=config["seed"],
        scheduler=lambda wildcards: (
            f"--scheduler-address {shlex.quote(config['dask']['scheduler_address'])}"
            if config["dask"]["scheduler_address"]
            else ""
        ),
    log:
        log_of("normalize"),
    benchmark:
        benchmark_of("normalize")
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../../envs/data.yaml"
    shell:
        "sharpgen normalize --raw-dir {params.raw_dir} --out-dir {params.out_dir} --settings {params.settings} "
        "--image-size {params.image_size} --seed {params.seed} --threads {threads} {params.scheduler} > {log} 2>&1"
