# Stage 5: one latent direction per physical property (linear SVMs), plus calibration and entanglement.


rule fit_directions:
    input:
        latents=artefact("sample_latents"),
        table=artefact("sample_table"),
        generator=artefact("generator"),
    output:
        directions=artefact("directions"),
        traversals=artefact("traversals"),
        calibration=artefact("calibration"),
        entanglement=artefact("entanglement"),
    params:
        samples_dir=lambda wildcards, input: os.path.dirname(input.table),
        out_dir=lambda wildcards, output: os.path.dirname(output.directions),
        settings=lambda wildcards: as_json_arg(config["directions"]),
        normalize=lambda wildcards: as_json_arg(config["normalize"]),
        seed=config["seed"],
    log:
        log_of("fit_directions"),
    benchmark:
        benchmark_of("fit_directions")
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


rule score_directions:
    # The label score: targets asked for as generate/edit ask, met or not, measured on the generated patches.
    input:
        **artefacts(*STEERING),
    output:
        scores=artefact("label_score"),
        summary=artefact("label_score_summary"),
    params:
        run_dir=lambda wildcards, output: results_dir_of(output.summary, "label_score_summary"),
        settings=lambda wildcards: as_json_arg(config["label_score"]),
        seed=config["seed"],
    log:
        log_of("score_directions"),
    benchmark:
        benchmark_of("score_directions")
    threads: workflow.cores
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen score-directions --run-dir {params.run_dir} --settings {params.settings} "
        "--seed {params.seed} --threads {threads} > {log} 2>&1"
