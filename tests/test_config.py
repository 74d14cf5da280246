import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from pipeline.config import ConfigError, deep_merge, load_config, selections_for, stage_params, validate_stage_params

BASE = [REPO / "config" / "config.yaml", REPO / "config" / "demo.yaml"]


def write_overlay(tmp_path, overlay: dict):
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return [*BASE, path]


def test_papers_settings_and_demo_overlay():
    papers = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert papers["search"]["settings"]["epochs"] == 50
    assert papers["search"]["settings"]["init_channels"] == 16
    assert papers["search"]["settings"]["layers"] == 8
    assert papers["search"]["settings"]["batch_size"] == 64
    assert papers["retrain"]["epochs"] == 600
    assert papers["retrain"]["init_channels"] == 36
    assert papers["retrain"]["layers"] == 20
    assert papers["retrain"]["batch_size"] == 96
    assert papers["seeds"] == [0, 1, 2, 3]
    config = load_config(BASE)
    assert config["runtime"]["device"] == "cpu"
    # The quick demo: NB201 searches judged by the benchmark (DARTS with magnitude, PT and
    # train-free; SNAS with its own derivation) and one DARTS-space chain through retraining.
    from pipeline.config import judged_by_benchmark, search_settings

    run = config["search"]["run"]
    nb201 = [name for name in run if search_settings(config, name)["space"] == "nb201"]
    darts = [name for name in run if search_settings(config, name)["space"] == "darts"]
    assert all(judged_by_benchmark(config, name) for name in nb201) and not any(judged_by_benchmark(config, name) for name in darts)
    pairs = {(config["search"]["methods"][name]["algorithm"], select) for name in nb201 for select in selections_for(config, name)}
    assert {("darts", "magnitude"), ("darts", "pt"), ("darts", "trainfree"), ("snas", "snas")} <= pairs
    assert [(config["search"]["methods"][name]["algorithm"], selections_for(config, name)) for name in darts] == [("darts", ["magnitude"])]
    # The every-method matrix (demo-all.yaml) runs every search method (unas_latency needs
    # the mobile space: test_stage_latency.py) and each selection: the methods' own derivations
    # and the darts-pt / BaLeNAS-TF pairs.
    from pipeline import search

    config = load_config([REPO / "config" / "config.yaml", REPO / "config" / "demo-all.yaml"])
    run = config["search"]["run"]
    assert {config["search"]["methods"][name]["algorithm"] for name in run} == set(search.METHODS.names()) - {"unas_latency"}
    assert {"order": 2} .items() <= config["search"]["methods"]["darts_2nd"].items()
    pairs = {(name, select) for name in run for select in selections_for(config, name)}
    assert {("darts_1st", "pt"), ("darts_1st", "pt_mag"), ("fix_alpha", "pt"), ("balenas", "trainfree"),
            ("snas", "snas"), ("unas", "unas"), ("darts_1st", "magnitude"), ("darts_2nd", "magnitude")} <= pairs
    assert all(select not in ("snas", "unas") for name, select in pairs if name not in ("snas", "unas"))
    assert config["search"]["methods"]["sgas_pt"]["op_selection"] == "pt" and "sgas_pt" in run  # SGAS+PT


def test_the_study_config_runs_the_darts_pt_nb201_comparison_on_a_cifar10_of_ones_choice(tmp_path):
    from pipeline.config import judged_by_benchmark, search_settings

    study = REPO / "config" / "study-nb201.yaml"
    own = tmp_path / "own.yaml"  # a user's own CIFAR-10 (here: the demo tarball)
    tar = str(REPO / "data" / "demo" / "cifar10-demo.tar.gz")
    own.write_text(yaml.safe_dump({"data": {"cifar10": {"source": {"format": "imagefolder", "train": tar, "test": tar}}}}))
    config = load_config([REPO / "config" / "config.yaml", study, own])
    assert config["data"]["cifar10"]["source"]["train"] == tar
    run = config["search"]["run"]
    assert all(search_settings(config, name)["space"] == "nb201" and judged_by_benchmark(config, name) for name in run)
    pairs = {(config["search"]["methods"][name]["algorithm"], select) for name in run for select in selections_for(config, name)}
    assert pairs == {("darts", "magnitude"), ("darts", "pt"), ("darts", "pt_mag"), ("darts", "trainfree"), ("snas", "snas")}
    assert yaml.safe_load(study.read_text())["data"]["cifar10"]["source"]["train"] == "../shared/data/cifar10-jpeg/train.tar.gz"


def test_deep_merge_merges_dicts_and_replaces_lists():
    merged = deep_merge({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3]}, "e": 2})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}


@pytest.mark.parametrize(
    "overlay, message",
    [
        ({"search": {"settings": {"epochs": "ten"}}}, "config key 'search.settings.epochs': 'ten' is not of type 'integer'"),
        ({"search": {"settings": {"epoch": 3}}}, "config key 'search.settings.epoch': unknown key"),
        ({"retrain": {"drop_path": 0.1}}, "config key 'retrain.drop_path': unknown key"),
        ({"data": {"cifar10": {"source": {"train": "nowhere.tar"}}}}, "config key 'data.cifar10.source.train': file not found: nowhere.tar"),
        ({"search": {"run": ["darts_3rd"]}}, "config key 'search.run[0]': 'darts_3rd' is not defined"),
        ({"search": {"methods": {"darts_1st": {"order": 3}}}}, "config key 'search.methods.darts_1st.order'"),
        ({"search": {"methods": {"x": {"algorithm": "nope"}}}}, "config key 'search.methods.x.algorithm': unknown search method 'nope'"),
        ({"search": {"settings": {"space": "nope"}}}, "config key 'search.settings.space': unknown search space 'nope'"),
        ({"dataset": "mnist"}, "config key 'dataset': 'mnist' has no entry"),
        ({"dataset": "svhn"}, "config key 'data.svhn.source.root': file not found: data/raw/svhn"),
        ({"runtime": {"amp": "fp8"}}, "config key 'runtime.amp'"),
        ({"runtime": {"threads": 0}}, "config key 'runtime.threads': 0 is less than the minimum of 1"),
        ({"search": {"settings": {"epochs": 3.0}}}, "config key 'search.settings.epochs': 3.0 is not of type 'integer'"),
        ({"search": {"methods": {"darts_1st": {"arch_betas": [0.5, 1.5]}}}}, "config key 'search.methods.darts_1st.arch_betas.1'"),
        ({"select": {"methods": {"magnitude": {"exclude_ops": ["skip"]}}}}, "config key 'select.methods.magnitude.exclude_ops.0': 'skip' is not one of"),
        ({"search": {"methods": {"darts.v2": {"algorithm": "darts"}}}}, "config key 'search.methods': 'darts.v2' does not match"),
        ({"retrain": {"per_dataset": {"cifar100": {"drop_path": 0.3}}}}, "config key 'retrain.per_dataset.cifar100.drop_path': unknown key"),
        ({"retrain": {"per_dataset": {"cifar100": {"drop_path_prob": 2}}}}, "config key 'retrain.per_dataset.cifar100.drop_path_prob': 2 is greater"),
        ({"retrain": {"per_dataset": {"mnist": {"epochs": 1}}}}, "config key 'retrain.per_dataset.mnist': no entry 'mnist' under 'data'"),
        ({"retrain": {"gpus": 0}}, "config key 'retrain.gpus': 0 is less than the minimum of 1"),
        ({"transfer": {"dataset": "imagenet1k"}}, "config key 'transfer.dataset': 'imagenet1k' has no entry under 'data'"),
        ({"transfer": {"init_channels": 47}}, "config key 'transfer.init_channels'"),
        ({"transfer": {"enabled": True}}, "config key 'data.imagenet.source.train': file not found: data/raw/imagenet/train"),
        ({"data": {"imagenet": {"source": {"format": "torchvision", "root": "x"}}}}, "config key 'data.imagenet.source.format': the transfer stage reads 'imagefolder'"),
    ],
)
def test_bad_config_names_the_key(tmp_path, overlay, message):
    with pytest.raises(ConfigError) as info:
        load_config(write_overlay(tmp_path, overlay))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_stage_params_hold_only_the_stage_keys():
    config = load_config(BASE)
    search = stage_params(config, "search", method="darts_2nd", seed=1)
    assert search["options"]["order"] == 2 and search["seed"] == 1
    assert "retrain" not in search
    assert search["runtime"]["threads"] == config["runtime"]["threads"]  # CPU numbers depend on it
    select = stage_params(config, "select", method="magnitude", seed=1)
    assert set(select) == {"dataset", "seed", "method", "options", "runtime"}
    assert select["options"]["exclude_ops"] == ["none"]  # the method's default is filled in
    retrain = stage_params(config, "retrain", seed=0)
    launch_and_overrides = ("gpus", "per_dataset")
    assert retrain["settings"] == {k: v for k, v in config["retrain"].items() if k not in launch_and_overrides}
    # Params given directly to a CLI are validated the same way.
    assert validate_stage_params("search", search)["options"]["order"] == 2
    search["settings"]["batch_size"] = 0
    with pytest.raises(ConfigError, match="params.settings.batch_size"):
        validate_stage_params("search", search)


@pytest.mark.slow
def test_check_config_cli(tmp_path):
    good = subprocess.run(
        [sys.executable, "-m", "pipeline", "check-config", *sum((["--config", str(p)] for p in BASE), [])],
        capture_output=True, text=True,
    )
    assert good.returncode == 0, good.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "pipeline", "check-config", *sum((["--config", str(p)] for p in write_overlay(tmp_path, {"seeds": "0"})), [])],
        capture_output=True, text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "config key 'seeds'" in bad.stderr


def test_a_method_can_search_its_own_space_and_scale(tmp_path):
    overlay = {"search": {"methods": {"darts_nb201": {"algorithm": "darts", "settings": {"space": "nb201", "layers": 17}}}}}
    config = load_config(write_overlay(tmp_path, overlay))
    nb201 = stage_params(config, "search", method="darts_nb201", seed=0)
    darts = stage_params(config, "search", method="darts_1st", seed=0)
    assert (nb201["settings"]["space"], nb201["settings"]["layers"]) == ("nb201", 17)
    assert nb201["settings"]["epochs"] == darts["settings"]["epochs"]  # the rest comes from search.settings
    assert darts["settings"]["space"] == "darts" and "settings" not in nb201["options"]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"space": "nb202"}, "config key 'search.methods.m.settings.space': unknown search space 'nb202'; known: "),
        ({"layers": "eight"}, "search.methods.m.settings.layers"),
    ],
)
def test_bad_method_settings_name_the_key(tmp_path, settings, message):
    overlay = {"search": {"methods": {"m": {"algorithm": "darts", "settings": settings}}}}
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(write_overlay(tmp_path, overlay))


def test_selections_can_differ_per_search_method(tmp_path):
    from pipeline.config import selections_for

    overlay = {"select": {"methods": {"magnitude_noskip": {"algorithm": "magnitude", "exclude_ops": ["skip_connect"]}},
                          "run_for": {"darts_2nd": ["magnitude", "magnitude_noskip"]}}}
    config = load_config(write_overlay(tmp_path, overlay))
    assert selections_for(config, "sdarts_rs") == ["magnitude"]
    assert selections_for(config, "darts_2nd") == ["magnitude", "magnitude_noskip"]
    overlay["select"]["run_for"] = {"darts_3rd": ["magnitude"]}
    with pytest.raises(ConfigError, match=r"config key 'select\.run_for\.darts_3rd': not a method under 'search\.methods'"):
        load_config(write_overlay(tmp_path, overlay))


def test_datasets_off_the_default_target_need_no_files_until_asked_for():
    config = load_config(BASE)  # data/raw/cifar100, svhn and imagenet are not on this machine
    assert config["data"]["svhn"]["source"]["format"] == "torchvision"
    transfer = stage_params(config, "transfer", seed=1)
    assert transfer["dataset"] == "imagenet" and transfer["seed"] == 1
    assert transfer["source"]["test"] == "data/raw/imagenet/val"
    assert "gpus" not in transfer["settings"] and "seeds" not in transfer["settings"]
    papers = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["transfer"]
    assert (papers["epochs"], papers["layers"], papers["multiply_adds_budget"]) == (250, 14, 600_000_000)
    assert (papers["lr"], papers["lr_batch_size"], papers["warmup_epochs"]) == (0.1, 256, 5)
    assert (papers["weight_decay"], papers["label_smoothing"], papers["auxiliary_weight"]) == (3e-5, 0.1, 0.4)
    with pytest.raises(ConfigError, match="params.source.train"):
        validate_stage_params("transfer", transfer)


def test_transfer_stage_params_are_validated():
    config = load_config(BASE)
    transfer = stage_params(config, "transfer", seed=0)
    transfer["settings"]["gpus"] = 2  # how to launch is not a parameter
    with pytest.raises(ConfigError, match="params.settings.gpus': unknown key"):
        validate_stage_params("transfer", transfer)
