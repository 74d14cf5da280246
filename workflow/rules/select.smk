rule select:
    input:
        supernet=f"{SEARCH_DIR}/supernet.pt",
        data=DATA,
        params=PARAMS["select"],
        code=code_path("select"),
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
    shell:
        "python -m pipeline select --params-file {input.params} --supernet {input.supernet}"
        " --data {input.data} --out {output.genotype} --decisions {output.decisions} 2> {log}"
