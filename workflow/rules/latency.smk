# Latency stage (not part of `all`):
#   snakemake results/tables/latency/cifar10.csv --cores 2 --configfile config/demo.yaml
rule latency:
    input:
        unpack(latency_inputs),
        genotype=GENOTYPE,
        params=PARAMS["latency"],
        code=code_path("latency"),
    output:
        PATHS["latency"],
    log:
        "logs/latency/{dataset}/{search}/{select}/seed{seed}.log",
    conda:
        "../envs/pipeline.yaml"
    threads: THREADS
    resources:
        **slurm_resources("latency"),
    params:
        data=lambda w, input: f"--data {input.data}" if "data" in input.keys() else "",
    shell:
        "python -m pipeline latency --params-file {input.params} --genotype {input.genotype}"
        " {params.data} --out {output} --threads {threads} 2> {log}"


rule latency_filter:
    input:
        latency=latency_files,
        params=PARAMS["latency_filter"],
        code=code_path("latency_filter"),
    output:
        PATHS["latency_filter"],
    log:
        "logs/latency/{dataset}/filter.log",
    conda:
        "../envs/pipeline.yaml"
    resources:
        **slurm_resources("latency_filter"),
    shell:
        "python -m pipeline latency-filter --params-file {input.params} --out {output}"
        " {input.latency} > {log} 2>&1"


rule tables_latency:
    input:
        metrics=retrain_metrics,
        genotypes=benchmark_genotypes,
        latency=PATHS["latency_filter"],
        params=PARAMS["tables"],
        code=code_path("tables"),
    output:
        report(
            PATHS["latency_table"],
            caption="../report/table.rst",
            category="Tables",
        ),
    log:
        "logs/tables/latency/{dataset}.log",
    conda:
        "../envs/pipeline.yaml"
    resources:
        **slurm_resources("tables"),
    params:
        genotypes=lambda w, input: (
            f"--genotypes {' '.join(input.genotypes)}" if input.genotypes else ""
        ),
    shell:
        "python -m pipeline tables --params-file {input.params} --latency {input.latency}"
        " --out {output} {input.metrics} {params.genotypes} > {log} 2>&1"


rule plot_latency:
    input:
        table=PATHS["latency_table"],
        code=code_path("plots"),
    output:
        report(
            PATHS["latency_plot"],
            caption="../report/latency.rst",
            category="Tables",
        ),
    log:
        "logs/plots/latency/{dataset}.log",
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline plot-latency {input.table} --out {output} 2> {log}"
