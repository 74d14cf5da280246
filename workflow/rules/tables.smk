rule tables:
    input:
        metrics=retrain_metrics,
        genotypes=benchmark_genotypes,
        params=PARAMS["tables"],
        code=code_path("tables"),
    output:
        table=report(
            table_path("{dataset}"), caption="../report/table.rst", category="Tables"
        ),
        metrics=PATHS["table_metrics"],
    log:
        "logs/tables/{dataset}.log",
    conda:
        "../envs/pipeline.yaml"
    resources:
        **slurm_resources("tables"),
    params:
        genotypes=lambda w, input: (
            f"--genotypes {' '.join(input.genotypes)}" if input.genotypes else ""
        ),
    shell:
        "python -m pipeline tables --params-file {input.params} --out {output.table}"
        " --metrics-out {output.metrics} {input.metrics} {params.genotypes} > {log} 2>&1"


rule table_html:
    input:
        table=table_path("{dataset}"),
        code=code_path("table_html"),
    output:
        report(
            PATHS["table_html"],
            caption="../report/table_html.rst",
            category="Tables",
        ),
    log:
        "logs/tables/{dataset}_html.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        title="Results: {dataset}",
    shell:
        "python -m pipeline table-html {input.table} --out {output} --title {params.title:q} > {log} 2>&1"
