"""Plots from the pipeline's artifacts (matplotlib, no display needed).

- :func:`plot_curves`: every per-epoch scalar series of a metrics file: accuracy and loss
  (train beside valid or test), then one panel each for the rest (lr, temperature, sigma,
  wall time, ...), so a method's own scalars appear without code here.
- :func:`arch_trajectories` / :func:`plot_edge_trajectories`: every (epochs, edges, ops)
  array of a search's metrics, one panel per edge, one line per op; ``alpha_<cell>`` is
  shown as softmax(alpha), and ``weights_<cell>`` is left out where it equals that.
- :func:`plot_decisions`: a selection's decision record (``decisions.h5``, read through
  :func:`artifacts.read_decisions`; see :func:`decision_steps`).
- :func:`plot_latency_accuracy`: accuracy against latency with the latency target.

:func:`plot_metrics` writes a metrics file's figures into a folder (what the workflow runs).
Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state) and saved
with fixed metadata and SVG ids, so the same input gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import artifacts
from pipeline.views.figures import FORMATS, PlotError, new_figure, save_figure
from pipeline.views.pictures import op_color

PAIRED_SUFFIXES = ("_acc", "_loss")


def _grid(fig, count: int, columns: int):
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return axes[:count]


# ---------------------------------------------------------------- per-epoch curves


def series_panels(epochs: Mapping[str, np.ndarray]) -> list[tuple[str, list[str]]]:
    """(panel title, series keys) for every 1-D or 2-D per-epoch array; 3-D arrays are left
    to :func:`arch_trajectories`. Accuracies share a panel, and so do losses."""
    panels: list[tuple[str, list[str]]] = []
    keys = [k for k in epochs if k != "epoch" and np.asarray(epochs[k]).ndim in (1, 2)]
    keys = [k for k in keys if np.issubdtype(np.asarray(epochs[k]).dtype, np.number)]
    for suffix, title in zip(PAIRED_SUFFIXES, ("accuracy (%)", "loss")):
        group = [k for k in keys if k.endswith(suffix) and np.asarray(epochs[k]).ndim == 1]
        if group:
            panels.append((title, sorted(group, key=lambda k: (not k.startswith("train"), k))))
    grouped = {k for _, group in panels for k in group}
    panels.extend((k, [k]) for k in keys if k not in grouped)
    return panels


def plot_curves(metrics: artifacts.Metrics, title: str | None = None):
    """Accuracy, loss and every other per-epoch series of a search or retrain run."""
    from matplotlib.ticker import MaxNLocator

    panels = series_panels(metrics.epochs)
    if not panels:
        raise PlotError("metrics: no per-epoch series to plot")
    x = np.asarray(metrics.epochs["epoch"]) + 1  # every metrics kind has it (METRICS_REQUIRED)
    columns = min(3, len(panels))
    fig = new_figure(figsize=(4.2 * columns, 3.0 * math.ceil(len(panels) / columns) + 0.3))
    for ax, (name, keys) in zip(_grid(fig, len(panels), columns), panels):
        for key in keys:
            values = np.asarray(metrics.epochs[key], dtype=float)
            if values.ndim == 2:
                for column in range(values.shape[1]):
                    ax.plot(x, values[:, column], marker=".", lw=1, label=f"{key}[{column}]")
            else:
                ax.plot(x, values, marker="o", ms=3, lw=1.5, label=key)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if len(keys) > 1 or np.asarray(metrics.epochs[keys[0]]).ndim == 2:
            ax.legend(fontsize=7)
    fig.suptitle(title or _run_title(metrics), fontsize=11)
    return fig


def _run_title(metrics: artifacts.Metrics) -> str:
    s = metrics.summary
    parts = [metrics.kind, s.get("dataset"), s.get("space"), s.get("search_method"), s.get("selection_method")]
    seed = s.get("seed", metrics.provenance.get("seed"))
    text = ", ".join(str(p) for p in parts if p)
    return text + (f", seed {seed}" if seed is not None else "")


# ---------------------------------------------------------------- architecture trajectories


def softmax(values: np.ndarray, axis: int = -1, mask: np.ndarray | None = None) -> np.ndarray:
    """Softmax along ``axis``; where ``mask`` is False the entry is not a candidate (prob. 0)."""
    values = np.asarray(values, dtype=float)
    if mask is not None:
        values = np.where(mask, values, -np.inf)
    shifted = values - np.max(values, axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


@dataclass
class Trajectory:
    key: str  # the metrics series it comes from
    values: np.ndarray  # (epochs, edges, ops)
    label: str  # what the values are, e.g. "softmax(alpha)"
    cell: str  # cell type, from the key's suffix


def cell_of(key: str, cell_types: Sequence[str] = ()) -> str:
    """The cell type a ``<quantity>_<cell>`` series belongs to (a known type if it ends the key)."""
    return next((c for c in cell_types if key.endswith(f"_{c}")), key.partition("_")[2] or key)


def arch_trajectories(
    epochs: Mapping[str, np.ndarray], cell_types: Sequence[str] = (), masks: Mapping[str, np.ndarray] | None = None
) -> list[Trajectory]:
    """Every (epochs, edges, ops) array, ``alpha_*`` as probabilities (softmax over ops,
    over each edge's candidates where ``masks[cell]`` (edges, ops) marks them).

    ``weights_<cell>`` (the method's own op weights) is dropped where it equals
    softmax(``alpha_<cell>``), as for DARTS; where a method weighs differently (a
    temperature, a sampled distribution) both are kept."""
    found = []
    for key in sorted(epochs):
        values = np.asarray(epochs[key])
        if values.ndim != 3 or not np.issubdtype(values.dtype, np.number):
            continue
        quantity, cell = key.partition("_")[0], cell_of(key, cell_types)
        if quantity == "alpha":
            mask = (masks or {}).get(cell)
            mask = mask if mask is not None and mask.shape == values.shape[1:] else None
            found.append(Trajectory(key, softmax(values, mask=mask), "softmax(alpha)", cell))
        else:
            found.append(Trajectory(key, values.astype(float), quantity, cell))
    alpha_probs = {t.cell: t.values for t in found if t.key.startswith("alpha_")}
    return [
        t
        for t in found
        if not (t.key.startswith("weights_") and t.cell in alpha_probs
                and alpha_probs[t.cell].shape == t.values.shape and np.allclose(alpha_probs[t.cell], t.values, atol=1e-5))
    ]


@dataclass
class EdgeNames:
    titles: list[str]  # one per edge
    ops: list[list[str]]  # per edge, one per op column ('' for a column that is not a candidate)
    rows: list[list[int]] | None = None  # panel rows (edges into the same node), else a grid


def edge_names(space_name: str | None, cell: str, num_edges: int, num_ops: int) -> EdgeNames:
    """Panel titles, op names and rows per edge from the space registry; generic names if
    the space is unknown or its shape differs from the array's."""
    generic = EdgeNames([f"edge {e}" for e in range(num_edges)], [[f"op {k}" for k in range(num_ops)] for _ in range(num_edges)])
    try:
        from pipeline.spaces import get_space

        space = get_space(space_name)
        edges = list(space.edges())
        candidates = space.candidates(cell)
    except Exception:  # an unregistered space or cell type: generic names
        return generic
    if len(edges) != num_edges or len(candidates) != num_edges:
        return generic
    titles, ops = generic.titles, generic.ops
    first = min(node for node, _ in edges)
    chain = all(node == source + 1 for node, source in edges)

    def name(n: int) -> str:
        if first >= 2:  # DARTS-style cell: two cell inputs, intermediate nodes from 0
            return f"c_{{k-{first - n}}}" if n < first else str(n - first)
        return str(n)

    titles = [f"layer {node}" if chain else f"{name(source)} → {name(node)}" for node, source in edges]
    primitives = list(getattr(space, "primitives", []))
    for e, names in enumerate(candidates):
        if len(names) == num_ops:
            ops[e] = list(names)
        elif len(primitives) == num_ops:
            # Masked columns (a layer without skip, say) keep the space's column order.
            ops[e] = [p if p in names else "" for p in primitives]
    rows = None
    if not chain:
        by_node: dict[int, list[int]] = {}
        for e, (node, _) in enumerate(edges):
            by_node.setdefault(node, []).append(e)
        if len(by_node) <= 8 and max(len(ids) for ids in by_node.values()) <= 8:
            rows = [by_node[node] for node in sorted(by_node)]
    return EdgeNames(titles, ops, rows)


def plot_edge_trajectories(values: np.ndarray, names: EdgeNames, title: str, ylabel: str):
    """One panel per edge (a row per target node where ``names.rows`` says so), one line
    per op over epochs; a shared legend of op names."""
    from matplotlib.ticker import MaxNLocator

    values = np.asarray(values, dtype=float)
    titles, op_names = names.titles, names.ops
    if values.ndim != 3 or values.shape[1] != len(titles):
        raise PlotError(f"{title}: expected (epochs, {len(titles)} edges, ops) values, got shape {values.shape}")
    epochs = np.arange(1, values.shape[0] + 1)
    if names.rows:
        columns = max(len(row) for row in names.rows)
        fig = new_figure(figsize=(2.6 * columns, 2.0 * len(names.rows) + 0.9))
        grid = fig.subplots(len(names.rows), columns, squeeze=False)
        panels = {}
        for r, row in enumerate(names.rows):
            for c in range(columns):
                if c < len(row):
                    panels[row[c]] = grid[r, c]
                else:
                    grid[r, c].set_visible(False)
        axes = [panels[e] for e in range(len(titles))]
    else:
        columns = min(len(titles), 5)
        fig = new_figure(figsize=(2.9 * columns, 2.2 * math.ceil(len(titles) / columns) + 0.9))
        axes = _grid(fig, len(titles), columns)
    handles = {}
    for e, ax in enumerate(axes):
        for k, op in enumerate(op_names[e]):
            if not op:
                continue
            (line,) = ax.plot(epochs, values[:, e, k], color=op_color(op), lw=1.5, marker="." if len(epochs) < 20 else None)
            handles.setdefault(op, line)
        ax.set_title(titles[e], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        # y fits the data: early in a search the ops differ by far less than their share.
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.suptitle(f"{title} (x: epoch, y: {ylabel})", fontsize=11)
    return fig


# ---------------------------------------------------------------- a metrics file's figures


def metrics_figures(metrics: artifacts.Metrics) -> dict[str, Any]:
    """Name -> figure for a metrics file: ``curves``, then one per architecture array."""
    figures = {"curves": plot_curves(metrics)}
    space_name = metrics.summary.get("space")
    cell_types: Sequence[str] = ()
    try:
        from pipeline.spaces import get_space

        cell_types = tuple(get_space(space_name).cell_types)
    except Exception:
        pass
    names_of, masks = {}, {}
    for key, values in metrics.epochs.items():
        if np.ndim(values) == 3:
            cell = cell_of(key, cell_types)
            names_of[cell] = names = edge_names(space_name, cell, *np.shape(values)[1:])
            masks[cell] = np.array([[bool(op) for op in ops] for ops in names.ops])
    for trajectory in arch_trajectories(metrics.epochs, cell_types, masks):
        names = names_of[trajectory.cell]
        title = f"{_run_title(metrics)}: {trajectory.cell}, {trajectory.label}"
        figures[trajectory.key] = plot_edge_trajectories(trajectory.values, names, title, trajectory.label)
    return figures


def plot_metrics(path: str | Path, out_dir: str | Path, fmt: str = "svg") -> list[Path]:
    """Write every figure of a metrics HDF5 file into ``out_dir`` as ``<name>.<fmt>``."""
    metrics = artifacts.read_metrics(path)
    if fmt not in FORMATS:
        raise PlotError(f"figure format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [save_figure(fig, out_dir / f"{name}.{fmt}") for name, fig in metrics_figures(metrics).items()]


# ---------------------------------------------------------------- decision records


@dataclass
class DecisionStep:
    """One decision of a selection's record (:class:`artifacts.Decisions`) as it is drawn:
    the candidates' labels and scores (what ``criterion`` names, e.g. the supernet's
    accuracy with the candidate removed), the chosen one, and the supernet's validation
    accuracy after the step's fine-tuning (None for methods without a supernet pass)."""

    edge: str  # the tick label: "normal 0→2", or "12 samples"
    candidates: list[str]
    scores: list[float]
    choice: str
    accuracy_after: float | None
    kind: str  # KIND_LABELS of the record's kind
    criterion: str


# How each decision kind of the record (artifacts.DECISION_KINDS) is named in the figure.
KIND_LABELS = {"op": "operation", "edge": "topology", "branch": "branch", "sample": "sample"}


def decision_steps(record: artifacts.Decisions) -> list[DecisionStep]:
    """One step per decision row, its candidates the candidate rows that point at it
    (those with a finite score, and the chosen one). Candidates from several inputs
    (topology, UNAS branches) are labelled ``input:op`` (PT's ``remove`` choice is the edge
    it drops); train-free candidates are whole sampled architectures, labelled ``#k``."""
    rows, cand = record.decisions, record.candidates
    steps = []
    for i in range(record.num_decisions):
        kind, choice = str(rows["kind"][i]), (str(rows["choice"][i]), int(rows["input"][i]))
        mine = [
            k
            for k in np.flatnonzero(cand["decision"] == i)
            if math.isfinite(cand["score"][k]) or (str(cand["name"][k]), int(cand["input"][k])) == choice
        ]
        if kind == "sample":
            names = [str(cand["name"][k]) for k in mine]
            labels, chosen = [f"#{n + 1}" for n in range(len(mine))], f"#{names.index(choice[0]) + 1}"
            edge = f"{len(mine)} samples"
        else:
            sourced = len({int(cand["input"][k]) for k in mine}) > 1
            labels = [f"{int(cand['input'][k])}:{cand['name'][k]}" if sourced else str(cand["name"][k]) for k in mine]
            chosen = f"{choice[1]}:{choice[0]}" if sourced else choice[0]
            edge = f"{rows['cell_type'][i]} {int(rows['input'][i])}→{int(rows['node'][i])}"
        after = float(rows["valid_acc_after"][i])
        steps.append(DecisionStep(
            edge=edge,
            candidates=labels,
            scores=[float(cand["score"][k]) for k in mine],
            choice=chosen,
            accuracy_after=None if math.isnan(after) else after,
            kind=KIND_LABELS[kind],
            criterion=str(rows["criterion"][i]),
        ))
    return steps


def read_decision_steps(path: str | Path) -> list[DecisionStep]:
    """The steps of a decision record file, read and validated by :func:`artifacts.read_decisions`."""
    return decision_steps(artifacts.read_decisions(path))


def plot_decisions(steps: Sequence[DecisionStep], title: str = "selection decisions"):
    """Per step the candidates' scores (the kept one marked and named), and the supernet's
    accuracy after the fine-tuning that followed, if recorded."""
    if not steps:
        raise PlotError("decision record: no steps to plot")
    x = np.arange(1, len(steps) + 1)
    has_after = any(step.accuracy_after is not None for step in steps)
    fig = new_figure(figsize=(max(6.0, 0.38 * len(steps) + 2.5), 6.5 if has_after else 4.8))
    axes = fig.subplots(2 if has_after else 1, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [3, 1.4] if has_after else [1]})[:, 0]
    ax = axes[0]
    for i, step in zip(x, steps):
        others = [v for n, v in zip(step.candidates, step.scores) if n != step.choice]
        ax.scatter([i] * len(others), others, s=14, color="#999999", zorder=2)
        kept = step.scores[step.candidates.index(step.choice)]
        ax.scatter([i], [kept], s=50, marker="*", color=op_color(step.choice), edgecolor="black", lw=0.5, zorder=3)
        ax.annotate(step.choice, (i, kept), xytext=(0, 6), textcoords="offset points", rotation=90, fontsize=7, ha="center", va="bottom")
    for i in range(len(steps)):
        if i == 0 or steps[i].kind != steps[i - 1].kind:
            if i:
                for a in axes:
                    a.axvline(i + 0.5, color="#444444", ls="--", lw=0.8)
            ax.text(i + 0.6, 0.98, steps[i].kind, transform=ax.get_xaxis_transform(), fontsize=8, va="top")
    criteria = {step.criterion for step in steps}
    if criteria <= {"acc", "loss"}:
        measure = "loss" if criteria == {"loss"} else "accuracy (%)"
        ax.set_ylabel(f"supernet {measure}\nwith the candidate removed", fontsize=9)
    else:  # magnitude: op weights; train-free: proxy scores
        ax.set_ylabel(" / ".join(sorted(criteria)), fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(y=0.25)
    if has_after:
        after = [np.nan if s.accuracy_after is None else s.accuracy_after for s in steps]
        axes[1].plot(x, after, marker="o", ms=3, color="#1f77b4")
        axes[1].set_ylabel("accuracy after\nfine-tuning (%)", fontsize=9)
        axes[1].grid(alpha=0.3)
    axes[-1].set_xticks(x, [step.edge for step in steps], rotation=90, fontsize=7)
    axes[-1].set_xlabel("decision (edge)")
    fig.suptitle(title, fontsize=11)
    return fig


# ---------------------------------------------------------------- latency


def pareto_front(latency: Sequence[float], accuracy: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy."""
    order = sorted(range(len(latency)), key=lambda i: (latency[i], -accuracy[i]))
    front, best = [], -math.inf
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return front


def plot_latency_accuracy(latency: Sequence[float], accuracy: Sequence[float], labels: Sequence[str] | None = None,
                          target: float | None = None, unit: str = "ms", title: str = "accuracy vs latency"):
    """Accuracy against measured latency, the Pareto front, and the latency target."""
    latency = [float(v) for v in latency]
    accuracy = [float(v) for v in accuracy]
    if len(latency) != len(accuracy) or not latency:
        raise PlotError(f"latency plot: {len(latency)} latencies but {len(accuracy)} accuracies")
    if labels is not None and len(labels) != len(latency):
        raise PlotError(f"latency plot: {len(labels)} labels for {len(latency)} points")
    fig = new_figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    within = [target is None or v <= target for v in latency]
    ax.scatter([v for v, w in zip(latency, within) if w], [a for a, w in zip(accuracy, within) if w], color="#1f77b4", zorder=3, label="within target" if target is not None else None)
    if target is not None and not all(within):
        ax.scatter([v for v, w in zip(latency, within) if not w], [a for a, w in zip(accuracy, within) if not w], color="#d62728", marker="x", zorder=3, label="over target")
    front = pareto_front(latency, accuracy)
    ax.plot([latency[i] for i in front], [accuracy[i] for i in front], color="#1f77b4", lw=1, alpha=0.6, drawstyle="steps-post", label="Pareto front")
    if labels is not None:
        for v, a, label in zip(latency, accuracy, labels):
            ax.annotate(str(label), (v, a), xytext=(4, 3), textcoords="offset points", fontsize=7)
    if target is not None:
        ax.axvline(target, color="#d62728", ls="--", lw=1.2, label=f"target {target:g} {unit}")
    ax.set_xlabel(f"latency ({unit})")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=11)
    return fig


def latency_table_figure(path: str | Path):
    """Accuracy vs latency of a latency table's rows (mean over seeds), with the target."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise PlotError(f"{path}: latency table not found")
    table = pd.read_csv(path)
    missing = [c for c in ("search_method", "selection_method", "test_error_mean", *artifacts.LATENCY_COLUMNS[:2]) if c not in table]
    if missing:
        raise PlotError(f"{path}: column {missing[0]!r} is missing (make it with the tables_latency rule)")
    if table.empty:
        raise PlotError(f"{path}: no rows to plot")
    labels = [f"{s}+{m}" for s, m in zip(table["search_method"], table["selection_method"])]
    title = f"{table['dataset'].iloc[0]}: test accuracy vs latency" if "dataset" in table else "test accuracy vs latency"
    return plot_latency_accuracy(table["latency_ms"], 100.0 - table["test_error_mean"], labels,
                                 target=float(table["latency_target_ms"].iloc[0]), title=title)


# ---------------------------------------------------------------- benchmark ground truth


@dataclass
class GroundTruthRun:
    """One search's per-epoch ground truth (its magnitude pick's benchmark accuracy)."""

    search_method: str
    seed: int
    accuracy: np.ndarray  # (epochs,)


@dataclass
class GroundTruthPick:
    """A selection's final pick and its benchmark accuracy."""

    search_method: str
    selection_method: str
    seed: int
    accuracy: float


def read_ground_truth(metrics_paths: Sequence[str | Path], genotype_paths: Sequence[str | Path] = ()) -> tuple[list[GroundTruthRun], list[GroundTruthPick], str]:
    """The per-epoch records of nb201 searches and the benchmark accuracies their selections'
    genotype files carry; also the dataset (all must agree)."""
    runs, picks, datasets = [], [], set()
    for path in metrics_paths:
        metrics = artifacts.read_metrics(path)
        if metrics.kind != "search" or "benchmark_test_acc" not in metrics.epochs:
            raise PlotError(f"{path}: not a search with a per-epoch benchmark record (an nb201 search on a benchmark dataset)")
        dataset, seed = _origin(path, metrics.provenance)
        datasets.add(dataset)
        runs.append(GroundTruthRun(metrics.summary["search_method"], seed, np.asarray(metrics.epochs["benchmark_test_acc"], dtype=float)))
    for path in genotype_paths:
        record = artifacts.read_genotype(path)["provenance"]
        if "benchmark_test_acc" not in record:
            raise PlotError(f"{path}: the genotype carries no benchmark accuracy (not an nb201 cell on a benchmark dataset)")
        dataset, seed = _origin(path, record)
        datasets.add(dataset)
        picks.append(GroundTruthPick(record["search_method"], record["selection_method"], seed, float(record["benchmark_test_acc"])))
    if not runs and not picks:
        raise PlotError("ground truth: no search metrics or genotypes given")
    if len(datasets) > 1:
        raise PlotError(f"ground truth: the files come from different datasets {sorted(map(str, datasets))}")
    return runs, picks, datasets.pop()


def _origin(path, provenance: dict) -> tuple[str, int]:
    """The dataset and seed of the run a file's provenance (artifacts.provenance) records."""
    try:
        return str(provenance["params"]["dataset"]), int(provenance["seed"])
    except (KeyError, TypeError, ValueError):
        raise PlotError(f"{path}: its provenance does not name the run's dataset and seed") from None


def plot_ground_truth(runs: Sequence[GroundTruthRun], picks: Sequence[GroundTruthPick], dataset: str = "", best: float | None = None):
    """Benchmark accuracy against search epoch: per search method, the cell magnitude
    selection derives after each epoch (mean over seeds as a line, each seed faint); each
    selection's final pick as a marker after the last epoch (mean, whiskers min to max)."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(figsize=(10.0, 4.6))
    ax = fig.subplots()

    def seeds(count: int) -> str:
        return f"{count} seed{'s' if count != 1 else ''}"

    searches = sorted({r.search_method for r in runs} | {p.search_method for p in picks})
    colors = {name: f"C{i % 10}" for i, name in enumerate(searches)}
    last_epoch = max((len(r.accuracy) for r in runs), default=1)
    for name in searches:
        mine = [r for r in runs if r.search_method == name]
        if not mine:
            continue
        length = min(len(r.accuracy) for r in mine)
        x = np.arange(1, length + 1)
        for r in mine:
            ax.plot(np.arange(1, len(r.accuracy) + 1), r.accuracy, color=colors[name], lw=0.8, alpha=0.3)
        mean = np.mean([r.accuracy[:length] for r in mine], axis=0)
        ax.plot(x, mean, color=colors[name], lw=2, marker="o", ms=3, label=f"{name} + magnitude, per epoch ({seeds(len(mine))})")
    groups = sorted({(p.search_method, p.selection_method) for p in picks})
    markers = "s^vDP*Xhp<>"
    for index, (search, selection) in enumerate(groups):
        values = np.array([p.accuracy for p in picks if (p.search_method, p.selection_method) == (search, selection)])
        x = last_epoch + 0.6 + 0.35 * index
        ax.errorbar(
            [x], [values.mean()], yerr=[[values.mean() - values.min()], [values.max() - values.mean()]],
            color=colors[search], marker=markers[index % len(markers)], ms=8, capsize=3, lw=1.2, ls="none",
            label=f"{search} + {selection}: final pick ({seeds(len(values))})",
        )
    if best is not None:
        ax.axhline(best, color="grey", ls="--", lw=1, label=f"benchmark's best cell ({best:.2f})")
    ax.set_xlabel("search epoch")
    ax.set_ylabel(f"NAS-Bench-201 test accuracy (%), {dataset}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Ground truth of the selected cells (benchmark's 200-epoch accuracy)", fontsize=10)
    return fig


def ground_truth_figure(metrics_paths: Sequence[str | Path], genotype_paths: Sequence[str | Path] = ()):
    from pipeline.benchmarks import nb201

    runs, picks, dataset = read_ground_truth(metrics_paths, genotype_paths)
    best = float(getattr(nb201.best(nb201.DATASETS[dataset][1]), nb201.DATASETS[dataset][1])) if dataset in nb201.DATASETS else None
    return plot_ground_truth(runs, picks, dataset, best)
