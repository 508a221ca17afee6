# Stage 3: train the GAN on the train split (resumable: a rerun continues from checkpoints/last.pt).


rule train_gan:
    input:
        patches=artefact("patches"),
        table=artefact("patch_table"),
    output:
        generator=artefact("generator"),
        log_csv=artefact("gan_log"),
        grid=artefact("gan_grid"),
    params:
        data_dir=lambda wildcards, input: os.path.dirname(input.table),
        out_dir=lambda wildcards, output: os.path.dirname(output.generator),
        settings=lambda wildcards: as_json_arg(config["gan"]),
        image_size=config["image_size"],
        seed=config["seed"],
    log:
        log_of("train_gan"),
    benchmark:
        benchmark_of("train_gan")
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen train-gan --data-dir {params.data_dir} --out-dir {params.out_dir} --settings {params.settings} "
        "--image-size {params.image_size} --seed {params.seed} --threads {threads} > {log} 2>&1"
