# Stage 6: SimSiam encoder of real patches, their embeddings and the nearest-neighbour index.


rule train_ssl:
    input:
        patches=artefact("patches"),
        table=artefact("patch_table"),
    output:
        encoder=artefact("encoder"),
        log_csv=artefact("ssl_log"),
    params:
        data_dir=lambda wildcards, input: os.path.dirname(input.table),
        out_dir=lambda wildcards, output: os.path.dirname(output.encoder),
        settings=lambda wildcards: as_json_arg(config["ssl"]),
        image_size=config["image_size"],
        seed=config["seed"],
    log:
        log_of("train_ssl"),
    benchmark:
        benchmark_of("train_ssl")
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
        patches=artefact("patches"),
        table=artefact("patch_table"),
        encoder=artefact("encoder"),
    output:
        embeddings=artefact("embeddings"),
        index=artefact("index_faiss"),
        rows=artefact("index_rows"),
        info=artefact("index_info"),
    params:
        data_dir=lambda wildcards, input: os.path.dirname(input.table),
        out_dir=lambda wildcards, output: os.path.dirname(output.embeddings),
        settings=lambda wildcards: as_json_arg(config["index"]),
        image_size=config["image_size"],
    log:
        log_of("build_index"),
    benchmark:
        benchmark_of("build_index")
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
    # Paper fig. 8 (examples) and fig. 9 (query vs. match scatter), with the pixel/PCA/random baselines; effective
    # rank of the embeddings, orientation agreement, same-region recall.
    input:
        **artefacts("sample_table", "sample_patches", "embeddings", *RETRIEVER),
    output:
        evaluation=artefact("evaluation"),
        scatter=report(
            artefact("evaluation_scatter"),
            caption="../report/retrieval_scatter.rst",
            category="4. Retrieval",
            subcategory="evaluation",
        ),
        examples=report(
            artefact("retrieval_examples"),
            caption="../report/retrieval_examples.rst",
            category="4. Retrieval",
            subcategory="examples",
        ),
    params:
        run_dir=lambda wildcards, output: results_dir_of(output.evaluation, "evaluation"),
        out_dir=lambda wildcards, output: os.path.dirname(output.evaluation),
        settings=lambda wildcards: as_json_arg(config["retrieval_eval"]),
        seed=config["seed"],
    log:
        log_of("evaluate_retrieval"),
    benchmark:
        benchmark_of("evaluate_retrieval")
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen evaluate-retrieval --run-dir {params.run_dir} --out-dir {params.out_dir} --settings {params.settings} "
        "--seed {params.seed} --threads {threads} > {log} 2>&1"
