rule search:
    input:
        data=DATA,
        params=PARAMS["search"],
        code=code_path("search"),
    output:
        supernet=f"{SEARCH_DIR}/supernet.pt",
        metrics=f"{SEARCH_DIR}/metrics.h5",
    log:
        "logs/search/{dataset}/{search}/seed{seed}.log",
    conda:
        "../envs/pipeline.yaml"
    threads: THREADS
    resources:
        **slurm_resources("search"),
    params:
        out_dir=SEARCH_DIR,
    shell:
        # exec: the stage itself gets SLURM's stop signal, checkpoints and exits
        "exec python -m pipeline search --params-file {input.params} --data {input.data}"
        " --out-dir {params.out_dir} 2> {log}"
