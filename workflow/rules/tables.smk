rule tables:
    input:
        metrics=retrain_metrics,
        code=code_files("tables"),
    output:
        report(
            table_path("{dataset}"), caption="../report/table.rst", category="Tables"
        ),
    log:
        "logs/tables/{dataset}.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        stage=lambda w: stage_json("tables", w),
    shell:
        "python -m pipeline tables --params {params.stage:q} --out {output} {input.metrics} > {log} 2>&1"
