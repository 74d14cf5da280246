import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from pipeline.config import ConfigError, deep_merge, load_config, stage_params, validate_stage_params

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
    assert config["search"]["run"] == ["darts_1st", "darts_2nd"]


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
        ({"dataset": "svhn"}, "config key 'dataset': 'svhn' has no entry"),
        ({"runtime": {"amp": "fp8"}}, "config key 'runtime.amp'"),
        ({"runtime": {"threads": 0}}, "config key 'runtime.threads': 0 is less than the minimum of 1"),
        ({"search": {"settings": {"epochs": 3.0}}}, "config key 'search.settings.epochs': 3.0 is not of type 'integer'"),
        ({"search": {"methods": {"darts_1st": {"arch_betas": [0.5, 1.5]}}}}, "config key 'search.methods.darts_1st.arch_betas.1'"),
        ({"select": {"methods": {"magnitude": {"exclude_ops": ["skip"]}}}}, "config key 'select.methods.magnitude.exclude_ops.0': 'skip' is not one of"),
        ({"search": {"methods": {"darts.v2": {"algorithm": "darts"}}}}, "config key 'search.methods': 'darts.v2' does not match"),
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
    assert "retrain" not in search and "threads" not in search["runtime"]
    select = stage_params(config, "select", method="magnitude", seed=1)
    assert set(select) == {"dataset", "seed", "method", "options", "runtime"}
    assert select["options"]["exclude_ops"] == ["none"]  # the method's default is filled in
    retrain = stage_params(config, "retrain", seed=0)
    assert retrain["settings"] == config["retrain"]
    # Params given directly to a CLI are validated the same way.
    assert validate_stage_params("search", search)["options"]["order"] == 2
    search["settings"]["batch_size"] = 0
    with pytest.raises(ConfigError, match="params.settings.batch_size"):
        validate_stage_params("search", search)


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
    assert selections_for(config, "darts_1st") == ["magnitude"]
    assert selections_for(config, "darts_2nd") == ["magnitude", "magnitude_noskip"]
    overlay["select"]["run_for"] = {"darts_3rd": ["magnitude"]}
    with pytest.raises(ConfigError, match=r"config key 'select\.run_for\.darts_3rd': not a method under 'search\.methods'"):
        load_config(write_overlay(tmp_path, overlay))
