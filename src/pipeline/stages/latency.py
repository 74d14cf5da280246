"""Latency stage: the latency of each selected architecture, and the target filter.

Two ways to get a latency (``latency.method``):

- ``measure``: the evaluation network the space builds (at the retrain channels and
  layers unless configured) is timed with ``torch.utils.benchmark`` on the configured
  device, for each configured batch size: warm-up runs, then the median of ``repeats``
  timed forward passes (inference mode, the run's AMP and memory format). The device's
  name, the threads and the raw times go into the artifact. The filter uses the first
  batch size.
- ``lookup``: a vendored table (``pipeline/benchmarks``, provenance in its README), chosen
  by the genotype's space. ``proxyless_mobile``: the ProxylessNAS Pixel-1 per-layer table;
  the network's latency is the sum of its rows (stem Conv, first block, each searchable
  layer's MBConv row, Conv_1, Logits; a skipped layer costs 0), always at the 224x224,
  full-width mobile shapes. ``nb201``: the cell's row of the NAS-Bench-201 latency table
  (HELP) for the configured device.

The filter keeps an architecture when its latency is at most ``latency.target_ms``.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline import artifacts, runtime
from pipeline.benchmarks.latency import LatencyError, lookup_latency

# ---------------------------------------------------------------- measured latency


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def measure_model(
    model: torch.nn.Module,
    image_shape: Sequence[int],
    batch_sizes: Sequence[int],
    device: torch.device,
    amp: str = "none",
    channels_last: bool = False,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 30,
) -> list[dict[str, Any]]:
    """Per batch size: median, IQR and every time (ms) of ``repeats`` timed forward passes."""
    from torch.utils import benchmark

    fmt = runtime.memory_format(channels_last)
    model = model.to(device, memory_format=fmt).eval()

    def forward(x):
        with torch.inference_mode(), runtime.autocast(device, amp):
            return model(x)

    results = []
    for batch_size in batch_sizes:
        x = torch.randn(batch_size, *image_shape, device=device).contiguous(memory_format=fmt)
        timer = benchmark.Timer(
            stmt="forward(x)",
            globals={"forward": forward, "x": x},
            num_threads=threads,
            label="latency",
            description=f"batch {batch_size}",
        )
        if warmup:
            timer.timeit(warmup)
        # One timed pass per repeat (the timer synchronises the accelerator); the median
        # of the repeats is robust to the odd slow pass.
        measurement = benchmark.Measurement.merge([timer.timeit(1) for _ in range(repeats)])[0]
        times = [t * 1e3 for t in measurement.times]
        results.append(
            {
                "batch_size": int(batch_size),
                "median_ms": measurement.median * 1e3,
                "iqr_ms": measurement.iqr * 1e3,
                "mean_ms": measurement.mean * 1e3,
                "times_ms": times,
            }
        )
    return results


def measure_genotype(space, cells: dict, options: dict, retrain: dict, rt: dict, num_classes: int, image_size: int) -> dict:
    device = runtime.resolve_device(options["device"] or rt["device"])
    channels = options["channels"] or retrain["init_channels"]
    layers = options["layers"] or retrain["layers"]
    size = options["input_size"] or image_size
    try:
        model = space.build_network(cells, channels, layers, num_classes, auxiliary=False, setting=options["setting"])
    except ValueError as exc:
        raise LatencyError(f"latency.measure: cannot build the {space.name} network: {exc}") from None
    per_batch = measure_model(
        model, (3, size, size), options["batch_sizes"], device, rt["amp"], rt["channels_last"],
        options["threads"], options["warmup"], options["repeats"],
    )  # fmt: skip
    return {
        "latency_ms": per_batch[0]["median_ms"],
        "batch_size": per_batch[0]["batch_size"],
        "device": str(device),
        "device_name": device_name(device),
        "threads": options["threads"],
        "amp": rt["amp"] if device.type == "cuda" else "none",
        "channels_last": rt["channels_last"],
        "input_shape": [3, size, size],
        "channels": channels,
        "layers": layers,
        "num_classes": num_classes,
        "setting": options["setting"],
        "per_batch": per_batch,
    }


# ---------------------------------------------------------------- the stage


def run_latency(params: dict[str, Any], genotype_path: str | Path, out: str | Path, data_path: str | Path | None = None) -> dict:
    """The latency of one selected architecture, written as a latency artifact."""
    from pipeline.spaces import get_space

    genotype = artifacts.read_genotype(genotype_path)
    space = get_space(genotype["space"])
    method = params["method"]
    if method == "lookup":
        detail = lookup_latency(space, genotype["cells"], params["lookup"])
    else:
        if data_path is None:
            raise LatencyError("--data: required with latency method 'measure' (classes and image size)")
        tensors, meta = artifacts.load_dataset(data_path)
        torch.manual_seed(params["seed"])  # the random input batches
        detail = measure_genotype(
            space, genotype["cells"], params["measure"], params["retrain"], params["runtime"],
            meta["num_classes"], tensors["train_images"].shape[-1],
        )  # fmt: skip
    gp = genotype["provenance"]
    record = {
        "dataset": params["dataset"],
        "space": space.name,
        "genotype_file": str(genotype_path),
        "genotype_sha256": artifacts.sha256_file(genotype_path),
        "search_method": gp.get("search_method"),
        "selection_method": gp.get("selection_method"),
        "seed": params["seed"],
        "method": method,
        "source": _source(method, detail),
        "latency_ms": float(detail.pop("latency_ms")),
        "detail": detail,
        "provenance": artifacts.provenance(params, seed=params["seed"], genotype_file=str(genotype_path)),
    }
    artifacts.write_latency(out, record)
    return record


def _source(method: str, detail: dict) -> str:
    """Where the figure comes from, in a few words for the tables."""
    if method == "lookup":
        return f"lookup {detail['table_device']}"
    return f"measure {detail['device_name']} batch {detail['batch_size']}"


def passes(latency_ms: float, target_ms: float) -> bool:
    """An architecture passes when its latency is at most the target (equal passes)."""
    return latency_ms <= target_ms


FILTER_KEYS = (
    "latency_file", "genotype_file", "genotype_sha256", "space", "search_method", "selection_method", "seed", "method",
    "source", "latency_ms",
)  # fmt: skip


def filter_results(records: Sequence[dict], target_ms: float) -> list[dict]:
    """One entry per latency record: who it is, its latency and whether it passed."""
    return [{key: record[key] for key in FILTER_KEYS} | {"passed": passes(record["latency_ms"], target_ms)} for record in records]


def run_latency_filter(params: dict[str, Any], latency_paths: Sequence[str | Path], out: str | Path) -> dict:
    """Keep the architectures within ``target_ms``; write the kept and dropped lists."""

    if not latency_paths:
        raise artifacts.ArtifactError("latency-filter: no latency files given")
    records = []
    for path in latency_paths:
        record = artifacts.read_latency(path)
        if record["dataset"] != params["dataset"]:
            raise artifacts.ArtifactError(f"{path}: dataset {record['dataset']!r}, expected {params['dataset']!r}")
        records.append({**record, "latency_file": str(path)})
    results = filter_results(records, params["target_ms"])
    summary = {
        "dataset": params["dataset"],
        "target_ms": params["target_ms"],
        "results": results,
        "kept": [r["genotype_file"] for r in results if r["passed"]],
        "dropped": [r["genotype_file"] for r in results if not r["passed"]],
        "provenance": artifacts.provenance(params),
    }
    artifacts.write_latency_filter(out, summary)
    return summary
