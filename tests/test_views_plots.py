import json
import re

import h5py
import numpy as np
import pytest

from pipeline import artifacts
from pipeline.views import plots
from pipeline.views.plots import PlotError, decision_steps, read_decisions

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

STEPS = [
    {"edge": "normal 0→2", "candidates": ["skip_connect", "sep_conv_3x3"], "scores": [60.0, 20.0], "choice": "sep_conv_3x3", "accuracy_after": 70.0},
    {"edge": "normal 1→2", "candidates": ["skip_connect", "sep_conv_3x3", "max_pool_3x3"], "scores": [50.0, 55.0, 61.0], "choice": 0, "accuracy_after": 71.5},
    {"edge": "normal node 2", "kind": "topology", "candidates": ["0→2", "1→2"], "scores": [40.0, 66.0], "choice": "0→2", "accuracy_after": 72.0},
]


def test_decision_steps_accept_names_or_indices_and_aliases():
    steps = decision_steps(STEPS + [{"name": "n", "ops": [b"a", b"b", b""], "accuracies": [1.0, 2.0, np.nan], "chosen": 1}])
    assert [s.choice for s in steps] == ["sep_conv_3x3", "skip_connect", "0→2", "b"]
    assert steps[3].candidates == ["a", "b"] and steps[3].scores == [1.0, 2.0] and steps[3].accuracy_after is None
    assert [s.kind for s in steps] == ["operation", "operation", "topology", "operation"]


@pytest.mark.parametrize(
    "record, message",
    [
        ({"edge": "e", "candidates": ["a"], "choice": "a"}, "decision step 0: needs candidates, scores and choice"),
        ({"edge": "e", "candidates": ["a", "b"], "scores": [1.0, 2.0], "choice": "c"}, "choice 'c' is not one of the candidates"),
        ({"edge": "e", "candidates": ["a", "b"], "scores": [1.0], "choice": "a"}, "2 candidates but 1 scores"),
    ],
)
def test_bad_decision_records_are_rejected(record, message):
    with pytest.raises(PlotError, match=re.escape(message)):
        decision_steps([record])


def _write_h5_groups(path):
    with h5py.File(path, "w") as handle:
        handle.attrs["criterion"] = "acc"
        for i, step in enumerate(STEPS):
            group = handle.create_group(f"steps/{i}")
            group.create_dataset("candidates", data=np.array(step["candidates"], dtype=h5py.string_dtype()))
            group.create_dataset("scores", data=np.array(step["scores"]))
            for key in ("edge", "choice", "accuracy_after", "kind"):
                if key in step:
                    group.attrs[key] = step[key]


def _write_h5_columns(path):
    width = max(len(s["candidates"]) for s in STEPS)
    with h5py.File(path, "w") as handle:
        group = handle.create_group("decisions")
        group["edge"] = np.array([s["edge"] for s in STEPS], dtype=h5py.string_dtype())
        group["candidates"] = np.array([s["candidates"] + [""] * (width - len(s["candidates"])) for s in STEPS], dtype=h5py.string_dtype())
        group["scores"] = np.array([s["scores"] + [np.nan] * (width - len(s["scores"])) for s in STEPS])
        group["choice"] = np.array([s["choice"] if isinstance(s["choice"], str) else s["candidates"][s["choice"]] for s in STEPS], dtype=h5py.string_dtype())
        group["accuracy_after"] = np.array([s["accuracy_after"] for s in STEPS])
        group["kind"] = np.array([s.get("kind", "operation") for s in STEPS], dtype=h5py.string_dtype())


@pytest.mark.parametrize("layout", ["json", "h5_groups", "h5_columns", "h5_json_attr"])
def test_decision_record_layouts_read_the_same(tmp_path, layout):
    expected = decision_steps(STEPS)
    if layout == "json":
        path = tmp_path / "decisions.json"
        path.write_text(json.dumps({"criterion": "acc", "steps": STEPS}))
    else:
        path = tmp_path / "decisions.h5"
        if layout == "h5_groups":
            _write_h5_groups(path)
        elif layout == "h5_columns":
            _write_h5_columns(path)
        else:
            with h5py.File(path, "w") as handle:
                handle.attrs["steps"] = json.dumps(STEPS)
    assert read_decisions(path) == expected


def test_unreadable_decision_record_names_the_file(tmp_path):
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w"):
        pass
    with pytest.raises(PlotError, match=r"empty\.h5: no decision steps found"):
        read_decisions(path)


def test_decision_plot_marks_each_choice(tmp_path):
    fig = plots.plot_decisions(decision_steps(STEPS), title="PT on darts")
    path = plots.save_figure(fig, tmp_path / "decisions.svg")
    texts = svg_texts(path)
    for step in STEPS:
        assert step["edge"] in texts  # one tick per decision
    assert texts.count("sep_conv_3x3") == 1 and texts.count("skip_connect") == 1 and "0→2" in texts
    assert {"operation", "topology", "PT on darts"} <= set(texts)


def test_pareto_front_and_latency_plot(tmp_path):
    latency, accuracy = [60.0, 70.0, 80.0, 90.0, 75.0], [72.0, 74.0, 75.0, 76.5, 73.0]
    assert plots.pareto_front(latency, accuracy) == [0, 1, 2, 3]  # (75 ms, 73 %) is beaten by (70 ms, 74 %)
    fig = plots.plot_latency_accuracy(latency, accuracy, labels=list("abcde"), target=85.0)
    texts = svg_texts(plots.save_figure(fig, tmp_path / "latency.svg"))
    assert "target 85 ms" in texts and "over target" in texts and set("abcde") <= set(texts)
    with pytest.raises(PlotError, match="2 latencies but 1 accuracies"):
        plots.plot_latency_accuracy([1.0, 2.0], [3.0])


def test_plot_decisions_reads_the_selection_stage_record(tmp_path):
    """The record the select stage writes (DecisionLog -> decisions.h5) plots with the
    right candidates, choices and accuracy after tuning, for op, edge and sample decisions."""
    from pipeline.select.base import DecisionLog

    log = DecisionLog()
    log.add(step=0, cell_type="normal", kind="op", criterion="acc", action="keep", choice="sep_conv_3x3", node=2, input=0, edge=0,
            candidates=[("skip_connect", 0, 60.0, 0.4), ("sep_conv_3x3", 0, 20.0, 0.1)])
    log.after_step(0, 55.0, 1.2)
    log.add(step=1, cell_type="reduce", kind="edge", criterion="acc", action="remove", choice="max_pool_3x3", node=4, input=1, edge=6,
            candidates=[("sep_conv_3x3", 0, 30.0, 0.5), ("max_pool_3x3", 1, 50.0, 0.5), ("skip_connect", 3, 40.0, 0.5)])
    log.after_step(1, 57.0, 1.1)
    log.add(step=2, cell_type="all", kind="sample", criterion="synflow", action="keep", choice="arch B",
            candidates=[("arch A", -1, 1.0, float("nan")), ("arch B", -1, 3.0, float("nan"))])
    path = tmp_path / "decisions.h5"
    artifacts.write_decisions(path, log.to_artifact("pt", "pt", {"seed": 0}))

    operation, topology, sample = read_decisions(path)
    assert (operation.kind, operation.edge, operation.choice) == ("operation", "normal 0→2", "sep_conv_3x3")
    assert operation.candidates == ["skip_connect", "sep_conv_3x3"] and operation.scores == [60.0, 20.0]
    assert operation.accuracy_after == 55.0
    assert (topology.kind, topology.edge, topology.choice) == ("topology", "reduce 1→4", "1:max_pool_3x3")
    assert topology.candidates == ["0:sep_conv_3x3", "1:max_pool_3x3", "3:skip_connect"]
    assert (sample.kind, sample.choice, sample.candidates, sample.criterion) == ("sample", "#2", ["#1", "#2"], "synflow")
    assert sample.accuracy_after is None
    out = tmp_path / "decisions.svg"
    from pipeline.cli import main

    assert main(["plot-decisions", str(path), "--out", str(out)]) in (0, None)
    assert {"sep_conv_3x3", "1:max_pool_3x3", "#2"} <= set(svg_texts(out))


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
