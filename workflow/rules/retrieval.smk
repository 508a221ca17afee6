# Stage 6: SimSiam encoder of real patches, their embeddings and the nearest-neighbour index.


rule train_ssl:
    input:
        patches=f"{RESULTS}/data/patches.zarr",
        table=f"{RESULTS}/data/patches.parquet",
    output:
        encoder=f"{RESULTS}/retrieval/ssl/encoder.pt",
        log_csv=f"{RESULTS}/retrieval/ssl/train_log.csv",
    params:
        data_dir=lambda wildcards, input: os.path.dirname(input.table),
        out_dir=lambda wildcards, output: os.path.dirname(output.encoder),
        settings=lambda wildcards: as_json_arg(config["ssl"]),
        image_size=config["image_size"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/train_ssl.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_ssl.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen train-ssl --data-dir {params.data_dir} --out-dir {params.out_dir} --settings {params.settings} "
        "--image-size {params.image_size} --seed {params.seed} --threads {threads} > {log} 2>&1"


rule build_index:
    input:
        patches=f"{RESULTS}/data/patches.zarr",
        table=f"{RESULTS}/data/patches.parquet",
        encoder=f"{RESULTS}/retrieval/ssl/encoder.pt",
    output:
        embeddings=f"{RESULTS}/retrieval/embeddings.npy",
        index=f"{RESULTS}/retrieval/index/index.faiss",
        rows=f"{RESULTS}/retrieval/index/index_rows.parquet",
        info=f"{RESULTS}/retrieval/index/index.json",
    params:
        data_dir=lambda wildcards, input: os.path.dirname(input.table),
        out_dir=lambda wildcards, output: os.path.dirname(output.embeddings),
        settings=lambda wildcards: as_json_arg(config["index"]),
        image_size=config["image_size"],
    log:
        f"{RESULTS}/logs/build_index.log",
    benchmark:
        f"{RESULTS}/benchmarks/build_index.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen build-index --data-dir {params.data_dir} --encoder {input.encoder} --out-dir {params.out_dir} "
        "--settings {params.settings} --image-size {params.image_size} --threads {threads} > {log} 2>&1"


rule evaluate_retrieval:
    # Paper fig. 8 (examples) and fig. 9 (query vs. match scatter), with the pixel/PCA/random baselines.
    input:
        samples=f"{RESULTS}/samples/properties.parquet",
        sample_patches=f"{RESULTS}/samples/patches.zarr",
        table=f"{RESULTS}/data/patches.parquet",
        encoder=f"{RESULTS}/retrieval/ssl/encoder.pt",
        index=f"{RESULTS}/retrieval/index/index.json",
    output:
        evaluation=f"{RESULTS}/retrieval/evaluation.json",
        scatter=report(
            f"{RESULTS}/retrieval/evaluation_scatter.png",
            caption="../report/retrieval_scatter.rst",
            category="4. Retrieval",
            subcategory="evaluation",
        ),
        examples=report(
            f"{RESULTS}/retrieval/examples.png",
            caption="../report/retrieval_examples.rst",
            category="4. Retrieval",
            subcategory="examples",
        ),
    params:
        run_dir=lambda wildcards, output: os.path.dirname(os.path.dirname(output.evaluation)),
        out_dir=lambda wildcards, output: os.path.dirname(output.evaluation),
        settings=lambda wildcards: as_json_arg(config["retrieval_eval"]),
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/evaluate_retrieval.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_retrieval.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen evaluate-retrieval --run-dir {params.run_dir} --out-dir {params.out_dir} --settings {params.settings} "
        "--seed {params.seed} --threads {threads} > {log} 2>&1"
