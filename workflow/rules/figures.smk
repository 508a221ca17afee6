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
        dot=str(LAYOUT.rulegraph),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
    log:
        log_of("figure_pipeline"),
    benchmark:
        benchmark_of("figure_pipeline")
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
        **figure_inputs("patches"),
    output:
        **figure_output("real_vs_generated", "2. GAN", "samples"),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
        seed=config["seed"],
    log:
        log_of("figure_patches"),
    benchmark:
        benchmark_of("figure_patches")
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
        **figure_inputs("properties"),
    output:
        **figure_output("property_distributions", "2. GAN", "fidelity"),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
    log:
        log_of("figure_properties"),
    benchmark:
        benchmark_of("figure_properties")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/figures.yaml"
    shell:
        "sharpgen figure properties --results {params.results} --out {output.png} > {log} 2>&1"


rule figure_extremes:
    # Beside fig. 2/3: sunspot-strength peaks, flux balance, tails of flux and separation.
    input:
        **figure_inputs("extremes"),
    output:
        **figure_output("extremes", "2. GAN", "fidelity"),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
    log:
        log_of("figure_extremes"),
    benchmark:
        benchmark_of("figure_extremes")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/figures.yaml"
    shell:
        "sharpgen figure extremes --results {params.results} --out {output.png} > {log} 2>&1"


rule figure_spectra:
    # Fig. 11 (lite).
    input:
        **figure_inputs("spectra"),
    output:
        **figure_output("power_spectra", "2. GAN", "fidelity"),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
        seed=config["seed"],
    log:
        log_of("figure_spectra"),
    benchmark:
        benchmark_of("figure_spectra")
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
        **figure_inputs("gan-training"),
    output:
        **figure_output("gan_training", "2. GAN", "training"),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
    log:
        log_of("figure_gan_training"),
    benchmark:
        benchmark_of("figure_gan_training")
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
        **figure_inputs("embedding"),
    output:
        **figure_output("ssl_embedding", "4. Retrieval", "embedding"),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
        seed=config["seed"],
    log:
        log_of("figure_embedding"),
    benchmark:
        benchmark_of("figure_embedding")
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
        **figure_inputs("ssl-training"),
    output:
        **figure_output("ssl_training", "4. Retrieval", "training"),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
    log:
        log_of("figure_ssl_training"),
    benchmark:
        benchmark_of("figure_ssl_training")
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
        **figure_inputs("latent-space"),
    output:
        **figure_output("latent_space", "3. Directions", "boundaries"),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
    log:
        log_of("figure_latent_space"),
    benchmark:
        benchmark_of("figure_latent_space")
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
        **figure_inputs("traversals"),
    output:
        **figure_output("traversals", "3. Directions", "traversals"),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
    log:
        log_of("figure_traversals"),
    benchmark:
        benchmark_of("figure_traversals")
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
        **figure_inputs("calibration"),
    output:
        **figure_output("calibration", "3. Directions", "calibration"),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
    log:
        log_of("figure_calibration"),
    benchmark:
        benchmark_of("figure_calibration")
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
        **figure_inputs("entanglement"),
    output:
        **figure_output("entanglement", "3. Directions", "entanglement"),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
    log:
        log_of("figure_entanglement"),
    benchmark:
        benchmark_of("figure_entanglement")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen figure entanglement --results {params.results} --out {output.png} > {log} 2>&1"


rule figure_label_score:
    input:
        **figure_inputs("label-score"),
    output:
        **figure_output("label_score", "3. Directions", "label score"),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
    log:
        log_of("figure_label_score"),
    benchmark:
        benchmark_of("figure_label_score")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    shell:
        "sharpgen figure label-score --results {params.results} --out {output.png} > {log} 2>&1"


rule figure_conditional_edit:
    input:
        **figure_inputs("conditional-edit"),
    output:
        **figure_output("conditional_edit", "3. Directions", "conditional editing"),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
    log:
        log_of("figure_conditional_edit"),
    benchmark:
        benchmark_of("figure_conditional_edit")
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
        **figure_inputs("retrieval-comparison"),
    output:
        **figure_output("retrieval_comparison", "4. Retrieval", "comparison"),
    params:
        results=lambda wildcards, output: results_dir_of(output.png, "figure"),
    log:
        log_of("figure_retrieval_comparison"),
    benchmark:
        benchmark_of("figure_retrieval_comparison")
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
    rules.figure_extremes.output.png,
    rules.figure_spectra.output.png,
    rules.figure_gan_training.output.png,
    rules.figure_embedding.output.png,
    rules.figure_ssl_training.output.png,
    rules.figure_latent_space.output.png,
    rules.figure_traversals.output.png,
    rules.figure_calibration.output.png,
    rules.figure_entanglement.output.png,
    rules.figure_label_score.output.png,
    rules.figure_conditional_edit.output.png,
    rules.figure_retrieval_comparison.output.png,
]
