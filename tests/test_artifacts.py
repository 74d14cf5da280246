import json
import re

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


def decision_record():
    from pipeline.select.base import DecisionLog

    log = DecisionLog()
    log.add(step=0, cell_type="normal", kind="op", node=2, input=0, edge=0, criterion="acc", action="keep",
            choice="sep_conv_3x3", candidates=[("skip_connect", 0, 61.5, 0.6), ("sep_conv_3x3", 0, 40.25, 0.4)])
    log.add(step=1, cell_type="normal", kind="edge", node=3, input=1, edge=3, criterion="acc", action="remove",
            choice="skip_connect", candidates=[("sep_conv_3x3", 0, 50.0, 0.5), ("skip_connect", 1, 58.0, 0.5)])
    log.after_step(0, 55.0, 1.25)
    log.summary["eval_bn"] = "batch"
    return log.to_artifact("pt", "pt", artifacts.provenance({"a": 1}, seed=0))


def test_decision_record_round_trip_and_validation(tmp_path):
    import h5py

    path = tmp_path / "decisions.h5"
    artifacts.write_decisions(path, decision_record())
    record = artifacts.read_decisions(path)
    assert record.method == "pt" and record.summary == {"eval_bn": "batch"} and record.provenance["seed"] == 0
    assert list(record.decisions["choice"]) == ["sep_conv_3x3", "skip_connect"]
    assert record.decisions["valid_acc_after"][0] == 55.0 and np.isnan(record.decisions["valid_acc_after"][1])
    assert record.candidates["decision"].tolist() == [0, 0, 1, 1] and record.candidates["score"][1] == 40.25
    candidates, decisions = pd.DataFrame(record.candidates), pd.DataFrame(record.decisions)
    table = candidates.merge(decisions, left_on="decision", right_index=True, suffixes=("", "_decision"))
    assert len(table) == 4 and table["step"].tolist() == [0, 0, 1, 1]

    with h5py.File(path, "a") as handle:
        del handle["candidates/score"]
    with pytest.raises(ArtifactError, match=r"decisions\.h5: column 'candidates/score' is missing"):
        artifacts.read_decisions(path)
    bad = decision_record()
    bad.candidates["decision"] = [0, 0, 1, 2]
    with pytest.raises(ArtifactError, match="points past the decisions"):
        artifacts.write_decisions(tmp_path / "bad.h5", bad)
    assert not (tmp_path / "bad.h5").exists()
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    with pytest.raises(ArtifactError, match=r"x\.h5: not a readable HDF5 file"):
        artifacts.read_decisions(tmp_path / "x.h5")


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("kind", ["op", "topology"], "column 'decisions/kind' holds 'topology', not one of"),
        ("choice", ["sep_conv_3x3", "max_pool_3x3"], "decision 1: its choice 'max_pool_3x3' (input 1) is none of its candidates"),
        ("input", [0, 0], "decision 1: its choice 'skip_connect' (input 0) is none of its candidates"),
    ],
)
def test_decision_record_kinds_and_choices_follow_the_contract(tmp_path, column, value, message):
    """A decision's kind is one of DECISION_KINDS and its choice one of its own candidates
    (name and input), checked on write and on read."""
    import h5py

    bad = decision_record()
    bad.decisions[column] = value
    with pytest.raises(ArtifactError, match=re.escape(message)):
        artifacts.write_decisions(tmp_path / "bad.h5", bad)
    assert not (tmp_path / "bad.h5").exists()
    path = tmp_path / "decisions.h5"
    artifacts.write_decisions(path, decision_record())
    with h5py.File(path, "a") as handle:
        del handle[f"decisions/{column}"]
        handle["decisions"].create_dataset(column, data=value, dtype=h5py.string_dtype() if column != "input" else None)
    with pytest.raises(ArtifactError, match=re.escape(f"decisions.h5: {message}")):
        artifacts.read_decisions(path)
