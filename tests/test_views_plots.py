import json
import re

import h5py
import numpy as np
import pytest

from pipeline import artifacts
from pipeline.views import plots
from pipeline.views.plots import PlotError

EPOCHS = 3


def svg_texts(path) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text())


def search_metrics(path, temperature=None):
    """A tiny search metrics file as the search loop writes it (DARTS keys)."""
    rng = np.random.default_rng(0)
    alpha = {kind: rng.normal(size=(EPOCHS, 14, 8)) for kind in ("normal", "reduce")}
    epochs = {
        "epoch": np.arange(EPOCHS), "lr": np.array([0.025, 0.02, 0.01]),
        "train_loss": np.array([2.3, 2.0, 1.8]), "train_acc": np.array([10.0, 20.0, 30.0]),
        "valid_loss": np.array([2.3, 2.1, 1.9]), "valid_acc": np.array([11.0, 18.0, 25.0]),
        "wall_time": np.array([1.0, 1.0, 1.0]),
    }
    for kind, values in alpha.items():
        epochs[f"alpha_{kind}"] = values
        scale = 1.0 if temperature is None else 1.0 / temperature
        epochs[f"weights_{kind}"] = plots.softmax(values * scale)
    if temperature is not None:
        epochs["temperature"] = np.full(EPOCHS, temperature)
    summary = {"search_method": "darts_1st", "algorithm": "darts", "space": "darts", "search_seconds": 3.0, "final_valid_acc": 25.0}
    artifacts.write_metrics(path, artifacts.Metrics("search", epochs, summary, {"seed": 0}))
    return path


def test_search_figures_curves_and_softmax_alpha_per_edge(tmp_path):
    written = plots.plot_metrics(search_metrics(tmp_path / "metrics.h5"), tmp_path / "plots")
    assert sorted(p.name for p in written) == ["alpha_normal.svg", "alpha_reduce.svg", "curves.svg"]
    curves = svg_texts(tmp_path / "plots" / "curves.svg")
    for title in ("accuracy (%)", "loss", "lr", "wall_time", "train_acc", "valid_acc"):
        assert title in curves
    alpha = svg_texts(tmp_path / "plots" / "alpha_normal.svg")
    for title in ("c_{k-2} → 0", "c_{k-1} → 0", "0 → 1", "2 → 3", "sep_conv_3x3", "none"):
        assert title in alpha
    assert "c_{k-2} → 4" not in alpha  # no such edge: nodes run 0..3


@pytest.mark.slow
def test_method_scalars_and_differing_weights_get_their_own_figures(tmp_path):
    written = plots.plot_metrics(search_metrics(tmp_path / "metrics.h5", temperature=0.5), tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert names == ["alpha_normal.svg", "alpha_reduce.svg", "curves.svg", "weights_normal.svg", "weights_reduce.svg"]
    assert "temperature" in svg_texts(tmp_path / "plots" / "curves.svg")


def test_alpha_trajectories_are_softmax_over_ops():
    alpha = np.array([[[0.0, np.log(3.0)]], [[1.0, 1.0]]])  # 2 epochs, 1 edge, 2 ops
    (trajectory,) = plots.arch_trajectories({"alpha_cell": alpha})
    np.testing.assert_allclose(trajectory.values, [[[0.25, 0.75]], [[0.5, 0.5]]])
    assert (trajectory.cell, trajectory.label) == ("cell", "softmax(alpha)")
    # A column that is not a candidate on an edge (ProxylessNAS: skip where shapes differ) gets 0.
    mask = np.array([[True, False]])
    (masked,) = plots.arch_trajectories({"alpha_layers": alpha}, masks={"layers": mask})
    np.testing.assert_allclose(masked.values, [[[1.0, 0.0]], [[1.0, 0.0]]])


def test_edge_names_follow_the_space():
    names = plots.edge_names("darts", "normal", 14, 8)
    assert names.titles[:3] == ["c_{k-2} → 0", "c_{k-1} → 0", "c_{k-2} → 1"]
    assert names.rows == [[0, 1], [2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12, 13]]
    assert names.ops[0][4] == "sep_conv_3x3"
    nb201 = plots.edge_names("nb201", "cell", 6, 5)
    assert nb201.titles == ["0 → 1", "0 → 2", "1 → 2", "0 → 3", "1 → 3", "2 → 3"] and nb201.rows == [[0], [1, 2], [3, 4, 5]]
    proxyless = plots.edge_names("proxyless", "layers", 21, 7)
    assert proxyless.titles[0] == "layer 1" and proxyless.rows is None
    assert proxyless.ops[0][-1] == "" and proxyless.ops[2][-1] == "skip_connect"  # skip only where shapes allow
    generic = plots.edge_names("no_such_space", "normal", 3, 2)
    assert generic.titles == ["edge 0", "edge 1", "edge 2"] and generic.rows is None


def test_retrain_curves_and_repeatable_bytes(tmp_path):
    epochs = {"epoch": np.arange(2), "lr": np.array([0.025, 0.0]), "drop_path_prob": np.array([0.0, 0.1]),
              "train_loss": np.array([2.0, 1.5]), "train_acc": np.array([30.0, 45.0]),
              "test_loss": np.array([1.9, 1.6]), "test_acc": np.array([33.0, 44.0]), "wall_time": np.array([5.0, 5.0])}
    path = tmp_path / "metrics.h5"
    artifacts.write_metrics(path, artifacts.Metrics("retrain", epochs, {"dataset": "cifar10"}, {}))
    (first,) = plots.plot_metrics(path, tmp_path / "a")
    (second,) = plots.plot_metrics(path, tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    assert {"test_acc", "train_acc", "drop_path_prob"} <= set(svg_texts(first))


def test_plotting_a_missing_metrics_file_names_it(tmp_path):
    with pytest.raises(artifacts.ArtifactError, match="nope.h5: metrics file not found"):
        plots.plot_metrics(tmp_path / "nope.h5", tmp_path / "out")


# ---------------------------------------------------------------- decision records


def write_record(path, add_decisions, method="pt"):
    """A decision record as the selection stage writes it: a DecisionLog, then artifacts.write_decisions."""
    from pipeline.select.base import DecisionLog

    log = DecisionLog()
    add_decisions(log)
    artifacts.write_decisions(path, log.to_artifact(method, method, artifacts.provenance({}, seed=0)))
    return path


def pt_decisions(log):
    """PT on a DARTS cell: two op decisions with their tuning, then a topology step."""
    log.add(step=0, cell_type="normal", kind="op", criterion="acc", action="keep", choice="sep_conv_3x3", node=2, input=0, edge=0,
            candidates=[("skip_connect", 0, 60.0, 0.4), ("sep_conv_3x3", 0, 20.0, 0.1)])
    log.after_step(0, 70.0, 1.2)
    log.add(step=1, cell_type="normal", kind="op", criterion="acc", action="keep", choice="skip_connect", node=2, input=1, edge=1,
            candidates=[("skip_connect", 1, 50.0, 0.3), ("sep_conv_3x3", 1, 55.0, 0.3), ("max_pool_3x3", 1, 61.0, 0.4)])
    log.after_step(1, 71.5, 1.1)
    log.add(step=2, cell_type="reduce", kind="edge", criterion="acc", action="remove", choice="max_pool_3x3", node=4, input=1, edge=6,
            candidates=[("sep_conv_3x3", 0, 30.0, 0.5), ("max_pool_3x3", 1, 50.0, 0.5), ("skip_connect", 3, 40.0, 0.5)])
    log.after_step(2, 72.0, 1.0)


def test_decision_steps_follow_the_record(tmp_path):
    """Op decisions name the edge and its ops; a topology step's candidates are edges
    (``input:op``); scores, choices and the accuracy after tuning come from the record."""
    first, second, topology = plots.read_decision_steps(write_record(tmp_path / "decisions.h5", pt_decisions))
    assert (first.kind, first.edge, first.choice, first.criterion) == ("operation", "normal 0→2", "sep_conv_3x3", "acc")
    assert first.candidates == ["skip_connect", "sep_conv_3x3"] and first.scores == [60.0, 20.0] and first.accuracy_after == 70.0
    assert (second.edge, second.choice, second.accuracy_after) == ("normal 1→2", "skip_connect", 71.5)
    assert (topology.kind, topology.edge, topology.choice) == ("topology", "reduce 1→4", "1:max_pool_3x3")
    assert topology.candidates == ["0:sep_conv_3x3", "1:max_pool_3x3", "3:skip_connect"] and topology.scores == [30.0, 50.0, 40.0]


def test_branch_and_sample_decisions(tmp_path):
    """UNAS branches: (input, op) pairs, the impossible ones (-inf) left out; train-free
    samples are numbered, the choice kept even when its proxy score is not finite; no
    accuracy after tuning without a supernet pass."""
    inf, nan = float("inf"), float("nan")

    def decisions(log):
        log.add(step=0, cell_type="normal", kind="branch", criterion="log_prob", action="keep", choice="sep_conv_3x3", node=3, input=2,
                candidates=[("sep_conv_3x3", 0, -2.0, nan), ("skip_connect", 1, -inf, nan), ("sep_conv_3x3", 2, -1.0, nan)])
        log.add(step=0, cell_type="all", kind="sample", criterion="synflow", action="keep", choice="arch A",
                candidates=[("arch A", -1, nan, nan), ("arch B", -1, 3.0, nan), ("arch C", -1, inf, nan)])

    branch, sample = plots.read_decision_steps(write_record(tmp_path / "decisions.h5", decisions, method="unas"))
    assert (branch.kind, branch.edge, branch.choice) == ("branch", "normal 2→3", "2:sep_conv_3x3")
    assert branch.candidates == ["0:sep_conv_3x3", "2:sep_conv_3x3"] and branch.scores == [-2.0, -1.0]
    assert (sample.kind, sample.edge, sample.choice, sample.criterion) == ("sample", "2 samples", "#1", "synflow")
    assert sample.candidates == ["#1", "#2"] and sample.accuracy_after is None
    texts = svg_texts(plots.save_figure(plots.plot_decisions([branch, sample]), tmp_path / "decisions.svg"))
    assert {"2:sep_conv_3x3", "branch", "sample", "log_prob / synflow"} <= set(texts)  # a NaN score has no point


def test_every_decision_kind_of_the_contract_is_drawn():
    assert set(plots.KIND_LABELS) == set(artifacts.DECISION_KINDS)


def test_decision_plot_marks_each_choice(tmp_path):
    fig = plots.plot_decisions(plots.read_decision_steps(write_record(tmp_path / "decisions.h5", pt_decisions)), title="PT on darts")
    texts = svg_texts(plots.save_figure(fig, tmp_path / "decisions.svg"))
    assert {"normal 0→2", "normal 1→2", "reduce 1→4"} <= set(texts)  # one tick per decision
    assert texts.count("sep_conv_3x3") == 1 and texts.count("skip_connect") == 1 and "1:max_pool_3x3" in texts
    assert {"operation", "topology", "PT on darts"} <= set(texts)


def test_plot_decisions_command_draws_the_stage_record(tmp_path):
    from pipeline.cli import main

    record, out = write_record(tmp_path / "decisions.h5", pt_decisions), tmp_path / "decisions.svg"
    assert main(["plot-decisions", str(record), "--out", str(out), "--title", "PT, seed 0"]) == 0
    assert {"sep_conv_3x3", "1:max_pool_3x3", "PT, seed 0"} <= set(svg_texts(out))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda path: h5py.File(path, "w").close(), "attribute 'format' is not 'pipeline.decisions'"),
        (lambda path: path.write_text(json.dumps({"steps": []})), "not a readable HDF5 file"),
        (lambda path: None, "decisions file not found"),
    ],
)
def test_a_file_that_is_not_a_stage_record_is_refused_in_one_line(tmp_path, capsys, make, message):
    from pipeline.cli import main

    path, out = tmp_path / "record.h5", tmp_path / "decisions.svg"
    make(path)
    assert main(["plot-decisions", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pipeline plot-decisions: error: {path}: {message}") and err.count("\n") == 1
    assert not out.exists()


def test_pareto_front_and_latency_plot(tmp_path):
    latency, accuracy = [60.0, 70.0, 80.0, 90.0, 75.0], [72.0, 74.0, 75.0, 76.5, 73.0]
    assert plots.pareto_front(latency, accuracy) == [0, 1, 2, 3]  # (75 ms, 73 %) is beaten by (70 ms, 74 %)
    fig = plots.plot_latency_accuracy(latency, accuracy, labels=list("abcde"), target=85.0)
    texts = svg_texts(plots.save_figure(fig, tmp_path / "latency.svg"))
    assert "target 85 ms" in texts and "over target" in texts and set("abcde") <= set(texts)
    with pytest.raises(PlotError, match="2 latencies but 1 accuracies"):
        plots.plot_latency_accuracy([1.0, 2.0], [3.0])


def test_plot_latency_reads_the_latency_table(tmp_path):
    table = tmp_path / "cifar10.csv"
    table.write_text(
        "dataset,search_method,selection_method,test_error_mean,latency_ms,latency_target_ms\n"
        "cifar10,darts_1st,magnitude,40.0,12.0,20.0\ncifar10,darts_2nd,pt,35.0,25.0,20.0\n"
    )
    fig = plots.latency_table_figure(table)
    ax = fig.axes[0]
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    assert sorted(map(tuple, points.tolist())) == [(12.0, 60.0), (25.0, 65.0)]
    assert any(line.get_xdata()[0] == 20.0 for line in ax.get_lines())  # the target line
    (tmp_path / "bad.csv").write_text("dataset,search_method\ncifar10,darts_1st\n")
    with pytest.raises(PlotError, match="bad.csv: column 'selection_method' is missing"):
        plots.latency_table_figure(tmp_path / "bad.csv")
