rule select:
    input:
        supernet=f"{SEARCH_DIR}/supernet.pt",
        data=DATA,
        code=code_files("select"),
    output:
        genotype=GENOTYPE,
        decisions=DECISIONS,
    log:
        "logs/select/{dataset}/{search}/{select}/seed{seed}.log",
    conda:
        "../envs/pipeline.yaml"
    threads: THREADS
    resources:
        **slurm_resources("select"),
    params:
        stage=lambda w: stage_json("select", w, method=w.select, seed=w.seed),
    shell:
        "python -m pipeline select --params {params.stage:q} --supernet {input.supernet}"
        " --data {input.data} --out {output.genotype} --decisions {output.decisions}"
        " --threads {threads} 2> {log}"
