rule search:
    input:
        data=DATA,
        code=code_files("search"),
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
        stage=lambda w: stage_json("search", w, method=w.search, seed=w.seed),
        out_dir=SEARCH_DIR,
    shell:
        # exec: the stage itself gets SLURM's stop signal, checkpoints and exits
        "exec python -m pipeline search --params {params.stage:q} --data {input.data}"
        " --out-dir {params.out_dir} --threads {threads} 2> {log}"
