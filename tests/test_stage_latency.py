"""Latency: lookup tables, measurement, the filter stage, its CLI and tables, and the
latency-constrained UNAS search."""

import copy
import json
import statistics
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, RUNTIME, SEARCH_SETTINGS
from pipeline import artifacts
from pipeline.benchmarks import latency as latency_tables
from pipeline.benchmarks.latency import LatencyError, ProxylessLatency
from pipeline.config import ConfigError, load_config, method_options, stage_params
from pipeline.search import METHODS
from pipeline.spaces import get_space
from pipeline.stages import latency

BASE = [REPO / "config" / "config.yaml", REPO / "config" / "demo.yaml"]
PIXEL1 = yaml.safe_load((resources.files("pipeline") / "benchmarks" / "pixel1_mobile_lut.yaml").read_text())

# The 21 searchable layers of the mobile space at 224x224 (MobileNetV2 widths), written
# out by hand: (input side, in channels, out channels, stride, identity shortcut).
MOBILE_LAYERS = (
    [(112, 16, 24, 2, 0)] + [(56, 24, 24, 1, 1)] * 3
    + [(56, 24, 40, 2, 0)] + [(28, 40, 40, 1, 1)] * 3
    + [(28, 40, 80, 2, 0)] + [(14, 80, 80, 1, 1)] * 3
    + [(14, 80, 96, 1, 0)] + [(14, 96, 96, 1, 1)] * 3
    + [(14, 96, 192, 2, 0)] + [(7, 192, 192, 1, 1)] * 3
    + [(7, 192, 320, 1, 0)]
)  # fmt: skip
FIXED_ROWS = [
    "Conv-input:224x224x3-output:112x112x32",
    "expanded_conv-input:112x112x32-output:112x112x16-expand:1-kernel:3-stride:1-idskip:0",
    "Conv_1-input:7x7x320-output:7x7x1280",
    "Logits-input:7x7x1280-output:1000",
]
HAND_BUILT = (
    "mbconv3_k5 skip_connect mbconv6_k3 skip_connect mbconv3_k3 mbconv3_k7 skip_connect skip_connect "
    "mbconv6_k7 mbconv3_k3 mbconv3_k3 skip_connect mbconv6_k5 mbconv3_k3 skip_connect mbconv6_k3 "
    "mbconv6_k5 mbconv3_k7 mbconv6_k7 skip_connect mbconv6_k7"
).split()
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)
MEASURE = {
    "batch_sizes": [1, 2], "setting": "cifar", "input_size": None, "channels": None, "layers": None,
    "device": None, "threads": 1, "warmup": 1, "repeats": 3,
}  # fmt: skip


def hand_key(size, c_in, c_out, stride, idskip, op):
    expand, kernel = op.removeprefix("mbconv").split("_k")
    return (
        f"expanded_conv-input:{size}x{size}x{c_in}-output:{size // stride}x{size // stride}x{c_out}"
        f"-expand:{expand}-kernel:{kernel}-stride:{stride}-idskip:{idskip}"
    )


# ---------------------------------------------------------------- lookup tables


def test_lookup_of_a_hand_built_proxyless_architecture_is_the_sum_of_its_rows():
    space = get_space("proxyless_mobile")
    layer_keys = [hand_key(*layer, op) for layer, op in zip(MOBILE_LAYERS, HAND_BUILT) if op != "skip_connect"]
    expected_keys = FIXED_ROWS[:2] + layer_keys + FIXED_ROWS[2:]
    result = latency_tables.lookup_latency(space, space.from_text(" ".join(HAND_BUILT)), {})
    assert [row["key"] for row in result["rows"]] == expected_keys
    assert result["latency_ms"] == pytest.approx(sum(PIXEL1[key]["mean"] for key in expected_keys), rel=1e-12)
    assert 40 < result["latency_ms"] < 150  # milliseconds on a Pixel 1


def test_every_layer_choice_of_the_mobile_space_has_a_row_of_the_pixel1_table():
    model = ProxylessLatency(get_space("proxyless_mobile"), latency_tables.pixel1_table())
    used = set(model.fixed_keys) | {key for keys in model.layer_keys for key in keys if key is not None}
    # The table also times the first block with kernels 5 and 7; the space fixes it at 3.
    assert set(PIXEL1) - used == {FIXED_ROWS[1].replace("kernel:3", f"kernel:{k}") for k in (5, 7)}
    low, high = model.bounds_ms()
    assert model.fixed_ms < low < model.network_ms(["mbconv3_k3"] * 21) < model.network_ms(["mbconv6_k7"] * 21) == pytest.approx(high)


def test_unknown_layer_key_is_an_error_naming_the_key(tmp_path):
    missing = hand_key(*MOBILE_LAYERS[4], "mbconv6_k5")
    trimmed = {key: row for key, row in PIXEL1.items() if key != missing}
    (tmp_path / "lut.yaml").write_text(yaml.safe_dump(trimmed))
    table = latency_tables.load_layer_table(tmp_path / "lut.yaml")
    with pytest.raises(LatencyError, match=f"no row for layer key '{missing}'"):
        ProxylessLatency(get_space("proxyless_mobile"), table)
    with pytest.raises(LatencyError, match="no row for layer key 'expanded_conv-input:9x9x9'"):
        latency_tables.pixel1_table().ms("expanded_conv-input:9x9x9")


def test_nb201_lookup_is_the_benchmark_row_for_the_device():
    space = get_space("nb201")
    # Benchmark index 0 in the HELP latency table (source values, 6 significant digits).
    arch = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    cells = space.from_text(arch)
    pixel3 = latency_tables.lookup_latency(space, cells, {"nb201_device": "pixel3"})
    assert pixel3["latency_ms"] == pytest.approx(3.60585) and pixel3["nb201_index"] == 0
    assert latency_tables.lookup_latency(space, cells, {"nb201_device": "1080ti_1"})["latency_ms"] == pytest.approx(10.7544)
    table = latency_tables.nb201_latency_table()
    assert len(table) == 15625 and list(table["nb201_index"]) == list(range(15625))
    assert [c for c in table.columns if c not in ("nb201_index", "arch_str")] == list(latency_tables.NB201_DEVICES)


def test_a_space_without_a_table_must_be_measured():
    with pytest.raises(LatencyError, match="no lookup table for space 'darts'"):
        latency_tables.lookup_latency(get_space("darts"), get_space("darts").from_text(DARTS_V2), {})


# ---------------------------------------------------------------- measured latency


def test_measured_latency_is_a_positive_median_with_the_device_recorded():
    model = get_space("darts").build_network(get_space("darts").from_text(DARTS_V2), 4, 3, 10, auxiliary=False)
    results = latency.measure_model(model, (3, 16, 16), [1, 3], torch.device("cpu"), threads=1, warmup=1, repeats=5)
    assert [r["batch_size"] for r in results] == [1, 3]
    for result in results:
        assert len(result["times_ms"]) == 5 and all(t > 0 for t in result["times_ms"])
        assert result["median_ms"] == pytest.approx(statistics.median(result["times_ms"]))
    detail = latency.measure_genotype(
        get_space("darts"), get_space("darts").from_text(DARTS_V2), {**MEASURE, "input_size": 16},
        {"init_channels": 4, "layers": 3}, RUNTIME, num_classes=10, image_size=32,
    )  # fmt: skip
    assert detail["device"] == "cpu" and detail["device_name"] and detail["input_shape"] == [3, 16, 16]
    assert detail["latency_ms"] == detail["per_batch"][0]["median_ms"] > 0 and detail["batch_size"] == 1


# ---------------------------------------------------------------- the filter


def latency_record(genotype_file, ms, seed=0, dataset="cifar10"):
    return {
        "dataset": dataset, "space": "darts", "genotype_file": genotype_file, "genotype_sha256": f"sha-{genotype_file}",
        "search_method": "darts_1st", "selection_method": "magnitude", "seed": seed, "method": "lookup",
        "source": "lookup test", "latency_ms": ms, "detail": {}, "provenance": {},
    }  # fmt: skip


def test_filter_keeps_and_drops_at_the_boundary(tmp_path):
    paths = []
    for name, ms in (("under", 9.999), ("equal", 10.0), ("over", 10.001)):
        paths.append(tmp_path / f"{name}.json")
        artifacts.write_latency(paths[-1], latency_record(name, ms))
    summary = latency.run_latency_filter({"dataset": "cifar10", "target_ms": 10.0}, paths, tmp_path / "filter.json")
    assert summary["kept"] == ["under", "equal"] and summary["dropped"] == ["over"]
    assert artifacts.read_latency_filter(tmp_path / "filter.json")["results"][1]["passed"] is True
    with pytest.raises(artifacts.ArtifactError, match="dataset 'cifar10', expected 'svhn'"):
        latency.run_latency_filter({"dataset": "svhn", "target_ms": 10.0}, paths, tmp_path / "f2.json")


def test_latency_artifacts_are_validated(tmp_path):
    record = latency_record("g", 1.0)
    with pytest.raises(artifacts.ArtifactError, match="field 'latency_ms' must be a finite, non-negative number"):
        artifacts.write_latency(tmp_path / "a.json", {**record, "latency_ms": float("nan")})
    with pytest.raises(artifacts.ArtifactError, match="field 'seed' has type bool"):
        artifacts.write_latency(tmp_path / "a.json", {**record, "seed": True})
    assert not (tmp_path / "a.json").exists()
    (tmp_path / "b.json").write_text(json.dumps({"format": "pipeline.stages.latency", "version": 1}))
    with pytest.raises(artifacts.ArtifactError, match="b.json: field 'dataset' is missing"):
        artifacts.read_latency(tmp_path / "b.json")


# ---------------------------------------------------------------- stage, CLI, tables


def write_genotype(path, space_name, text, seed=0):
    space = get_space(space_name)
    provenance = {"search_method": "darts_1st", "selection_method": "magnitude", "seed": seed,
                  "search_seconds": 60.0, "select_seconds": 1.0, "search_device": "cpu"}  # fmt: skip
    artifacts.write_genotype(path, {"space": space_name, "cells": space.from_text(text)}, provenance)
    return path


def retrain_metrics(path, genotype, seed, error):
    epochs = {k: np.zeros(1) for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "wall_time")}
    summary = {
        "test_acc": 100 - error, "test_error": error, "params_m": 1.0, "dataset": "cifar10", "space": "darts",
        "search_method": "darts_1st", "selection_method": "magnitude", "seed": seed, "search_seconds": 60.0,
        "select_seconds": 1.0, "search_device": "cpu", "genotype_sha256": artifacts.sha256_file(genotype),
    }  # fmt: skip
    artifacts.write_metrics(path, artifacts.Metrics("retrain", epochs, summary, {}))
    return str(path)


def test_latency_cli_end_to_end_measure_lookup_filter_and_table(tmp_path, tiny_data):
    from pipeline.cli import main

    measured = write_genotype(tmp_path / "g0.json", "darts", DARTS_V2, seed=0)
    looked_up = write_genotype(tmp_path / "g1.json", "darts", DARTS_V2.replace("'dil_conv_3x3', 2", "'sep_conv_5x5', 2"), seed=1)
    mobile = write_genotype(tmp_path / "g2.json", "proxyless_mobile", " ".join(["mbconv3_k3"] * 21))
    measure = {"dataset": "cifar10", "seed": 0, "method": "measure", "measure": MEASURE,
               "retrain": {"init_channels": 4, "layers": 3}, "runtime": RUNTIME}  # fmt: skip
    assert main(["latency", "--params", json.dumps(measure), "--genotype", str(measured), "--data", str(tiny_data), "--out", str(tmp_path / "l0.json")]) == 0
    record = artifacts.read_latency(tmp_path / "l0.json")
    assert record["method"] == "measure" and record["latency_ms"] > 0 and record["detail"]["input_shape"] == [3, 32, 32]
    assert record["genotype_sha256"] == artifacts.sha256_file(measured) and record["source"].startswith("measure ")
    assert [b["batch_size"] for b in record["detail"]["per_batch"]] == [1, 2]
    # A second measured architecture, given a latency just over the target by hand.
    assert main(["latency", "--params", json.dumps({**measure, "seed": 1}), "--genotype", str(looked_up), "--data", str(tiny_data), "--out", str(tmp_path / "l1.json")]) == 0
    lookup = {"dataset": "cifar10", "seed": 0, "method": "lookup", "lookup": {"nb201_device": "pixel3"}}
    assert main(["latency", "--params", json.dumps(lookup), "--genotype", str(mobile), "--out", str(tmp_path / "l2.json")]) == 0
    assert artifacts.read_latency(tmp_path / "l2.json")["latency_ms"] == pytest.approx(76.0481, abs=1e-4)

    target = record["latency_ms"]  # the first passes (equal), the lookup one (76 ms) is dropped
    slower = artifacts.read_latency(tmp_path / "l1.json")
    artifacts.write_latency(tmp_path / "l1.json", {**slower, "latency_ms": target + 1.0})
    files = [str(tmp_path / f"l{i}.json") for i in range(3)]
    assert main(["latency-filter", "--params", json.dumps({"dataset": "cifar10", "target_ms": target}), "--out", str(tmp_path / "f.json"), *files]) == 0
    summary = artifacts.read_latency_filter(tmp_path / "f.json")
    assert summary["kept"] == [str(measured)] and summary["dropped"] == [str(looked_up), str(mobile)]

    metrics = [retrain_metrics(tmp_path / "m0.h5", measured, 0, 3.0), retrain_metrics(tmp_path / "m1.h5", looked_up, 1, 4.0)]
    assert main(["tables", "--params", '{"dataset": "cifar10"}', "--latency", str(tmp_path / "f.json"), "--out", str(tmp_path / "t.csv"), *metrics]) == 0
    table = artifacts.read_table(tmp_path / "t.csv")
    assert list(table.columns) == list(artifacts.TABLE_COLUMNS) + list(artifacts.LATENCY_COLUMNS)
    row = table.iloc[0]
    assert row["latency_ms"] == pytest.approx(target + 0.5, abs=1e-3) and row["latency_target_ms"] == pytest.approx(target)
    assert row["latency_passed"] == "1/2" and str(row["latency_passed_seeds"]) == "0"
    assert row["test_error_mean"] == pytest.approx(3.5)
    # Without latency results the table keeps exactly its usual columns.
    assert main(["tables", "--params", '{"dataset": "cifar10"}', "--out", str(tmp_path / "t0.csv"), *metrics]) == 0
    assert list(artifacts.read_table(tmp_path / "t0.csv").columns) == list(artifacts.TABLE_COLUMNS)


def test_latency_cli_errors_are_one_line_and_write_nothing(tmp_path):
    mobile = write_genotype(tmp_path / "g.json", "proxyless_mobile", " ".join(["mbconv3_k3"] * 21))
    measure = {"dataset": "cifar10", "seed": 0, "method": "measure", "measure": MEASURE,
               "retrain": {"init_channels": 4, "layers": 21}, "runtime": RUNTIME}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "latency", "--params", json.dumps(measure), "--genotype", str(mobile), "--out", str(tmp_path / "l.json")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "pipeline latency: error: --data: required with latency method 'measure' (classes and image size)"
    ]
    assert not (tmp_path / "l.json").exists()


def test_table_rejects_metrics_without_a_latency_result(tmp_path):
    from pipeline.stages.tables import run_tables

    genotype = write_genotype(tmp_path / "g.json", "darts", DARTS_V2)
    metrics = retrain_metrics(tmp_path / "m.h5", genotype, 0, 3.0)
    artifacts.write_latency_filter(tmp_path / "f.json", {"dataset": "cifar10", "target_ms": 1.0, "results": [], "kept": [], "dropped": [], "provenance": {}})
    with pytest.raises(artifacts.ArtifactError, match="m.h5: the latency results hold no entry for its genotype"):
        run_tables({"dataset": "cifar10"}, [metrics], tmp_path / "t.csv", latency=tmp_path / "f.json")
    assert not (tmp_path / "t.csv").exists()


# ---------------------------------------------------------------- config


def overlay(tmp_path, content):
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(content))
    return [*BASE, path]


@pytest.mark.parametrize(
    "content, message",
    [
        ({"latency": {"target_ms": 0}}, "config key 'latency.target_ms': 0 is less than or equal to the minimum of 0"),
        ({"latency": {"measure": {"batch_sizes": []}}}, "config key 'latency.measure.batch_sizes'"),
        ({"latency": {"lookup": {"nb201_device": "pixel9"}}}, "config key 'latency.lookup.nb201_device': 'pixel9' is not one of"),
        ({"latency": {"method": "lookup"}}, "config key 'latency.method': no lookup table for space 'darts'"),
        ({"search": {"run": ["unas_latency"], "methods": {"unas_latency": {"settings": {"space": "nb201"}}}}}, "config key 'search.methods.unas_latency.settings.space': search method unas_latency needs a space with a per-layer latency table (proxyless_mobile); got 'nb201'"),
        ({"search": {"run": ["plain"], "methods": {"plain": {"algorithm": "unas_latency"}}}}, "config key 'search.settings.space': search method unas_latency needs a space with a per-layer latency table (proxyless_mobile); got 'darts'"),
        ({"search": {"methods": {"unas_latency": {"estimator": "rebar2"}}}}, "config key 'search.methods.unas_latency.estimator'"),
    ],
)
def test_bad_latency_config_names_the_key(tmp_path, content, message):
    with pytest.raises(ConfigError) as info:
        load_config(overlay(tmp_path, content))
    assert message in str(info.value)


def test_the_papers_unas_latency_block_searches_the_mobile_space(tmp_path):
    config = load_config(overlay(tmp_path, {"search": {"run": ["unas_latency"]}}))
    params = stage_params(config, "search", method="unas_latency", seed=0)
    assert params["settings"]["space"] == "proxyless_mobile" and params["settings"]["layers"] == 21
    assert params["options"]["lambda_lat"] == 0.1 and params["options"]["estimator"] == "rebar"
    with pytest.raises(ConfigError, match="config key 'latency.method': no lookup table for space 'darts' \\(search darts_1st"):
        load_config(overlay(tmp_path, {"search": {"run": ["unas_latency", "darts_1st"]}, "latency": {"method": "lookup"}}))


def test_latency_stage_params_hold_only_what_each_job_uses(tmp_path):
    config = load_config(BASE)
    measure = stage_params(config, "latency", seed=1)
    assert set(measure) == {"dataset", "seed", "method", "measure", "retrain", "runtime"}
    assert measure["retrain"] == {"init_channels": 8, "layers": 5} and measure["measure"]["repeats"] == 10
    assert stage_params(config, "latency_filter") == {"dataset": "cifar10", "target_ms": 20.0}
    nb201 = load_config(overlay(tmp_path, {"search": {"run": ["darts_1st"], "settings": {"space": "nb201"}}, "latency": {"method": "lookup", "target_ms": 5.0}}))
    assert stage_params(nb201, "latency", seed=0) == {"dataset": "cifar10", "seed": 0, "method": "lookup", "lookup": {"nb201_device": "pixel3"}}
    # The target is the filter's alone: changing it does not touch the latency jobs.
    assert stage_params(nb201, "latency", seed=0) == stage_params(load_config(overlay(tmp_path, {"search": {"run": ["darts_1st"], "settings": {"space": "nb201"}}, "latency": {"method": "lookup", "target_ms": 9.0}})), "latency", seed=0)


# ---------------------------------------------------------------- UNAS latency search


def make_unas(seed=0, **options):
    torch.manual_seed(seed)
    space = get_space("proxyless_mobile")
    model = space.build_supernet(4, 21, 10)
    block = {"algorithm": "unas_latency", "warmup_epochs": 0, "lat_ramp_epochs": 1, "arch_lr": 0.3, "arch_lr_min": 0.3, "latency_samples": 64, **options}
    settings = {**SEARCH_SETTINGS, "space": "proxyless_mobile", "layers": 21, "init_channels": 4}
    method = METHODS.get("unas_latency")(space, model, method_options(METHODS, block, "test"), settings, torch.device("cpu"), "none")
    w_optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return space, model, method, w_optimizer


def batches(steps, seed=0, size=8):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield tuple((torch.randn(size, 3, 8, 8, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(2))


def search(method, w_optimizer, steps, epoch=0, epochs=1, seed=0):
    method.on_epoch_start(epoch, epochs)
    for batch_w, batch_a in batches(steps, seed):
        method.train_step(batch_w, batch_a, w_optimizer, 0.05)


@pytest.mark.slow
def test_latency_constrained_search_ends_under_the_target_where_the_unconstrained_does_not():
    space, _, method, w_optimizer = make_unas(lambda_lat=0.0)
    low, high = method.latency.bounds_ms()
    target = low + 0.25 * (high - low)
    method.options["target_ms"] = target
    search(method, w_optimizer, steps=14)
    assert not torch.equal(method.alpha, torch.zeros_like(method.alpha))  # the architecture trained
    assert method.argmax_latency_ms() > target

    space, _, method, w_optimizer = make_unas(lambda_lat=1.0, target_ms=target)
    search(method, w_optimizer, steps=14)
    assert method.lambda_lat == 1.0
    ops = space.ops(space.parse(method.eval_weights(), []))
    assert method.latency.network_ms(ops) == pytest.approx(method.argmax_latency_ms()) and method.argmax_latency_ms() <= target
    # Columns past a layer's candidates never get probability; the parameter stays finite.
    mask = space.arch_mask()["layers"]
    assert torch.isfinite(method.alpha).all() and (method.eval_weights()["layers"][~mask] == 0).all()


def test_latency_gradient_matches_the_exact_gradient_when_the_hinge_is_linear():
    # With the target under every latency, E[max(0, lat - t)] = E[lat] - t = sum p . rows - t.
    _, _, method, _ = make_unas(target_ms=1.0, latency_samples=20000)
    with torch.no_grad():
        method.alpha.normal_(0, 1, generator=torch.Generator().manual_seed(1))
    exact = torch.autograd.grad((method.logits().softmax(-1) * method.lat_matrix).sum(), method.alpha)[0]
    surrogate, hinge = method.latency_surrogate()
    estimate = torch.autograd.grad(surrogate, method.alpha)[0]
    assert float(hinge) == pytest.approx(method.expected_latency_ms() - 1.0, rel=0.01)
    assert torch.allclose(estimate, exact, atol=0.15), (estimate - exact).abs().max()
    assert (estimate[~method.mask] == 0).all()


def test_lambda_ramp_warmup_and_arch_lr_schedule():
    _, _, method, _ = make_unas(warmup_epochs=2, lat_ramp_epochs=2, lambda_lat=0.1, arch_lr=1e-3, arch_lr_min=3e-4)
    schedule = []
    for epoch in range(6):
        method.on_epoch_start(epoch, 6)
        schedule.append((method.arch_active, round(method.lambda_lat, 6), round(method.arch_optimizer.param_groups[0]["lr"], 8)))
    assert [s[:2] for s in schedule] == [(False, 0.0), (False, 0.0), (True, 0.05), (True, 0.1), (True, 0.1), (True, 0.1)]
    assert schedule[2][2] == 1e-3 and schedule[4][2] == pytest.approx(6.5e-4) and schedule[5][2] < schedule[4][2]


def test_alpha_is_frozen_during_warmup():
    _, model, method, w_optimizer = make_unas(warmup_epochs=1)
    before = [p.clone() for p in model.parameters()]
    search(method, w_optimizer, steps=2, epoch=0, epochs=2)
    assert torch.equal(method.alpha, torch.zeros_like(method.alpha))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the weights train


def test_resume_of_the_method_is_exact():
    space, model, method, w_optimizer = make_unas(lambda_lat=1.0, target_ms=60.0, estimator="reinforce")
    search(method, w_optimizer, steps=2, epoch=0, epochs=2, seed=1)
    saved = copy.deepcopy({"method": method.state_dict(), "model": model.state_dict(), "optimizer": w_optimizer.state_dict(), "rng": torch.get_rng_state()})
    assert saved["method"]["baseline_ready"] and saved["method"]["baseline"] != 0.0
    search(method, w_optimizer, steps=2, epoch=1, epochs=2, seed=2)

    _, model2, method2, w_optimizer2 = make_unas(seed=5, lambda_lat=1.0, target_ms=60.0, estimator="reinforce")
    model2.load_state_dict(saved["model"])
    w_optimizer2.load_state_dict(saved["optimizer"])
    method2.load_state_dict(saved["method"])
    torch.set_rng_state(saved["rng"])
    search(method2, w_optimizer2, steps=2, epoch=1, epochs=2, seed=2)
    assert torch.equal(method.alpha, method2.alpha)
    assert method.baseline == method2.baseline
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_unas_latency_runs_in_the_search_loop_and_logs_latency(tiny_data, tmp_path):
    from conftest import search_params
    from pipeline.search.run import run_search

    options = method_options(METHODS, {"algorithm": "unas_latency", "warmup_epochs": 1, "arch_lr": 0.1, "target_ms": 60.0, "latency_samples": 16}, "test")
    params = search_params(options=options, settings={"space": "proxyless_mobile", "epochs": 2, "batch_size": 20, "init_channels": 4, "layers": 21, "subset_per_class": 4})
    params["options"] = options
    checkpoint = artifacts.load_checkpoint(run_search(params, tiny_data, tmp_path, threads=1), "supernet")
    metrics = artifacts.read_metrics(tmp_path / "metrics.h5")
    assert metrics.epochs["lambda_lat"].tolist() == [0.0, pytest.approx(0.1)]
    alpha = metrics.epochs["alpha_layers"]
    assert (alpha[0] == 0).all() and not (alpha[1] == 0).all()  # frozen in the warm-up epoch only
    assert metrics.epochs["latency_argmax_ms"].shape == (2,) and (metrics.epochs["latency_expected_ms"] > 29).all()
    assert torch.equal(checkpoint["method"]["alpha"], torch.as_tensor(alpha[1]))


def test_skip_dropout_acts_on_the_skip_choice_in_training_only():
    space = get_space("proxyless_mobile")
    model = space.build_supernet(4, 21, 10)
    x = torch.randn(4, 3, 8, 8)
    ops = ["mbconv3_k3"] + ["skip_connect"] * 3 + ["mbconv3_k3"] * 17
    skip = torch.zeros(21, 7)
    skip[range(21), [space.primitives.index(op) for op in ops]] = 1.0
    no_skip = torch.zeros(21, 7)
    no_skip[:, 0] = 1.0
    for weights, changes in ((skip, True), (no_skip, False)):
        model.train()
        torch.manual_seed(0)
        plain = model(x, {"layers": weights})
        model.skip_dropout = 0.5
        torch.manual_seed(0)
        dropped = model(x, {"layers": weights})
        assert torch.equal(plain, dropped) != changes
        model.eval()
        assert torch.equal(model(x, {"layers": weights}), model(x, {"layers": weights}))
        model.skip_dropout = 0.0
    _, model, method, w_optimizer = make_unas()
    search(method, w_optimizer, steps=1)
    assert model.skip_dropout == 0.0  # only inside the search steps
