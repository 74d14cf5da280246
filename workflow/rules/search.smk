rule search:
    input:
        data=DATA,
        code=code_files("search"),
    output:
        supernet=f"{SEARCH_DIR}/supernet.pt",
        metrics=f"{SEARCH_DIR}/metrics.h5",
    params:
        stage=lambda w: stage_json("search", w, method=w.search, seed=w.seed),
        out_dir=SEARCH_DIR,
    log:
        "logs/search/{dataset}/{search}/seed{seed}.log",
    threads: THREADS
    shell:
        "{PIPELINE} search --params {params.stage:q} --data {input.data}"
        " --out-dir {params.out_dir} --threads {threads} 2> {log}"
