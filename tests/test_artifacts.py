import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import artifacts
from pipeline.artifacts import ArtifactError, Metrics


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    with pytest.raises(RuntimeError):
        with artifacts.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []
    artifacts.write_bytes_atomic(target, b"whole")
    assert target.read_bytes() == b"whole"


def supernet_payload():
    return {
        "epoch": 1,
        "model": {"w": torch.ones(2)},
        "optimizer": {},
        "scheduler": {},
        "method": {"alpha": torch.zeros(3)},
        "arch_weights": {"normal": torch.ones(14, 8) / 8},
        "history": {"valid_acc": [torch.tensor(10.0)]},
        "rng": artifacts.rng_state(),
        "provenance": artifacts.provenance({"a": 1}, seed=3),
    }


def test_checkpoint_round_trip_and_validation(tmp_path):
    path = tmp_path / "c.pt"
    artifacts.save_checkpoint(path, "supernet", supernet_payload())
    loaded = artifacts.load_checkpoint(path, "supernet")
    assert loaded["epoch"] == 1 and loaded["provenance"]["seed"] == 3
    assert loaded["provenance"]["code_version"]
    with pytest.raises(ArtifactError, match="field 'kind' is 'supernet', expected 'retrain'"):
        artifacts.load_checkpoint(path, "retrain")
    with pytest.raises(ArtifactError, match="lacks arch_weights"):
        payload = supernet_payload()
        del payload["arch_weights"]
        artifacts.save_checkpoint(tmp_path / "d.pt", "supernet", payload)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="bad.pt: not a readable checkpoint"):
        artifacts.load_checkpoint(tmp_path / "bad.pt", "supernet")
    with pytest.raises(ArtifactError, match="checkpoint file not found"):
        artifacts.load_checkpoint(tmp_path / "none.pt", "supernet")


def test_rng_state_round_trip():
    state = artifacts.rng_state()
    first = (torch.rand(3), np.random.rand(), __import__("random").random())
    artifacts.set_rng_state(state)
    second = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]


GENOTYPE = {
    "space": "darts",
    "cells": {
        kind: {
            "edges": [{"node": n, "input": i, "op": "sep_conv_3x3"} for n in range(2, 6) for i in (0, 1)],
            "concat": [2, 3, 4, 5],
        }
        for kind in ("normal", "reduce")
    },
}


def test_genotype_round_trip_and_validation(tmp_path):
    path = tmp_path / "g.json"
    artifacts.write_genotype(path, GENOTYPE, {"seed": 0})
    record = artifacts.read_genotype(path)
    assert record["format"] == "pipeline.genotype" and record["version"] == 1
    assert record["cells"] == GENOTYPE["cells"]
    broken = json.loads(path.read_text())
    broken["cells"]["normal"]["edges"][0]["op"] = "conv_9x9"
    path.write_text(json.dumps(broken))
    with pytest.raises(ArtifactError, match=r"g.json: field 'cells.normal.edges\[0\]': op 'conv_9x9'"):
        artifacts.read_genotype(path)
    broken["cells"]["normal"]["edges"][0] = {"node": 2, "input": 4, "op": "sep_conv_3x3"}
    path.write_text(json.dumps(broken))
    with pytest.raises(ArtifactError, match="no edge from node 4 to node 2"):
        artifacts.read_genotype(path)
    broken["cells"]["normal"]["edges"][0] = {"node": 2, "input": 1, "op": "sep_conv_3x3"}  # edge 1 -> 2 again
    path.write_text(json.dumps(broken))
    with pytest.raises(ArtifactError, match="appears twice"):
        artifacts.read_genotype(path)
    path.write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        artifacts.read_genotype(path)


def test_metrics_round_trip_and_validation(tmp_path):
    epochs = {k: np.arange(3.0) for k in ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "wall_time")}
    epochs["alpha_normal"] = np.zeros((3, 14, 8))
    path = tmp_path / "m.h5"
    artifacts.write_metrics(path, Metrics("search", epochs, {"search_seconds": 1.5}, {"seed": 0}))
    metrics = artifacts.read_metrics(path)
    assert metrics.num_epochs == 3 and metrics.summary["search_seconds"] == 1.5
    assert metrics.epochs["alpha_normal"].shape == (3, 14, 8)
    epochs["valid_acc"] = np.arange(2.0)
    with pytest.raises(ArtifactError, match="differ in length"):
        artifacts.write_metrics(path, Metrics("search", epochs, {}, {}))
    del epochs["valid_acc"]
    with pytest.raises(ArtifactError, match="lack the per-epoch series 'valid_acc'"):
        artifacts.write_metrics(path, Metrics("search", epochs, {}, {}))
    assert artifacts.read_metrics(path).num_epochs == 3  # the failed writes left the old file


def test_table_columns_are_enforced(tmp_path):
    with pytest.raises(ArtifactError, match="lacks column 'dataset'"):
        artifacts.write_table(tmp_path / "t.csv", pd.DataFrame({"x": [1]}))
    assert not (tmp_path / "t.csv").exists()
