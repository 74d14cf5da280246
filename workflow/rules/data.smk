rule prepare_data:
    input:
        code=code_files("data"),
    output:
        DATA,
    params:
        stage=lambda w: stage_json("data", w),
    log:
        "logs/data/{dataset}.log",
    shell:
        "{PIPELINE} data --params {params.stage:q} --out {output} 2> {log}"
