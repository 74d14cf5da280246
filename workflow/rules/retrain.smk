rule retrain:
    input:
        genotype=GENOTYPE,
        data=DATA,
        params=PARAMS["retrain"],
        code=code_path("retrain"),
    output:
        model=f"{RETRAIN_DIR}/model.pt",
        metrics=f"{RETRAIN_DIR}/metrics.h5",
    log:
        "logs/retrain/{dataset}/{search}/{select}/seed{seed}.log",
    conda:
        "../envs/pipeline.yaml"
    threads: THREADS
    resources:
        **slurm_resources("retrain"),
    params:
        out_dir=RETRAIN_DIR,
        launcher=launcher("retrain"),
    shell:
        # exec: the stage itself gets SLURM's stop signal, checkpoints and exits
        "exec {params.launcher} -m pipeline retrain --params-file {input.params} --genotype {input.genotype}"
        " --data {input.data} --out-dir {params.out_dir} 2> {log}"
