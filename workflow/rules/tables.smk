rule tables:
    input:
        metrics=retrain_metrics,
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
    shell:
        "python -m pipeline tables --params-file {input.params} --out {output.table}"
        " --metrics-out {output.metrics} {input.metrics} > {log} 2>&1"
