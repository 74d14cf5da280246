import json
import subprocess
import sys

import pytest
import torch

from conftest import search_params
from pipeline import artifacts
from pipeline.search.run import run_search
from pipeline.select.magnitude import parse_magnitude
from pipeline.spaces import get_space

OPS = get_space("darts").primitives


def weights_with(strong: dict[int, tuple[str, float]]) -> torch.Tensor:
    """Uniform-ish weights with chosen (op, weight) peaks on some edges."""
    w = torch.full((14, 8), 0.01)
    for edge, (op, value) in strong.items():
        w[edge, OPS.index(op)] = value
    return w


def test_magnitude_keeps_top_two_edges_by_strongest_non_none_op():
    space = get_space("darts")
    # Node 2 has edges 0, 1; node 3 has edges 2, 3, 4 (inputs 0, 1, 2).
    normal = weights_with({0: ("none", 0.9), 1: ("sep_conv_3x3", 0.5), 2: ("skip_connect", 0.2), 3: ("none", 0.99), 4: ("dil_conv_5x5", 0.6)})
    normal[0, OPS.index("max_pool_3x3")] = 0.05  # edge 0's best non-none op
    normal[3, OPS.index("avg_pool_3x3")] = 0.03
    cells = parse_magnitude(space, {"normal": normal, "reduce": weights_with({})})
    edges = cells["normal"]["edges"]
    # A node's inputs are listed strongest first, as DARTS' genotype() prints them.
    assert edges[:2] == [{"node": 2, "input": 1, "op": "sep_conv_3x3"}, {"node": 2, "input": 0, "op": "max_pool_3x3"}]
    # 'none' dominates edge 3 but does not count: node 3 keeps inputs 2 and 0.
    assert edges[2:4] == [{"node": 3, "input": 2, "op": "dil_conv_5x5"}, {"node": 3, "input": 0, "op": "skip_connect"}]
    assert len(edges) == 8 and cells["normal"]["concat"] == [2, 3, 4, 5]


def test_exclude_ops_forbids_an_op():
    space = get_space("darts")
    w = weights_with({e: ("skip_connect", 0.9) for e in range(14)})
    cells = parse_magnitude(space, {"normal": w, "reduce": w}, exclude_ops=["none", "skip_connect"])
    assert all(e["op"] != "skip_connect" for e in cells["normal"]["edges"])


@pytest.mark.slow
def test_select_cli_writes_genotype_with_provenance(tiny_data, tmp_path):
    supernet = run_search(search_params(settings={"epochs": 1}), tiny_data, tmp_path / "s", threads=1)
    out = tmp_path / "g" / "genotype.json"
    params = {"dataset": "cifar10", "seed": 0, "method": "magnitude", "options": {"algorithm": "magnitude"},
              "runtime": {"device": "cpu", "amp": "none", "channels_last": False, "threads": 1}}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "select", "--params", json.dumps(params), "--supernet", str(supernet),
         "--data", str(tiny_data), "--out", str(out)], capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    genotype = artifacts.read_genotype(out)
    prov = genotype["provenance"]
    assert prov["supernet_sha256"] == artifacts.sha256_file(supernet)
    assert prov["search_method"] == "darts_1st" and prov["selection_method"] == "magnitude" and prov["seed"] == 0
    assert prov["params"]["options"]["exclude_ops"] == ["none"]
    checkpoint = artifacts.load_checkpoint(supernet, "supernet")
    assert genotype["cells"] == parse_magnitude(get_space("darts"), checkpoint["arch_weights"])
    shown = subprocess.run([sys.executable, "-m", "pipeline", "show-genotype", str(out)], capture_output=True, text=True)
    assert shown.stdout.startswith("Genotype(normal=[")

    missing = subprocess.run(
        [sys.executable, "-m", "pipeline", "select", "--params", json.dumps(params), "--supernet", str(tmp_path / "nope.pt"),
         "--data", str(tiny_data), "--out", str(tmp_path / "x.json")], capture_output=True, text=True,
    )
    assert missing.returncode == 2 and "nope.pt: checkpoint file not found" in missing.stderr
    assert not (tmp_path / "x.json").exists()


def test_magnitude_writes_its_decisions_as_a_record():
    from pipeline.select.base import DecisionLog
    from pipeline.select.magnitude import record_magnitude

    space = get_space("darts")
    normal = weights_with({0: ("sep_conv_3x3", 0.5), 2: ("skip_connect", 0.4), 4: ("dil_conv_5x5", 0.6)})
    weights = {"normal": normal, "reduce": weights_with({})}
    log = DecisionLog()
    cells = parse_magnitude(space, weights)
    record_magnitude(log, space, weights, ["none"], cells)
    ops = [d for d in log.decisions if d["kind"] == "op"]
    removed = [d for d in log.decisions if d["kind"] == "edge"]
    assert len(ops) == 28 and len(removed) == 12  # 14 edges per cell; nodes 3, 4, 5 drop 1 + 2 + 3
    kept = {(kind, e["node"], e["input"]): e["op"] for kind in cells for e in cells[kind]["edges"]}
    for d in ops:
        if (d["cell_type"], d["node"], d["input"]) in kept:
            assert kept[(d["cell_type"], d["node"], d["input"])] == d["choice"]
    assert not {(d["cell_type"], d["node"], d["input"]) for d in removed} & set(kept)
    first = [c for c in log.candidates if c["decision"] == 0]
    assert [c["name"] for c in first] == list(OPS[1:]) and first[3]["score"] == pytest.approx(0.5)
