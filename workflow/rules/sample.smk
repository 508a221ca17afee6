# Stage 4: sample the generator in bulk and measure every generated patch (streamed; memory flat in M).


rule sample:
    input:
        generator=f"{RESULTS}/gan/generator.pt",
    output:
        latents=f"{RESULTS}/samples/latents.npy",
        patches=directory(f"{RESULTS}/samples/patches.zarr"),
        table=f"{RESULTS}/samples/properties.parquet",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.table),
        settings=lambda wildcards: as_json_arg(config["sample"]),
        normalize=lambda wildcards: as_json_arg(config["normalize"]),
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/sample.log",
    benchmark:
        f"{RESULTS}/benchmarks/sample.tsv"
    threads: workflow.cores
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen sample --generator {input.generator} --out-dir {params.out_dir} --settings {params.settings} "
        "--normalize-settings {params.normalize} --seed {params.seed} --threads {threads} > {log} 2>&1"
