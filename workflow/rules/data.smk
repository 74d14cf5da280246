rule prepare_data:
    input:
        source=data_source_files,
        params=PARAMS["data"],
        code=code_path("data"),
    output:
        DATA,
    log:
        "logs/data/{dataset}.log",
    conda:
        "../envs/pipeline.yaml"
    resources:
        **slurm_resources("data"),
    shell:
        "python -m pipeline data --params-file {input.params} --out {output} 2> {log}"
