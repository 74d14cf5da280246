"""How long planning takes: `snakemake --version` against `snakemake -n` on the papers'
config with every configured search method and 4 seeds, plus `pipeline --help` and
`pipeline check-config`. Wall and CPU time (children's user+sys), median of --repeats runs,
in a scratch copy of the workflow (planning writes results/params).

    python bench/plan.py              # from the repository root, with .venv active
    python bench/plan.py --repeats 5

`snakemake --version` alone includes the SLURM executor plugin's start-up: where the SLURM
client tools are installed but no controller answers, that plugin's `scontrol show config`
retries for about 9 s (scripts/local_slurm.sh start, or uninstalling the clients, avoids it).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    methods = list(base["search"]["methods"])
    with tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch)
        for name in ("Snakefile", "workflow", "profiles", "config", "src", "data"):
            source = REPO / name
            if source.is_dir():
                shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy2(source, project / name)
        overlay = {
            "seeds": [0, 1, 2, 3],
            "search": {"run": methods},
            "data": {"cifar10": {"source": {"format": "imagefolder", "train": "data/demo/cifar10-demo.tar.gz",
                                             "test": "data/demo/cifar10-demo.tar.gz"}}},
        }
        (project / "config" / "bench.yaml").write_text(yaml.safe_dump(overlay))
        configs = ["config/config.yaml", "config/bench.yaml"]
        snakemake = str(BIN / "snakemake")
        plan = [snakemake, "-n", "--quiet", "--cores", "1", "--configfile", *configs, "--", "results/tables/cifar10.csv"]
        jobs = subprocess.run([snakemake, "-n", "--cores", "1", "--configfile", *configs, "--", "results/tables/cifar10.csv"],
                              cwd=project, capture_output=True, text=True)
        total = [line.split()[-1] for line in jobs.stdout.splitlines() if line.startswith("total")]
        runs = {
            "snakemake --version": [snakemake, "--version"],
            f"snakemake -n ({len(methods)} methods x 4 seeds, {total[0] if total else '?'} jobs)": plan,
            "pipeline --help": [str(BIN / "pipeline"), "--help"],
            "pipeline check-config": [str(BIN / "pipeline"), "check-config", *sum((["--config", c] for c in configs), [])],
        }
        results = {}
        for label, cmd in runs.items():
            samples = [timed(cmd, project) for _ in range(args.repeats)]
            results[label] = (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples))
    load = os.getloadavg()[0]
    print(f"median of {args.repeats}; load average {load:.2f} on {os.cpu_count()} CPUs")
    print(f"{'command':58s} {'wall s':>7s} {'CPU s':>7s}")
    for label, (wall, cpu) in results.items():
        print(f"{label:58s} {wall:7.2f} {cpu:7.2f}")
    version, plan_label = results["snakemake --version"], next(k for k in results if k.startswith("snakemake -n"))
    print(f"planning beyond --version: {results[plan_label][0] - version[0]:.2f} s wall, "
          f"{results[plan_label][1] - version[1]:.2f} s CPU (target: within 1.5 s)")


if __name__ == "__main__":
    main()
