# Stage 5: one latent direction per physical property (linear SVMs), plus calibration and entanglement.


rule fit_directions:
    input:
        latents=f"{RESULTS}/samples/latents.npy",
        table=f"{RESULTS}/samples/properties.parquet",
        generator=f"{RESULTS}/gan/generator.pt",
    output:
        directions=f"{RESULTS}/directions/directions.json",
        traversals=f"{RESULTS}/directions/traversals.parquet",
        calibration=f"{RESULTS}/directions/calibration.parquet",
        entanglement=f"{RESULTS}/directions/entanglement.json",
    params:
        samples_dir=lambda wildcards, input: os.path.dirname(input.table),
        out_dir=lambda wildcards, output: os.path.dirname(output.directions),
        settings=lambda wildcards: as_json_arg(config["directions"]),
        normalize=lambda wildcards: as_json_arg(config["normalize"]),
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/fit_directions.log",
    benchmark:
        f"{RESULTS}/benchmarks/fit_directions.tsv"
    threads: workflow.cores
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen fit-directions --samples-dir {params.samples_dir} --generator {input.generator} "
        "--out-dir {params.out_dir} --settings {params.settings} --normalize-settings {params.normalize} "
        "--seed {params.seed} --threads {threads} > {log} 2>&1"
