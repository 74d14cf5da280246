"""DrNAS' progressive search: Net2WiderNet widening, pruning by concentration, the stage
schedule, resume across stage boundaries, selection on the result."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import search_params
from pipeline import artifacts
from pipeline.config import ConfigError, method_options
from pipeline.search import METHODS
from pipeline.search.drnas import DrNAS, concentration
from pipeline.search.run import run_search
from pipeline.search.widen import edge_plans, widen_supernet
from pipeline.select.magnitude import parse_magnitude
from pipeline.spaces import get_space

KILLER = Path(__file__).with_name("kill_after_epoch.py")
# Three stages: K=2 with all ops; K=2 with 4 ops per edge (pruning only); K=1 with 2 ops.
STAGES = [{"epochs": 1, "partial_channels": 2}, {"epochs": 1, "partial_channels": 2, "keep_ops": 4}, {"epochs": 1, "partial_channels": 1, "keep_ops": 2}]


def drnas_options(**changes):
    return method_options(METHODS, {"algorithm": "drnas", **changes}, "options")


@pytest.mark.slow
def test_widening_keeps_each_mixed_ops_function_in_fp64():
    """op'(x[:, m]) == op(x)[:, m] for every op of every edge (normal and reduction), with
    BN on batch and on running statistics; the optimiser follows the new parameters."""
    torch.manual_seed(0)
    space = get_space("darts")
    old = space.build_supernet(4, 3, 10, partial_channels=2).double()
    new = space.build_supernet(4, 3, 10, partial_channels=1).double()
    names = space.candidates("normal")[0]
    active = [k for k, name in enumerate(names) if name != "none"]
    w = torch.softmax(torch.randn(len(names), dtype=torch.float64), 0)
    for cell in old.cells:
        for edge in cell.edges:
            x = torch.randn(6, edge.channels // 2, 8, 8, dtype=torch.float64)
            for _ in range(2):  # running statistics away from their initial values
                edge._mix(torch.randn_like(x) * 3 + 1, w, active)
    optimizer = torch.optim.SGD(old.parameters(), lr=0.1, momentum=0.9)
    old(torch.randn(2, 3, 8, 8, dtype=torch.float64), {kind: torch.softmax(torch.randn(14, len(names), dtype=torch.float64), -1) for kind in ("normal", "reduce")}).sum().backward()
    optimizer.step()
    before = copy.deepcopy(old)
    stem_buffer = optimizer.state[old.stem[0].weight]["momentum_buffer"].clone()
    widen_supernet(old, new, torch.Generator().manual_seed(3), optimizer)

    generator = torch.Generator().manual_seed(3)  # the same maps, drawn in the same order
    checked = 0
    for cell_before, cell_after in zip(before.cells, old.cells):
        for edge_before, edge_after in zip(cell_before.edges, cell_after.edges):
            plans = edge_plans(edge_before, edge_after, generator)
            m = next(plan for plan in plans.values() if plan[0] == "rows")[1]
            assert edge_after.k == 1 and len(m) == edge_after.channels
            x = torch.randn(6, edge_before.channels // 2, 8, 8, dtype=torch.float64)
            for mode in ("train", "eval"):
                edge_before.train(mode == "train")
                edge_after.train(mode == "train")
                for k in active:  # each op alone, then the weighted sum
                    one = torch.zeros_like(w)
                    one[k] = 1
                    expected = edge_before._mix(x, one, [k])[:, m]
                    torch.testing.assert_close(edge_after._mix(x[:, m], one, [k]), expected, rtol=1e-12, atol=1e-12)
                torch.testing.assert_close(edge_after._mix(x[:, m], w, active), edge_before._mix(x, w, active)[:, m], rtol=1e-12, atol=1e-12)
            checked += 1
    assert checked == 3 * 14
    assert old.partial_channels == 1
    assert [p.shape for p in old.parameters()] == [p.shape for p in new.parameters()]
    params = list(optimizer.param_groups[0]["params"])
    assert len(params) == len(list(old.parameters())) and all(a is b for a, b in zip(params, old.parameters()))
    for p in params:
        assert optimizer.state[p]["momentum_buffer"].shape == p.shape
    assert torch.equal(optimizer.state[old.stem[0].weight]["momentum_buffer"], stem_buffer)
    assert torch.equal(old.stem[0].weight, before.stem[0].weight)


def test_a_stride_two_edge_keeps_its_halves():
    """On an edge holding a FactorizedReduce, new channels of each half copy that half."""
    space = get_space("darts")
    old = space.build_supernet(4, 3, 10, partial_channels=4)
    new = space.build_supernet(4, 3, 10, partial_channels=1)
    reduction = next(cell for cell in old.cells if cell.reduction)
    edge = reduction.edges[0]  # node 0 from s0: stride 2, skip_connect is a FactorizedReduce
    new_edge = next(cell for cell in new.cells if cell.reduction).edges[0]
    m = edge_plans(edge, new_edge, torch.Generator().manual_seed(0))["ops.3.bn.running_mean"][1]
    old_c, new_c = edge.channels // 4, edge.channels
    assert m[: old_c // 2].tolist() == list(range(old_c // 2))
    assert all(v < old_c // 2 for v in m[: new_c // 2].tolist()) and all(v >= old_c // 2 for v in m[new_c // 2 :].tolist())


def test_pruning_keeps_the_top_ops_by_concentration_among_those_left():
    space = get_space("darts")
    settings = {**search_params()["settings"], "epochs": 3, "partial_channels": 1}
    options = drnas_options(progressive=STAGES)
    method = DrNAS(space, space.build_supernet(2, 3, 10, partial_channels=1), options, settings, torch.device("cpu"), "none")
    alpha = method.alpha["normal"]
    with torch.no_grad():
        alpha.copy_(torch.randn_like(alpha))
        method.alpha["reduce"].copy_(torch.randn_like(alpha))
    c = concentration(alpha).detach()
    method.prune(4)
    expected = torch.zeros_like(c, dtype=torch.bool).scatter(-1, c.topk(4, dim=-1).indices, True)
    assert torch.equal(method.mask["normal"], expected)
    # An op pruned before stays out, however large its concentration becomes.
    pruned = (~expected[0]).nonzero()[0, 0]
    with torch.no_grad():
        alpha[0, pruned] = 100.0
    c = concentration(alpha).detach().masked_fill(~expected, float("-inf"))
    method.prune(2)
    assert torch.equal(method.mask["normal"], torch.zeros_like(expected).scatter(-1, c.topk(2, dim=-1).indices, True))
    assert not method.mask["normal"][0, pruned]
    for weights in (method.eval_weights(), method.weights()):
        w = weights["normal"]
        assert torch.all(w[~method.mask["normal"]] == 0) and torch.all(w[method.mask["normal"]] > 0)
        torch.testing.assert_close(w.sum(-1), torch.ones(14))
    # softmax over the kept ops; the sample's gradient reaches only the kept alphas
    kept = method.mask["normal"][1]
    torch.testing.assert_close(method.eval_weights()["normal"][1][kept], torch.softmax(alpha[1][kept].detach(), 0))
    (method.weights()["normal"] * torch.randn(14, alpha.shape[1])).sum().backward()
    assert torch.all(alpha.grad[~method.mask["normal"]] == 0) and alpha.grad[method.mask["normal"]].abs().sum() > 0


def test_stage_schedule_and_its_config_checks():
    settings = {**search_params()["settings"], "epochs": 3, "partial_channels": 1}
    options = drnas_options(progressive=STAGES, warmup_epochs=1)
    assert [DrNAS.stage_of(options, e) for e in range(4)] == [0, 1, 2, 2]
    assert [DrNAS.supernet_settings(options, settings, e)["partial_channels"] for e in range(3)] == [2, 2, 1]
    assert DrNAS.supernet_settings(drnas_options(), settings, 0) is settings  # one stage: the settings
    DrNAS.check_options(options, settings)
    bad = {
        "sum to 2, not search.settings.epochs 3": STAGES[:2],
        "must be search.settings.partial_channels (1)": [STAGES[0], STAGES[1], {**STAGES[2], "partial_channels": 2}],
        "above the previous stage's 1": [{**STAGES[0], "partial_channels": 1}, STAGES[1], STAGES[2]],
        "keep_ops 5 is more than the 4 ops left": [STAGES[0], STAGES[1], {**STAGES[2], "keep_ops": 5}],
        "keep_ops must be null or 8": [{**STAGES[0], "keep_ops": 4}, STAGES[1], STAGES[2]],
    }
    for message, stages in bad.items():
        with pytest.raises(ConfigError, match="options.progressive.*" + message.replace("(", r"\(").replace(")", r"\)")):
            DrNAS.check_options(drnas_options(progressive=stages), settings)


@pytest.mark.slow
def test_search_runs_its_stages(tiny_data, tmp_path):
    """Each epoch trains at its stage's K and op set; the architecture warms up per stage."""
    params = search_params(settings={"epochs": 3, "subset_per_class": 4, "batch_size": 10, "partial_channels": 1})
    params["options"] = drnas_options(progressive=STAGES, warmup_epochs=1)
    params["method"] = "drnas"
    run_search(params, tiny_data, tmp_path, threads=1)
    metrics = artifacts.read_metrics(tmp_path / "metrics.h5")
    # ops kept after each epoch: 4 after the first stage, 2 after the second (then final)
    assert [int(k.sum(-1).max()) for k in metrics.epochs["kept_normal"]] == [4, 2, 2]
    assert [int(k.sum(-1).min()) for k in metrics.epochs["kept_reduce"]] == [4, 2, 2]
    # warmup_epochs 1 counts from each stage's start: with one-epoch stages alpha never moves
    alphas = metrics.epochs["alpha_normal"]
    assert all((a == alphas[0]).all() for a in alphas)
    final = artifacts.load_checkpoint(tmp_path / "supernet.pt", "supernet")
    assert final["model"]["cells.0.edges.0.ops.4.0.1.weight"].shape[0] == 2  # K=1: all 2 channels
    kept = final["method"]["mask"]["normal"]
    assert torch.equal(final["arch_weights"]["normal"] != 0, kept)
    assert final["provenance"]["params"]["options"]["progressive"] == STAGES


def _cli(params, data, out_dir, kill_epoch=None):
    prefix = [sys.executable, str(KILLER), str(kill_epoch)] if kill_epoch else [sys.executable, "-m", "pipeline"]
    return subprocess.run(
        [*prefix, "search", "--params", json.dumps(params), "--data", str(data), "--out-dir", str(out_dir), "--threads", "1"],
        capture_output=True, text=True, timeout=900,
    )


@pytest.mark.slow
def test_sigkill_across_stage_boundaries_resumes_to_the_same_genotype(tiny_data, tmp_path):
    """Killed after epoch 1 (pruned, not yet widened) and after epoch 2 (widened to K=1):
    the rerun rebuilds its stage's supernet from the checkpoint and ends where an
    uninterrupted run does, bit for bit."""
    params = search_params(settings={"epochs": 3, "subset_per_class": 4, "batch_size": 10, "partial_channels": 1})
    params["options"] = drnas_options(progressive=STAGES, warmup_epochs=0)
    params["method"] = "drnas"
    reference = _cli(params, tiny_data, tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr
    a = artifacts.load_checkpoint(tmp_path / "ref" / "supernet.pt", "supernet")
    space = get_space("darts")
    for kill in (1, 2):
        out = tmp_path / f"killed{kill}"
        killed = _cli(params, tiny_data, out, kill_epoch=kill)
        assert killed.returncode == -9, killed.stderr
        state = artifacts.load_checkpoint(out / "checkpoint" / "last.pt", "supernet")
        assert state["epoch"] == kill
        assert state["model"]["cells.0.edges.0.ops.4.0.1.weight"].shape[0] == (1 if kill == 1 else 2)
        resumed = _cli(params, tiny_data, out)
        assert resumed.returncode == 0, resumed.stderr
        assert f"after epoch {kill}" in resumed.stderr
        b = artifacts.load_checkpoint(out / "supernet.pt", "supernet")
        assert parse_magnitude(space, a["arch_weights"]) == parse_magnitude(space, b["arch_weights"])
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), key
        for kind in ("normal", "reduce"):
            assert torch.equal(a["method"]["mask"][kind], b["method"]["mask"][kind])
            assert torch.equal(a["method"]["alpha"][kind], b["method"]["alpha"][kind])


@pytest.mark.slow
def test_magnitude_and_pt_select_from_a_progressive_supernet(tiny8_data, tmp_path):
    from pipeline.select.run import run_select
    from test_select_pt import assert_two_inputs_per_node, full_options, select_params

    stages = [{"epochs": 1, "partial_channels": 2}, {"epochs": 1, "partial_channels": 1, "keep_ops": 3}]
    params = search_params(settings={"epochs": 2, "subset_per_class": 2, "batch_size": 10, "space": "darts_nonone", "partial_channels": 1})
    params["options"] = drnas_options(progressive=stages, warmup_epochs=0)
    params["method"] = "drnas"
    supernet = run_search(params, tiny8_data, tmp_path / "search", threads=1)
    checkpoint = artifacts.load_checkpoint(supernet, "supernet")
    space = get_space("darts_nonone")
    kept = {kind: checkpoint["method"]["mask"][kind] for kind in ("normal", "reduce")}

    def assert_kept_ops(cells):
        assert_two_inputs_per_node(cells)
        for kind in ("normal", "reduce"):
            for edge in cells[kind]["edges"]:
                index = next(e for e, (node, source) in enumerate(space.edges()) if (node, source) == (edge["node"], edge["input"]))
                assert kept[kind][index, space.candidates(kind)[index].index(edge["op"])], (kind, edge)

    run_select(full_options({**select_params("pt"), "method": "magnitude", "options": {"algorithm": "magnitude"}}), supernet, tiny8_data, tmp_path / "mag" / "genotype.json", threads=1)
    genotype = artifacts.read_genotype(tmp_path / "mag" / "genotype.json")
    space.validate_genotype(genotype["cells"])
    assert_kept_ops(genotype["cells"])

    run_select(full_options(select_params("pt", finetune_epochs=1, topology=True)), supernet, tiny8_data, tmp_path / "pt" / "genotype.json", threads=1)
    genotype = artifacts.read_genotype(tmp_path / "pt" / "genotype.json")
    space.validate_genotype(genotype["cells"])
    assert_kept_ops(genotype["cells"])
    record = artifacts.read_decisions(tmp_path / "pt" / "decisions.h5")
    ops = record.decisions["kind"] == "op"
    per_decision = [int((record.candidates["decision"] == row).sum()) for row in ops.nonzero()[0]]
    assert per_decision and all(n == 3 for n in per_decision)  # only the kept ops were candidates


def test_the_config_check_names_the_progressive_key(tmp_path):
    from pipeline.config import load_config
    from test_config import write_overlay

    stages = [{"epochs": 25, "partial_channels": 6}, {"epochs": 25, "partial_channels": 4, "keep_ops": 4}]
    block = {"algorithm": "drnas", "progressive": stages, "settings": {"space": "darts_nonone", "epochs": 50, "init_channels": 36, "partial_channels": 4}}
    load_config(write_overlay(tmp_path, {"search": {"run": ["drnas_prog"], "methods": {"drnas_prog": block}}}))  # the reference's schedule
    block["settings"]["epochs"] = 40
    with pytest.raises(ConfigError, match=r"config key 'search\.methods\.drnas_prog\.progressive': the stages' epochs sum to 50, not search\.methods\.drnas_prog\.settings\.epochs 40"):
        load_config(write_overlay(tmp_path, {"search": {"run": ["drnas_prog"], "methods": {"drnas_prog": block}}}))
