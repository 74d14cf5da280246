rule prepare_data:
    input:
        source=data_source_files,
        code=code_files("data"),
    output:
        DATA,
    log:
        "logs/data/{dataset}.log",
    conda:
        "../envs/pipeline.yaml"
    resources:
        **slurm_resources("data"),
    params:
        stage=lambda w: stage_json("data", w),
    shell:
        "python -m pipeline data --params {params.stage:q} --out {output} 2> {log}"
