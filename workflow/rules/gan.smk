# Stage 3: train the GAN on the train split (resumable: a rerun continues from checkpoints/last.pt).


rule train_gan:
    input:
        patches=f"{RESULTS}/data/patches.zarr",
        table=f"{RESULTS}/data/patches.parquet",
    output:
        generator=f"{RESULTS}/gan/generator.pt",
        log_csv=f"{RESULTS}/gan/train_log.csv",
        grid=f"{RESULTS}/gan/samples.png",
    params:
        data_dir=lambda wildcards, input: os.path.dirname(input.table),
        out_dir=lambda wildcards, output: os.path.dirname(output.generator),
        settings=lambda wildcards: as_json_arg(config["gan"]),
        image_size=config["image_size"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/train_gan.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_gan.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen train-gan --data-dir {params.data_dir} --out-dir {params.out_dir} --settings {params.settings} "
        "--image-size {params.image_size} --seed {params.seed} --threads {threads} > {log} 2>&1"
