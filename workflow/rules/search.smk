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
    params:
        stage=lambda w: stage_json("search", w, method=w.search, seed=w.seed),
        out_dir=SEARCH_DIR,
    shell:
        "python -m pipeline search --params {params.stage:q} --data {input.data}"
        " --out-dir {params.out_dir} --threads {threads} 2> {log}"
