"""The stage CLIs: one-line errors with exit 2 and no output on bad input, caught before any work."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, retrain_params, search_params

BASE = ["--config", str(REPO / "config" / "config.yaml"), "--config", str(REPO / "config" / "demo.yaml")]


def pipeline(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.slow
def test_retrain_cli_missing_genotype(tmp_path, tiny_data):
    result = pipeline("retrain", "--params", json.dumps(retrain_params()), "--genotype", str(tmp_path / "g.json"),
                      "--data", str(tiny_data), "--out-dir", str(tmp_path / "out"))
    assert_one_line_error(result, "g.json: genotype file not found")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_retrain_cli_with_config_needs_a_seed(tmp_path, tiny_data):
    result = pipeline("retrain", *BASE, "--genotype", "g.json", "--data", str(tiny_data), "--out-dir", str(tmp_path / "out"))
    assert_one_line_error(result, "--seed: required with --config")


def test_search_cli_unknown_method_lists_the_known_ones(tmp_path, tiny_data):
    result = pipeline("search", *BASE, "--method", "darts_3rd", "--seed", "0", "--data", str(tiny_data), "--out-dir", str(tmp_path))
    assert_one_line_error(result, "--method: 'darts_3rd'", "darts_1st", "darts_2nd")


@pytest.mark.slow
def test_tables_cli_rejects_a_missing_or_foreign_file(tmp_path):
    out = tmp_path / "t.csv"
    missing = pipeline("tables", "--params", '{"dataset": "cifar10"}', "--out", str(out), str(tmp_path / "m.h5"))
    assert_one_line_error(missing, "m.h5: metrics file not found")
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    foreign = pipeline("tables", "--params", '{"dataset": "cifar10"}', "--out", str(out), str(tmp_path / "x.h5"))
    assert_one_line_error(foreign, "x.h5: not a readable HDF5 file")
    assert not out.exists()


@pytest.mark.slow
def test_params_must_be_json():
    result = pipeline("tables", "--params", "{dataset: cifar10", "--out", "t.csv", "m.h5")
    assert_one_line_error(result, "--params: not valid JSON")


# ---------------------------------------------------------------- outputs that cannot be written


@contextlib.contextmanager
def unwritable_directory(path):
    """A folder nobody may create files in: mode 0555, or for root (who ignores modes) the
    immutable attribute."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root and the file system has no immutable attribute (chattr +i)")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def search_args(data, out_option, out):
    return ("search", "--params", json.dumps(search_params(settings={"epochs": 1})), "--data", str(data), out_option, str(out), "--threads", "1")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["under_a_file", "proc", "no_write_permission"])
def test_an_output_that_cannot_be_written_fails_in_one_line_before_any_epoch(case, tiny_data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with contextlib.ExitStack() as stack:
        out, culprit = {
            "under_a_file": (blocker / "search", f"{blocker} is not a directory"),
            "proc": (Path("/proc/search_out"), "cannot write into /proc"),
            "no_write_permission": (None, "cannot write into"),
        }[case]
        if out is None:
            out = stack.enter_context(unwritable_directory(tmp_path / "locked")) / "search"
        result = pipeline(*search_args(tiny_data, "--out-dir", out))
        assert_one_line_error(result, f"--out-dir: {out}: ", culprit)
        assert "search epoch" not in result.stderr  # refused before any work
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "locked"][: 1 + (case == "no_write_permission")]


@pytest.mark.slow
def test_output_files_of_select_retrain_and_tables_are_probed_before_work(tiny_data, tmp_path):
    params = json.dumps(retrain_params())
    retrain = pipeline("retrain", "--params", params, "--genotype", "missing.json", "--data", str(tiny_data),
                       "--out-dir", "/proc/retrain", "--threads", "1")
    assert_one_line_error(retrain, "--out-dir: /proc/retrain: cannot write into /proc")  # before the missing genotype
    select = pipeline("select", "--params", "{}", "--supernet", "s.pt", "--data", "d.pt", "--out", "/proc/genotype.json")
    assert_one_line_error(select, "--out: /proc/genotype.json: cannot write into /proc")
    tables = pipeline("tables", "--params", '{"dataset": "cifar10"}', "--out", str(tmp_path), str(tmp_path / "m.h5"))
    assert_one_line_error(tables, f"--out: {tmp_path}: is a directory")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- sizes that cannot work


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "-1"])
def test_threads_below_one_are_rejected(value, tiny_data, tmp_path):
    result = pipeline(*search_args(tiny_data, "--out-dir", tmp_path / "out")[:-1], value)
    assert_one_line_error(result, f"--threads: must be at least 1, got {value}")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_runtime_threads_below_one_are_rejected_at_config_check(tmp_path):
    overlay = tmp_path / "zero.yaml"
    overlay.write_text("runtime: {threads: 0}\n")
    result = pipeline("check-config", *BASE, "--config", str(overlay))
    assert_one_line_error(result, "config key 'runtime.threads'")


@pytest.mark.slow
def test_a_batch_larger_than_its_split_is_a_config_error_before_any_work(tiny_data, tmp_path):
    # tiny_data: 120 train images, 60 per half of the search split
    search = pipeline("search", "--params", json.dumps(search_params(settings={"batch_size": 61})), "--data", str(tiny_data),
                      "--out-dir", str(tmp_path / "search"), "--threads", "1")
    assert_one_line_error(search, "config key 'search.settings.batch_size': 61 is larger than the 60 images", str(tiny_data))
    genotype = tmp_path / "genotype.json"
    retrain = pipeline("retrain", "--params", json.dumps(retrain_params(batch_size=121)), "--genotype", str(genotype),
                       "--data", str(tiny_data), "--out-dir", str(tmp_path / "retrain"), "--threads", "1")
    assert retrain.returncode == 2  # the genotype is read first; with one it is the batch size:
    from test_training_preemption import write_genotype

    write_genotype(genotype)
    retrain = pipeline("retrain", "--params", json.dumps(retrain_params(batch_size=121)), "--genotype", str(genotype),
                       "--data", str(tiny_data), "--out-dir", str(tmp_path / "retrain"), "--threads", "1")
    assert_one_line_error(retrain, "config key 'retrain.batch_size': 121 is larger than the 120 images")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genotype.json"]


# The sizes the checks below are about, whatever the demo's scale: 32 images of each of
# CIFAR-10's 10 classes, halves of 160 (bilevel methods use both); unas' own train_portion
# 0.9 leaves 3 of each class, 30 images, for alpha.
SIZES = {
    "search": {
        "run": ["darts_1st", "unas"],
        "settings": {"subset_per_class": 32, "train_portion": 0.5, "batch_size": 32},
        "methods": {"unas": {"settings": {"train_portion": 0.9, "batch_size": 16}}},
    },
    "select": {"run": ["magnitude"], "run_for": {"unas": ["unas"], "snas": ["snas"], "fix_alpha": ["pt"]}},
    "retrain": {"batch_size": 64},
}


def sized(overlay: dict) -> dict:
    from pipeline.config import deep_merge

    return deep_merge(SIZES, overlay)


def check_config_with(tmp_path, overlay: dict):
    path = tmp_path / "overlay.yaml"
    path.write_text(json.dumps(sized(overlay)))  # JSON is YAML
    return pipeline("check-config", *BASE, "--config", str(path))


@pytest.mark.slow
@pytest.mark.parametrize("overlay, message", [
    ({"search": {"settings": {"batch_size": 161}}},
     "config key 'search.settings.batch_size': 161 is larger than the at most 160 images of the weight half of search darts_1st"),
    ({"search": {"methods": {"unas": {"settings": {"batch_size": 31}}}}},
     "config key 'search.methods.unas.settings.batch_size': 31 is larger than the at most 30 images of the alpha half of search unas"),
    ({"search": {"run": ["darts_1st"]}, "data": {"cifar10": {"subset": {"train_per_class": 12}}}, "retrain": {"batch_size": 121}},
     "config key 'retrain.batch_size': 121 is larger than the 120 images of cifar10's train split"),
])
def test_a_batch_larger_than_its_split_is_refused_at_config_check(overlay, message, tmp_path):
    assert_one_line_error(check_config_with(tmp_path, overlay), message)


def test_config_check_sizes_batches_by_what_each_method_uses(tmp_path):
    from pipeline.config import ConfigError, load_config

    def load(overlay):
        path = tmp_path / "overlay.yaml"
        path.write_text(json.dumps(sized(overlay)))
        return load_config([REPO / "config" / "config.yaml", REPO / "config" / "demo.yaml", path])

    load({"search": {"settings": {"batch_size": 160}, "methods": {"unas": {"settings": {"batch_size": 30}}}}})  # fit exactly
    # a single-level method trains on the weight half only: 290 images here, alpha's 30 unused
    load({"search": {"run": ["fix_alpha", "snas"], "settings": {"train_portion": 0.9, "batch_size": 64}}})
    with pytest.raises(ConfigError, match="64 is larger than the at most 30 images of the alpha half of search darts_1st"):
        load({"search": {"run": ["darts_1st"], "settings": {"train_portion": 0.9, "batch_size": 64}}})
    # torchvision's CIFAR-100: 50,000 images of 100 classes, by the known sizes
    whole = {"search": {"run": ["darts_1st"], "settings": {"subset_per_class": None, "batch_size": 25000}}}
    load(whole)
    with pytest.raises(ConfigError, match=r"'search.settings.batch_size': 25001 is larger than the 25000 images of the weight half of search darts_1st on cifar100 \(100 classes, train_portion 0.5\)"):
        load({"search": {**whole["search"], "settings": {"subset_per_class": None, "batch_size": 25001}}})
    with pytest.raises(ConfigError, match="'retrain.per_dataset.cifar100.batch_size': 50001 is larger than the 50000 images"):
        load({**whole, "retrain": {"per_dataset": {"cifar100": {"batch_size": 50001}}}})


@pytest.mark.parametrize("overlay", [None, *sorted(p.name for p in (REPO / "config").glob("*.yaml") if p.name != "config.yaml")])
def test_the_shipped_configs_pass_the_size_check(overlay):
    from pipeline.config import _check_batch_sizes, load_config, read_yaml

    if overlay is None:  # its data folders are the user's to fill: the size check alone
        _check_batch_sizes(read_yaml(REPO / "config" / "config.yaml"))
    else:
        load_config([REPO / "config" / "config.yaml", REPO / "config" / overlay])


@pytest.mark.parametrize("classes, per_class, subset, portion", [(10, 12, None, 0.5), (10, 500, 32, 0.9), (3, 7, 5, 0.5), (4, 9, 20, 0.3)])
def test_config_sizes_of_the_search_halves_are_those_of_the_search_split(classes, per_class, subset, portion):
    import torch

    from pipeline.config import _search_halves, _TrainSplit
    from pipeline.search.supernet_training import search_split

    settings = {"subset_per_class": subset, "train_portion": portion, "split_seed": 0}
    labels = torch.arange(classes).repeat_interleave(per_class)
    halves = [len(half) for half in search_split(labels, classes, settings)]
    assert _search_halves(_TrainSplit(classes, per_class, classes * per_class, True), settings) == (*halves, True)
    # unequal classes (SVHN): the bounds hold
    sizes = torch.tensor([per_class + 3 * k for k in range(classes)])
    labels = torch.arange(classes).repeat_interleave(sizes)
    halves = [len(half) for half in search_split(labels, classes, settings)]
    bounds = _search_halves(_TrainSplit(classes, None, len(labels), False), settings)
    assert bounds[2] is False and halves[0] <= bounds[0] and halves[1] <= bounds[1], (halves, bounds)


# ---------------------------------------------------------------- version and help


def test_version_and_every_command_has_a_description_and_a_working_example():
    from pipeline import __version__
    from pipeline.cli import build_parser

    result = pipeline("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"pipeline {__version__}"
    top = pipeline("--help").stdout
    assert "``" not in top and "exit" in top.lower()
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        text = sub.format_help()
        assert sub.description and "``" not in text, name
        example = text.split("example:\n", 1)[1].strip()
        assert example.startswith(f"pipeline {name} "), name
        args = parser.parse_args(example.split()[1:])  # the example parses as written
        assert args.command == name


def test_jobs_graph_folds_the_job_graph_into_one_line_per_kind(capsys):
    """`pipeline jobs --graph`: every kind once, with its job count and the kinds it reads from."""
    from pipeline.cli import main
    from pipeline.config import load_config
    from pipeline.planning.jobs import jobs

    configs = [str(REPO / "config/config.yaml"), str(REPO / "config/demo.yaml")]
    assert main(["jobs", "--graph", *sum((["--config", c] for c in configs), [])]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    all_jobs = jobs(load_config(configs))
    producers = {out: job.kind for job in all_jobs for out in job.outs}
    assert set(lines) == {job.kind for job in all_jobs}
    config = load_config(configs)
    searches = len(config["search"]["run"]) * len(config["seeds"])
    assert lines["search"].split("<-")[0].split()[1:] == [str(searches), "jobs"]
    for job in all_jobs:
        reads = [part.strip() for part in lines[job.kind].split("<-")[1].split(",")]
        assert {producers.get(dep, dep) for dep in job.deps} <= set(reads), job.dvc_name
    assert max(len(line) for line in lines.values()) < 100  # readable, unlike `dvc dag`'s wide boxes
