"""SLURM resources per job from the config's `cluster` section."""

import pytest

from conftest import REPO
from pipeline.config import ConfigError, deep_merge, load_config, stage_params, validate_config
from pipeline.gpus import arch_covers, check_gpu_build, gpu_capability
from pipeline.planning.cluster import RESOURCE_KEYS, job_resources
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


def test_one_account_for_every_job_unless_a_block_or_rule_overrides_it(config):
    assert all(job_resources(config, stage)["slurm_account"] is None for stage in ("data", "search"))
    charged = deep_merge(config, {"cluster": {"slurm_account": "nas_lab", "rules": {"retrain": {"slurm_account": "big_grant"}}}})
    validate_config(charged)
    assert job_resources(charged, "data")["slurm_account"] == "nas_lab"
    assert job_resources(charged, "search")["slurm_account"] == "nas_lab"
    assert job_resources(charged, "retrain")["slurm_account"] == "big_grant"


# ---------------------------------------------------------------- GPU generations

CUDA13 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # torch 2.14.1+cu130
CUDA126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


@pytest.mark.parametrize("name, capability", [
    ("v100", (7, 0)), ("V100", (7, 0)), ("tesla_v100-sxm2-32gb", (7, 0)), ("a100", (8, 0)), ("nvidia_a100_80gb", (8, 0)),
    ("a10", (8, 6)), ("l40s", (8, 9)), ("h100", (9, 0)), ("mi250", None),
])
def test_gpu_models_map_to_compute_capabilities(name, capability):
    assert gpu_capability(name) == capability


def test_arch_list_coverage_follows_cuda_binary_compatibility():
    assert not arch_covers(CUDA13, (7, 0)) and arch_covers(CUDA126, (7, 0))
    assert arch_covers(["sm_80"], (8, 6))  # same major, newer minor
    assert not arch_covers(["sm_86"], (8, 0)) and not arch_covers(["sm_80"], (9, 0))
    assert arch_covers(["sm_80", "compute_80"], (9, 0))  # PTX is compiled for newer GPUs
    assert not arch_covers(["sm_90a"], (9, 1)) and arch_covers(["sm_90a"], (9, 0))
    assert not arch_covers([], (7, 0))


def test_the_arch_check_refuses_a_build_without_the_configured_gpu_model(config):
    assert config["cluster"]["gpu"]["gpu_model"] == "v100"  # the project's target cluster
    with pytest.raises(ValueError) as refused:
        check_gpu_build(config, CUDA13, "2.14.1+cu130")
    message = str(refused.value)
    assert "\n" not in message and message.startswith("v100 (compute capability 7.0, from cluster.gpu.gpu_model)")
    assert "2.14.1+cu130 has no kernels for it" in message
    assert "compute capability 7.0" in check_gpu_build(config, CUDA126, "2.14.1+cu126")
    with pytest.raises(ValueError, match="CPU-only build"):
        check_gpu_build(config, [], "2.14.1+cpu")
    assert "a100" in check_gpu_build(config, CUDA13, "2.14.1+cu130", gpu_model="a100")
    custom = deep_merge(config, {"cluster": {"gpu": {"gpu_model": "gv100_lab", "compute_capability": "7.0"}}})
    validate_config(custom)
    with pytest.raises(ValueError, match="from cluster.gpu.compute_capability"):
        check_gpu_build(custom, CUDA13, "2.14.1+cu130")
    with pytest.raises(ValueError, match="unknown GPU model 'gv100_lab'"):
        check_gpu_build(deep_merge(config, {"cluster": {"gpu": {"gpu_model": "gv100_lab"}}}), CUDA13, "x")
    assert "nothing to check" in check_gpu_build(deep_merge(config, {"cluster": {"gpu": {"gpu_model": None}}}), [], "x")


def test_check_gpu_command_exits_2_with_one_line(tmp_path, monkeypatch):
    import subprocess
    import sys

    import torch

    result = subprocess.run([sys.executable, "-m", "pipeline", "check-gpu", "--config", str(REPO / "config" / "config.yaml")],
                            capture_output=True, text=True)
    expected = "compute capability 7.0" if arch_covers(torch.cuda.get_arch_list(), (7, 0)) else None
    if expected is None:
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("pipeline check-gpu: error: v100 (compute capability 7.0")
    else:
        assert result.returncode == 0 and expected in result.stdout


def test_a_gpu_without_kernels_in_the_build_fails_at_device_resolution(monkeypatch):
    import torch

    from pipeline import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-32GB")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: CUDA13)
    with pytest.raises(runtime.RuntimeConfigError, match="Tesla V100-SXM2-32GB .compute capability 7.0. has no kernels"):
        runtime.resolve_device("auto")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: CUDA126)
    assert runtime.resolve_device("cuda:0") == torch.device("cuda:0")
