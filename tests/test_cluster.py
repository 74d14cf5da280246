"""SLURM resources per job from the config's `cluster` section."""

import pytest

from conftest import REPO
from pipeline.cluster import RESOURCE_KEYS, job_resources
from pipeline.config import ConfigError, deep_merge, load_config, stage_params, validate_config
from pipeline.select.magnitude import Magnitude


@pytest.fixture
def config(monkeypatch):
    monkeypatch.chdir(REPO)
    return load_config(["config/config.yaml", "config/demo.yaml"])


def test_gpu_stages_ask_for_a_gpu_and_the_stop_signal(config):
    for stage in ("search", "retrain", "transfer"):
        resources = job_resources(config, stage)
        assert resources["slurm_partition"] == "gpu" and resources["gpu"] == 1 and resources["gpu_model"] == "v100"
        assert resources["slurm_extra"] == "--signal=TERM@120"  # demo.yaml's stop_signal_seconds
    for stage in ("data", "latency_filter", "tables"):
        resources = job_resources(config, stage)
        assert resources["slurm_partition"] == "cpu" and resources["gpu"] is None and resources["slurm_extra"] is None
    assert all(set(job_resources(config, stage)) == set(RESOURCE_KEYS) for stage in ("data", "search"))


def test_selection_goes_to_the_gpu_partition_when_the_method_runs_the_network(config, monkeypatch):
    assert job_resources(config, "select", "magnitude")["slurm_partition"] == "cpu"
    monkeypatch.setattr(Magnitude, "runs_network", True)
    resources = job_resources(config, "select", "magnitude")
    assert resources["slurm_partition"] == "gpu" and resources["gpu"] == 1


def test_latency_needs_a_gpu_only_when_it_times_one(config):
    assert job_resources(config, "latency")["slurm_partition"] == "cpu"  # demo: timed on the CPU
    on_gpu = deep_merge(config, {"latency": {"measure": {"device": "cuda"}}})
    assert job_resources(on_gpu, "latency")["gpu"] == 1
    looked_up = deep_merge(on_gpu, {"latency": {"method": "lookup"}})
    assert job_resources(looked_up, "latency")["slurm_partition"] == "cpu"


def test_rules_override_one_stage_and_extra_options_are_kept(config):
    config = deep_merge(config, {"cluster": {"rules": {"retrain": {"runtime": 2880, "slurm_extra": "--exclusive"}}}})
    validate_config(config)
    retrain = job_resources(config, "retrain")
    assert retrain["runtime"] == 2880 and retrain["slurm_extra"] == "--signal=TERM@120 --exclusive"
    assert job_resources(config, "search")["runtime"] == 60


def test_resources_reach_no_stage(config):
    changed = deep_merge(config, {"cluster": {"gpu": {"mem_mb": 64000, "gpu_model": "a100"}, "cpu": {"runtime": 5}}})
    for stage, keys in (("search", {"method": "darts_1st", "seed": 0}), ("retrain", {"seed": 0}), ("data", {}), ("tables", {})):
        assert stage_params(changed, stage, **keys) == stage_params(config, stage, **keys)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"gpu": {"gpus": 2}}, "config key 'cluster.gpu.gpus': unknown key"),
        ({"rules": {"retrian": {"runtime": 5}}}, "config key 'cluster.rules.retrian': unknown key"),
        ({"gpu": {"gpu_model": "'v100'"}}, "config key 'cluster.gpu.gpu_model'"),
        ({"cpu": {"runtime": 0}}, "config key 'cluster.cpu.runtime'"),
    ],
)
def test_bad_cluster_settings_name_the_key(config, change, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(deep_merge(config, {"cluster": change}))
