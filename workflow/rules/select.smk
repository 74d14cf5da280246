rule select:
    input:
        supernet=f"{SEARCH_DIR}/supernet.pt",
        data=DATA,
        code=code_files("select"),
    output:
        GENOTYPE,
    params:
        stage=lambda w: stage_json("select", w, method=w.select, seed=w.seed),
    log:
        "logs/select/{dataset}/{search}/{select}/seed{seed}.log",
    threads: THREADS
    shell:
        "{PIPELINE} select --params {params.stage:q} --supernet {input.supernet}"
        " --data {input.data} --out {output} --threads {threads} 2> {log}"
