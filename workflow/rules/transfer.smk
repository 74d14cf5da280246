rule transfer:
    input:
        genotype=GENOTYPE,
        source=transfer_source_dirs,
        code=code_files("transfer"),
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
        stage=transfer_json,
        out_dir=TRANSFER_DIR,
        launcher=launcher("transfer"),
    shell:
        # exec: the stage itself gets SLURM's stop signal, checkpoints and exits
        "exec {params.launcher} -m pipeline transfer --params {params.stage:q} --genotype {input.genotype}"
        " --out-dir {params.out_dir} --threads {threads} 2> {log}"


# The transfer dataset's table comes from this rule, not from the CIFAR-style one.
ruleorder: transfer_tables > tables


rule transfer_tables:
    input:
        metrics=transfer_metrics,
        code=code_files("tables"),
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
    params:
        stage=json.dumps(
            stage_params(config, "tables", dataset=config["transfer"]["dataset"]),
            sort_keys=True,
        ),
    shell:
        "python -m pipeline tables --params {params.stage:q} --out {output} {input.metrics} > {log} 2>&1"
