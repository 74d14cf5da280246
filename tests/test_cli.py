"""The stage CLIs: one-line errors with exit 2 and no output on bad input."""

import json
import subprocess
import sys

from conftest import REPO, retrain_params

BASE = ["--config", str(REPO / "config" / "config.yaml"), "--config", str(REPO / "config" / "demo.yaml")]


def pipeline(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_retrain_cli_missing_genotype(tmp_path, tiny_data):
    result = pipeline("retrain", "--params", json.dumps(retrain_params()), "--genotype", str(tmp_path / "g.json"),
                      "--data", str(tiny_data), "--out-dir", str(tmp_path / "out"))
    assert_one_line_error(result, "g.json: genotype file not found")
    assert not (tmp_path / "out").exists()


def test_retrain_cli_with_config_needs_a_seed(tmp_path, tiny_data):
    result = pipeline("retrain", *BASE, "--genotype", "g.json", "--data", str(tiny_data), "--out-dir", str(tmp_path / "out"))
    assert_one_line_error(result, "--seed: required with --config")


def test_search_cli_unknown_method_lists_the_known_ones(tmp_path, tiny_data):
    result = pipeline("search", *BASE, "--method", "darts_3rd", "--seed", "0", "--data", str(tiny_data), "--out-dir", str(tmp_path))
    assert_one_line_error(result, "--method: 'darts_3rd'", "darts_1st", "darts_2nd")


def test_tables_cli_rejects_a_missing_or_foreign_file(tmp_path):
    out = tmp_path / "t.csv"
    missing = pipeline("tables", "--params", '{"dataset": "cifar10"}', "--out", str(out), str(tmp_path / "m.h5"))
    assert_one_line_error(missing, "m.h5: metrics file not found")
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    foreign = pipeline("tables", "--params", '{"dataset": "cifar10"}', "--out", str(out), str(tmp_path / "x.h5"))
    assert_one_line_error(foreign, "x.h5: not a readable HDF5 file")
    assert not out.exists()


def test_params_must_be_json():
    result = pipeline("tables", "--params", "{dataset: cifar10", "--out", "t.csv", "m.h5")
    assert_one_line_error(result, "--params: not valid JSON")
