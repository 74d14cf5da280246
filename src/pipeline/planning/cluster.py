"""SLURM resources of each job, from the config's ``cluster`` section.

The Snakemake rules hand these to the SLURM executor plugin (``snakemake --profile slurm``),
so a user adapts partitions, GPU type, memory and time limits to their cluster in the
config, without editing rules. Resources never change results: no stage receives them, and
changing them reruns nothing.
"""

from __future__ import annotations

from typing import Any

# Stages whose jobs train or run networks. Selection joins them per method (runs_network),
# latency when it measures on a GPU (not when it looks up tables or times a CPU).
GPU_STAGES = ("search", "retrain", "transfer")
CPU_STAGES = ("data", "latency_filter", "tables")
STAGES = GPU_STAGES + CPU_STAGES + ("select", "latency")

# Resource names as the SLURM executor plugin reads them; every job gets all of them
# (None: not requested), so that a rule's resources do not depend on its wildcards.
RESOURCE_KEYS = (
    "slurm_partition",
    "slurm_account",
    "gpu",
    "gpu_model",
    "cpus_per_gpu",
    "mem_mb",
    "runtime",
    "constraint",
    "qos",
    "slurm_extra",
)


def device_class(config: dict, stage: str, select_method: str | None = None) -> str:
    """'gpu' or 'cpu': which block of ``cluster`` a stage's job takes its resources from."""
    if stage in GPU_STAGES:
        return "gpu"
    if stage in CPU_STAGES:
        return "cpu"
    if stage == "select":
        from pipeline.registry import registries

        (select,) = registries("select")  # a lookup by name, not a code dependency (codedeps)
        if select_method is None:
            raise ValueError("select jobs need the selection method's name")
        block = config["select"]["methods"][select_method]
        return "gpu" if select.METHODS.get(block["algorithm"]).runs_network else "cpu"
    if stage == "latency":
        latency = config["latency"]
        device = latency["measure"].get("device") or config["runtime"]["device"]
        return "gpu" if latency["method"] == "measure" and device != "cpu" else "cpu"
    raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")


def job_resources(config: dict, stage: str, select_method: str | None = None) -> dict[str, Any]:
    """The plugin resources of one job: the stage's device block, then its ``rules`` override.

    ``stop_signal_seconds`` becomes ``--signal=TERM@N``: SLURM sends SIGTERM that long before
    the time limit, the stage finishes its epoch, writes its checkpoint and exits, and the
    retried job resumes. SIGTERM rather than USR1 because Snakemake, which runs the stage
    inside the job, treats SIGTERM as "let running jobs finish" but dies on SIGUSR1.
    """
    cluster = config.get("cluster", {})  # none: the plugin's and the cluster's defaults
    common = {"slurm_account": cluster["slurm_account"]} if cluster.get("slurm_account") else {}
    block = {**common, **cluster.get(device_class(config, stage, select_method), {}), **cluster.get("rules", {}).get(stage, {})}
    resources = {key: block.get(key) for key in RESOURCE_KEYS}
    extra = [f"--signal=TERM@{block['stop_signal_seconds']}"] if block.get("stop_signal_seconds") else []
    if block.get("slurm_extra"):
        extra.append(block["slurm_extra"])
    resources["slurm_extra"] = " ".join(extra) or None
    return resources
