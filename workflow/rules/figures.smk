# Figures (research/paper.md section 8 numbering) and their key numbers: one thin rule per figure, each calling
# `sharpgen figure NAME`, which writes figures/<file>.png and figures/<file>.json (KS values, slopes, losses...).
# Every PNG is a report item: `snakemake --report` collects them under the category/subcategory given here,
# with the caption in workflow/report/<file>.rst.

import glob


rule figure_pipeline:
    # Fig. 1. The workflow's source files are inputs, so editing a rule redraws the schematic. The rule graph
    # does not depend on the data, so the nested `snakemake --rulegraph` (read-only: --nolock) needs no configfile.
    input:
        snakefile=workflow.main_snakefile,
        rules=sorted(glob.glob(os.path.join(workflow.basedir, "workflow", "rules", "*.smk"))),
    output:
        **figure_output("pipeline", "1. Pipeline", "schematic"),
        dot=f"{RESULTS}/figures/rulegraph.dot",
    params:
        results=run_dir_of_figure,
    log:
        f"{RESULTS}/logs/figure_pipeline.log",
    benchmark:
        f"{RESULTS}/benchmarks/figure_pipeline.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    localrule: True
    conda:
        "../../envs/figures.yaml"
    shell:
        "snakemake --snakefile {input.snakefile} --rulegraph --nolock --quiet --cores 1 "
        "--config results_dir={params.results} > {output.dot} 2> {log} && "
        "sharpgen figure pipeline --rulegraph {output.dot} --out {output.png} >> {log} 2>&1"


rule figure_patches:
    # Fig. 2.
    input:
        patches=f"{RESULTS}/data/patches.zarr",
        table=f"{RESULTS}/data/patches.parquet",
        samples=f"{RESULTS}/samples/patches.zarr",
    output:
        **figure_output("real_vs_generated", "2. GAN", "samples"),
    params:
        results=run_dir_of_figure,
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/figure_patches.log",
    benchmark:
        f"{RESULTS}/benchmarks/figure_patches.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/figures.yaml"
    shell:
        "sharpgen figure patches --results {params.results} --out {output.png} --seed {params.seed} > {log} 2>&1"


rule figure_properties:
    # Fig. 3.
    input:
        table=f"{RESULTS}/data/patches.parquet",
        samples=f"{RESULTS}/samples/properties.parquet",
    output:
        **figure_output("property_distributions", "2. GAN", "fidelity"),
    params:
        results=run_dir_of_figure,
    log:
        f"{RESULTS}/logs/figure_properties.log",
    benchmark:
        f"{RESULTS}/benchmarks/figure_properties.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/figures.yaml"
    shell:
        "sharpgen figure properties --results {params.results} --out {output.png} > {log} 2>&1"


rule figure_spectra:
    # Fig. 11 (lite).
    input:
        patches=f"{RESULTS}/data/patches.zarr",
        table=f"{RESULTS}/data/patches.parquet",
        samples=f"{RESULTS}/samples/patches.zarr",
    output:
        **figure_output("power_spectra", "2. GAN", "fidelity"),
    params:
        results=run_dir_of_figure,
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/figure_spectra.log",
    benchmark:
        f"{RESULTS}/benchmarks/figure_spectra.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/figures.yaml"
    shell:
        "sharpgen figure spectra --results {params.results} --out {output.png} --seed {params.seed} > {log} 2>&1"


rule figure_gan_training:
    input:
        log_csv=f"{RESULTS}/gan/train_log.csv",
    output:
        **figure_output("gan_training", "2. GAN", "training"),
    params:
        results=run_dir_of_figure,
    log:
        f"{RESULTS}/logs/figure_gan_training.log",
    benchmark:
        f"{RESULTS}/benchmarks/figure_gan_training.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/figures.yaml"
    shell:
        "sharpgen figure gan-training --results {params.results} --out {output.png} > {log} 2>&1"


rule figure_embedding:
    # Fig. 7.
    input:
        embeddings=f"{RESULTS}/retrieval/embeddings.npy",
        patches=f"{RESULTS}/data/patches.zarr",
        table=f"{RESULTS}/data/patches.parquet",
    output:
        **figure_output("ssl_embedding", "4. Retrieval", "embedding"),
    params:
        results=run_dir_of_figure,
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/figure_embedding.log",
    benchmark:
        f"{RESULTS}/benchmarks/figure_embedding.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/figures.yaml"
    shell:
        "sharpgen figure embedding --results {params.results} --out {output.png} --seed {params.seed} > {log} 2>&1"


rule figure_ssl_training:
    input:
        log_csv=f"{RESULTS}/retrieval/ssl/train_log.csv",
    output:
        **figure_output("ssl_training", "4. Retrieval", "training"),
    params:
        results=run_dir_of_figure,
    log:
        f"{RESULTS}/logs/figure_ssl_training.log",
    benchmark:
        f"{RESULTS}/benchmarks/figure_ssl_training.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/figures.yaml"
    shell:
        "sharpgen figure ssl-training --results {params.results} --out {output.png} > {log} 2>&1"


rule figure_latent_space:
    input:
        directions=f"{RESULTS}/directions/directions.json",
        generator=f"{RESULTS}/gan/generator.pt",
        latents=f"{RESULTS}/samples/latents.npy",
        samples=f"{RESULTS}/samples/properties.parquet",
        patches=f"{RESULTS}/samples/patches.zarr",
    output:
        **figure_output("latent_space", "3. Directions", "boundaries"),
    params:
        results=run_dir_of_figure,
    log:
        f"{RESULTS}/logs/figure_latent_space.log",
    benchmark:
        f"{RESULTS}/benchmarks/figure_latent_space.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen figure latent-space --results {params.results} --out {output.png} > {log} 2>&1"


rule figure_traversals:
    input:
        directions=f"{RESULTS}/directions/directions.json",
        generator=f"{RESULTS}/gan/generator.pt",
        latents=f"{RESULTS}/samples/latents.npy",
        samples=f"{RESULTS}/samples/properties.parquet",
    output:
        **figure_output("traversals", "3. Directions", "traversals"),
    params:
        results=run_dir_of_figure,
    log:
        f"{RESULTS}/logs/figure_traversals.log",
    benchmark:
        f"{RESULTS}/benchmarks/figure_traversals.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen figure traversals --results {params.results} --out {output.png} > {log} 2>&1"


rule figure_calibration:
    input:
        calibration=f"{RESULTS}/directions/calibration.parquet",
    output:
        **figure_output("calibration", "3. Directions", "calibration"),
    params:
        results=run_dir_of_figure,
    log:
        f"{RESULTS}/logs/figure_calibration.log",
    benchmark:
        f"{RESULTS}/benchmarks/figure_calibration.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen figure calibration --results {params.results} --out {output.png} > {log} 2>&1"


rule figure_entanglement:
    input:
        entanglement=f"{RESULTS}/directions/entanglement.json",
    output:
        **figure_output("entanglement", "3. Directions", "entanglement"),
    params:
        results=run_dir_of_figure,
    log:
        f"{RESULTS}/logs/figure_entanglement.log",
    benchmark:
        f"{RESULTS}/benchmarks/figure_entanglement.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen figure entanglement --results {params.results} --out {output.png} > {log} 2>&1"


rule figure_conditional_edit:
    input:
        directions=f"{RESULTS}/directions/directions.json",
        generator=f"{RESULTS}/gan/generator.pt",
        latents=f"{RESULTS}/samples/latents.npy",
        samples=f"{RESULTS}/samples/properties.parquet",
    output:
        **figure_output("conditional_edit", "3. Directions", "conditional editing"),
    params:
        results=run_dir_of_figure,
    log:
        f"{RESULTS}/logs/figure_conditional_edit.log",
    benchmark:
        f"{RESULTS}/benchmarks/figure_conditional_edit.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen figure conditional-edit --results {params.results} --out {output.png} > {log} 2>&1"


rule figure_retrieval_comparison:
    # Fig. 10 (journal version): SSL vs. physical-property search for two real regions.
    input:
        table=f"{RESULTS}/data/patches.parquet",
        patches=f"{RESULTS}/data/patches.zarr",
        encoder=f"{RESULTS}/retrieval/ssl/encoder.pt",
        index=f"{RESULTS}/retrieval/index/index.json",
    output:
        **figure_output("retrieval_comparison", "4. Retrieval", "comparison"),
    params:
        results=run_dir_of_figure,
    log:
        f"{RESULTS}/logs/figure_retrieval_comparison.log",
    benchmark:
        f"{RESULTS}/benchmarks/figure_retrieval_comparison.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen figure retrieval-comparison --results {params.results} --out {output.png} > {log} 2>&1"

# What `rule all` asks for (the retrieval figures come from rule evaluate_retrieval).
FIGURE_FILES = [
    rules.figure_pipeline.output.png,
    rules.figure_patches.output.png,
    rules.figure_properties.output.png,
    rules.figure_spectra.output.png,
    rules.figure_gan_training.output.png,
    rules.figure_embedding.output.png,
    rules.figure_ssl_training.output.png,
    rules.figure_latent_space.output.png,
    rules.figure_traversals.output.png,
    rules.figure_calibration.output.png,
    rules.figure_entanglement.output.png,
    rules.figure_conditional_edit.output.png,
    rules.figure_retrieval_comparison.output.png,
]
