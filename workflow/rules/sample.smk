# Stage 4: sample the generator in bulk and measure every generated patch (streamed; memory flat in M).


rule sample:
    input:
        generator=artefact("generator"),
    output:
        latents=artefact("sample_latents"),
        patches=directory(artefact("sample_patches")),
        table=artefact("sample_table"),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.table),
        settings=lambda wildcards: as_json_arg(config["sample"]),
        normalize=lambda wildcards: as_json_arg(config["normalize"]),
        seed=config["seed"],
    log:
        log_of("sample"),
    benchmark:
        benchmark_of("sample")
    threads: workflow.cores
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen sample --generator {input.generator} --out-dir {params.out_dir} --settings {params.settings} "
        "--normalize-settings {params.normalize} --seed {params.seed} --threads {threads} > {log} 2>&1"
