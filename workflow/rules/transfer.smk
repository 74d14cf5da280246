rule transfer:
    input:
        genotype=GENOTYPE,
        source=transfer_source_dirs,
        params=PARAMS["transfer"],
        code=code_path("transfer"),
    output:
        model=f"{TRANSFER_DIR}/model.pt",
        metrics=f"{TRANSFER_DIR}/metrics.h5",
    log:
        "logs/transfer/{target}/{dataset}/{search}/{select}/seed{seed}.log",
    conda:
        "../envs/pipeline.yaml"
    threads: THREADS
    resources:
        **slurm_resources("transfer"),
    params:
        out_dir=TRANSFER_DIR,
        launcher=launcher("transfer"),
    shell:
        # exec: the stage itself gets SLURM's stop signal, checkpoints and exits
        "exec {params.launcher} -m pipeline transfer --params-file {input.params} --genotype {input.genotype}"
        " --out-dir {params.out_dir} 2> {log}"


# The transfer dataset's table comes from this rule, not from the CIFAR-style one.
ruleorder: transfer_tables > tables


rule transfer_tables:
    input:
        metrics=transfer_metrics,
        params=PARAMS["tables"].format(dataset=config["transfer"]["dataset"]),
        code=code_path("tables"),
    output:
        report(
            table_path(config["transfer"]["dataset"]),
            caption="../report/table.rst",
            category="Tables",
        ),
    log:
        f"logs/tables/{config['transfer']['dataset']}.log",
    conda:
        "../envs/pipeline.yaml"
    resources:
        **slurm_resources("tables"),
    shell:
        "python -m pipeline tables --params-file {input.params} --out {output} {input.metrics} > {log} 2>&1"
