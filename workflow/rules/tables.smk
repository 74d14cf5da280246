rule tables:
    input:
        metrics=retrain_metrics,
        code=code_files("tables"),
    output:
        table_path("{dataset}"),
    params:
        stage=lambda w: stage_json("tables", w),
    log:
        "logs/tables/{dataset}.log",
    shell:
        "{PIPELINE} tables --params {params.stage:q} --out {output} {input.metrics} > {log} 2>&1"
