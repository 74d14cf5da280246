# Pictures of the genotypes and plots of the runs, gathered by `snakemake --report`:
# grouped by dataset and space (category) and by method (subcategory).


rule draw_genotype:
    input:
        genotype=GENOTYPE,
        code=code_path("plots"),
    output:
        report(
            PATHS["genotype_picture"],
            caption="../report/genotype.rst",
            category=report_category,
            subcategory="{search} + {select}",
            labels={"figure": "cells", "seed": "{seed}"},
        ),
    log:
        "logs/plots/{dataset}/{search}/{select}/seed{seed}/genotype.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline draw-genotype {input.genotype} --out {output} 2> {log}"


rule plot_decisions:
    input:
        decisions=PATHS["decisions"],
        code=code_path("plots"),
    output:
        report(
            PATHS["decisions_plot"],
            caption="../report/decisions.rst",
            category=report_category,
            subcategory="{search} + {select}",
            labels={"figure": "decisions", "seed": "{seed}"},
        ),
    log:
        "logs/plots/{dataset}/{search}/{select}/seed{seed}/decisions.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        title="{select} on the {search} supernet, seed {seed}",
    shell:
        "python -m pipeline plot-decisions {input.decisions} --out {output} --title {params.title:q} 2> {log}"


rule plot_search:
    input:
        metrics=f"{SEARCH_DIR}/metrics.h5",
        code=code_path("plots"),
    output:
        report(
            directory(PATHS["search_plots"]),
            patterns=["{figure}.svg"],
            caption="../report/search.rst",
            category=report_category,
            subcategory="{search}",
            labels={"figure": "search {figure}", "seed": "{seed}"},
        ),
    log:
        "logs/plots/{dataset}/{search}/seed{seed}/search.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline plot {input.metrics} --out-dir {output} 2> {log}"


rule plot_retrain:
    input:
        metrics=f"{RETRAIN_DIR}/metrics.h5",
        code=code_path("plots"),
    output:
        report(
            directory(PATHS["retrain_plots"]),
            patterns=["{figure}.svg"],
            caption="../report/retrain.rst",
            category=report_category,
            subcategory="{search} + {select}",
            labels={"figure": "retrain {figure}", "seed": "{seed}"},
        ),
    log:
        "logs/plots/{dataset}/{search}/{select}/seed{seed}/retrain.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline plot {input.metrics} --out-dir {output} 2> {log}"


rule plot_ground_truth:
    input:
        unpack(ground_truth_inputs),
        code=code_path("plots"),
    output:
        report(
            PATHS["ground_truth_plot"],
            caption="../report/ground_truth.rst",
            category="Tables",
        ),
    log:
        "logs/plots/{dataset}/ground_truth.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline plot-ground-truth {input.metrics} --genotypes {input.genotypes}"
        " --out {output} 2> {log}"
