"""`snakemake --profile slurm` against a real one-node SLURM cluster (scripts/local_slurm.sh).

Skipped where SLURM is not installed; started here (as root) when it is not running, and
stopped again afterwards.
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from pipeline import artifacts
from pipeline.config import deep_merge
from test_workflow_end_to_end import BIN, TARGET, TINY, copy_project, env

pytestmark = pytest.mark.slow

SCRIPT = REPO / "scripts" / "local_slurm.sh"


def slurm_cluster_name() -> str:
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    match = re.search(r"^ClusterName\s*=\s*(\S+)", config, flags=re.M)
    return match.group(1) if match else ""


@pytest.fixture(scope="module")
def local_slurm():
    if not all(shutil.which(tool) for tool in ("sbatch", "squeue", "slurmctld", "slurmd")):
        pytest.skip("SLURM is not installed (Debian: sudo scripts/local_slurm.sh install)")
    started = False
    if subprocess.run([SCRIPT, "status"], capture_output=True).returncode == 0:
        if slurm_cluster_name() != "local":
            pytest.skip("the SLURM cluster here is not scripts/local_slurm.sh's; not submitting test jobs to it")
    elif os.geteuid() != 0:
        pytest.skip("no local SLURM running, and starting one needs root (sudo scripts/local_slurm.sh start)")
    else:
        start = subprocess.run([SCRIPT, "start"], capture_output=True, text=True)
        assert start.returncode == 0, start.stdout + start.stderr
        started = True
    yield
    if started:
        subprocess.run([SCRIPT, "stop"], capture_output=True)


def slurm_jobs(ids: list[str]) -> dict[str, list[dict[str, str]]]:
    """Rule-and-wildcards comment -> its jobs' records in slurmctld, in submission order."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for job_id in ids:
        record = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        fields = dict(re.findall(r"(\w+)=(\S*)", record))
        jobs.setdefault(fields["Comment"], []).append(fields)
    return jobs


ACCOUNT = "nas_lab"
SEARCH = "rule_search_wildcards_cifar10_darts_1st_0"
EXPECTED = {  # comment -> (partition, states of its jobs)
    "rule_prepare_data_wildcards_cifar10": ("cpu", ["COMPLETED"]),
    "rule_prepare_data_wildcards_broken": ("cpu", ["FAILED", "FAILED"]),  # tried, retried
    SEARCH: ("gpu", ["FAILED", "COMPLETED"]),  # stopped by SIGTERM, then resumed
    "rule_select_wildcards_cifar10_darts_1st_magnitude_0": ("cpu", ["COMPLETED"]),
    "rule_retrain_wildcards_cifar10_darts_1st_magnitude_0": ("gpu", ["COMPLETED"]),
    "rule_tables_wildcards_cifar10": ("cpu", ["COMPLETED"]),
}


def test_slurm_profile_runs_the_chain_resumes_a_stopped_job_and_reports_a_failed_one(local_slurm, tmp_path):
    project = copy_project(tmp_path)
    # A second dataset whose source is not an image archive: its data job fails on the node.
    (project / "data" / "broken.tar.gz").write_bytes(b"not a tar archive")
    broken = {"source": {"format": "imagefolder", "train": "data/broken.tar.gz", "test": "data/broken.tar.gz"}}
    # Every job is charged to the account set once in the config (no slurmdbd here, so
    # SLURM records it without checking it).
    overlay = deep_merge(TINY, {"data": {"broken": broken}, "search": {"settings": {"epochs": 3}},
                                "cluster": {"slurm_account": ACCOUNT}})
    (project / "config" / "tiny.yaml").write_text(yaml.safe_dump(overlay))

    cmd = [str(BIN / "snakemake"), "--profile", "slurm", TARGET, "results/data/broken.pt",
           "--configfile", "config/demo.yaml", "config/tiny.yaml", "--keep-going",
           "--retries", "1", "--slurm-init-seconds-before-status-checks", "2"]
    log = tmp_path / "snakemake.log"  # a file, not a pipe nobody reads until the end
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=project, stdout=sink, stderr=subprocess.STDOUT, env=env())
    try:
        # SIGTERM to the running search's job steps, as SLURM sends it stop_signal_seconds
        # before the time limit: the stage checkpoints and fails, the retry resumes.
        checkpoint = project / "results/search/cifar10/darts_1st/seed0/checkpoint/last.pt"
        deadline = time.time() + 900
        while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, "the workflow ended before the search could be stopped"
        # This project's search job: the only SLURM log so far in its log folder.
        (search_log,) = (project / "logs/slurm/rule_search/cifar10_darts_1st_0").glob("*.log")
        subprocess.run(["scancel", "--signal=TERM", search_log.stem], check=True)
        proc.wait(timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert proc.returncode != 0, output[-3000:]

    ids = re.findall(r"submitted with SLURM jobid (\d+)", output)
    jobs = slurm_jobs(ids)
    assert {comment: [job["JobState"] for job in records] for comment, records in jobs.items()} == {
        comment: states for comment, (_, states) in EXPECTED.items()
    }, output[-3000:]
    for comment, (partition, _) in EXPECTED.items():
        for job in jobs[comment]:
            assert job["Partition"] == partition, comment
            if partition == "gpu":  # config cluster.gpu (demo.yaml sizes): one V100
                assert job["TresPerJob"] == "gres:gpu:v100:1", comment
            else:
                assert job.get("TresPerJob", "") in ("", "(null)"), comment
            assert job["TimeLimit"] == ("01:00:00" if partition == "gpu" else "00:30:00"), comment
            assert job["MinMemoryNode"] == "2000M", comment
            assert job["Account"] == ACCOUNT, comment
    assert "No SLURM account given" not in output

    # The stopped search exited 75 after its checkpoint; the retried job resumed from it.
    stopped, resumed = (job["JobId"] for job in jobs[SEARCH])
    slurm_logs = project / "logs" / "slurm" / "rule_search" / "cifar10_darts_1st_0"
    assert "returned non-zero exit status 75" in (slurm_logs / f"{stopped}.log").read_text()
    assert (slurm_logs / f"{resumed}.log").exists()
    assert re.search(r"resuming from .*checkpoint/last.pt after epoch [12]\b", (project / "logs/search/cifar10/darts_1st/seed0.log").read_text())
    assert (project / TARGET).exists()
    # The jobs ran in the documented node environment: the shared venv the workflow was
    # submitted from (the same path on every node), as each artifact's provenance records.
    for metrics in ("results/search/cifar10/darts_1st/seed0/metrics.h5", "results/retrain/cifar10/darts_1st/magnitude/seed0/metrics.h5"):
        provenance = artifacts.read_metrics(project / metrics).provenance
        assert Path(provenance["python_executable"]).parent == BIN, provenance["python_executable"]

    # Snakemake reports the failed job as failed, and keeps its SLURM log under logs/.
    failed_id = jobs["rule_prepare_data_wildcards_broken"][-1]["JobId"]
    assert re.search(rf"SLURM-job '{failed_id}' failed, SLURM status is: 'FAILED'", output), output[-3000:]
    assert "Error in rule prepare_data" in output
    assert (project / "logs" / "slurm" / "rule_prepare_data" / "broken" / f"{failed_id}.log").exists()
    assert "data/broken.tar.gz" in (project / "logs" / "data" / "broken.log").read_text()
