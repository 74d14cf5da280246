rule tables:
    input:
        metrics=retrain_metrics,
        code=code_files("tables"),
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
        stage=lambda w: stage_json("tables", w),
    shell:
        "python -m pipeline tables --params {params.stage:q} --out {output.table}"
        " --metrics-out {output.metrics} {input.metrics} > {log} 2>&1"
