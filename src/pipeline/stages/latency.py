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

import math
import platform
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from pipeline.errors import UserError
from pipeline import runtime
from pipeline.lazy import pd, torch
from pipeline.registry import Registry

BENCHMARKS = "benchmarks"
PIXEL1_TABLE = "pixel1_mobile_lut.yaml"
NB201_TABLE = "nb201_latency_ms.csv.gz"
NB201_DEVICES = (
    "1080ti_1", "1080ti_256", "1080ti_32", "2080ti_1", "2080ti_256", "2080ti_32", "essential_ph_1", "eyeriss",
    "fpga", "gold_6226", "gold_6240", "pixel2", "pixel3", "raspi4", "samsung_a50", "samsung_s7", "silver_4114",
    "silver_4210r", "titan_rtx_1", "titan_rtx_256", "titan_rtx_32", "titanx_1", "titanx_256", "titanx_32",
    "titanxp_1", "titanxp_256", "titanxp_32",
)  # fmt: skip
MOBILE_RESOLUTION = 224  # the resolution the Pixel-1 table was measured at
MOBILE_CLASSES = 1000


class LatencyError(UserError, ValueError):
    """A latency that cannot be had as configured (unknown table row, no table for a space)."""


def _benchmark_file(name: str):
    return resources.files("pipeline") / BENCHMARKS / name


# ---------------------------------------------------------------- ProxylessNAS per-layer table


@dataclass(frozen=True)
class LayerTable:
    """A per-layer latency table: key -> mean milliseconds."""

    name: str
    rows: dict[str, float]

    def ms(self, key: str) -> float:
        try:
            return self.rows[key]
        except KeyError:
            raise LatencyError(f"latency table {self.name!r} has no row for layer key {key!r}") from None


def load_layer_table(path: str | Path | None = None) -> LayerTable:
    """The ProxylessNAS table (``{key: {count, mean, var}}``); the vendored Pixel-1 one by default."""
    name = str(path) if path is not None else PIXEL1_TABLE
    text = Path(path).read_text() if path is not None else _benchmark_file(PIXEL1_TABLE).read_text()
    content = yaml.safe_load(text)
    if not isinstance(content, dict) or not content:
        raise LatencyError(f"latency table {name!r}: expected a mapping of layer keys")
    rows = {}
    for key, entry in content.items():
        mean = entry.get("mean") if isinstance(entry, dict) else None
        if not isinstance(mean, (int, float)) or not math.isfinite(mean) or mean < 0:
            raise LatencyError(f"latency table {name!r}: row {key!r} lacks a non-negative 'mean'")
        rows[str(key)] = float(mean)
    return LayerTable(name, rows)


@lru_cache(maxsize=1)
def pixel1_table() -> LayerTable:
    return load_layer_table()


def _hwc(size: int, channels: int) -> str:
    return f"{size}x{size}x{channels}"


def mbconv_key(size: int, c_in: int, c_out: int, expand: int, kernel: int, stride: int, residual: bool) -> str:
    """The table's key of an MBConv block whose input is ``size`` x ``size`` x ``c_in``."""
    return (
        f"expanded_conv-input:{_hwc(size, c_in)}-output:{_hwc(size // stride, c_out)}"
        f"-expand:{expand}-kernel:{kernel}-stride:{stride}-idskip:{int(residual)}"
    )


class ProxylessLatency:
    """lat(z) = fixed + sum over layers of the row of the layer's op (skip: 0), from a
    per-layer table, at the space's full-width 224x224 ImageNet shapes whatever width and
    resolution a search or retrain uses."""

    def __init__(self, space, table: LayerTable):
        from pipeline.nets.proxyless import SKIP, parse_mbconv

        widths = space.widths
        stem, first = widths["stem"], widths["first"]
        size = MOBILE_RESOLUTION // 2  # after the stride-2 stem
        shapes = space.layer_shapes(stem, "imagenet")
        self.table = table
        self.fixed_keys = [
            f"Conv-input:{_hwc(MOBILE_RESOLUTION, 3)}-output:{_hwc(size, stem)}",
            mbconv_key(size, stem, first, 1, 3, 1, False),
        ]
        self.layer_keys: list[list[str | None]] = []  # per layer, per candidate column
        for shape, names in zip(shapes, space.candidates("layers")):
            keys = []
            for name in names:
                if name == SKIP:
                    keys.append(None)
                else:
                    expand, kernel = parse_mbconv(name)
                    keys.append(mbconv_key(size, shape.c_in, shape.c_out, expand, kernel, shape.stride, shape.residual))
            self.layer_keys.append(keys)
            size //= shape.stride
        self.fixed_keys += [
            f"Conv_1-input:{_hwc(size, shapes[-1].c_out)}-output:{_hwc(size, widths['mix'])}",
            f"Logits-input:{_hwc(size, widths['mix'])}-output:{MOBILE_CLASSES}",
        ]
        self.candidates = space.candidates("layers")
        self.fixed_ms = sum(table.ms(key) for key in self.fixed_keys)
        # (layers, ops) matrix of the space's arch shape; skip and non-candidate columns 0.
        self.matrix = torch.zeros(space.arch_shape(), dtype=torch.float64)
        for layer, keys in enumerate(self.layer_keys):
            for column, key in enumerate(keys):
                if key is not None:
                    self.matrix[layer, column] = table.ms(key)

    def rows(self, ops: Sequence[str]) -> list[tuple[str, float]]:
        """(key, ms) of every row a network with these layer ops is made of, in network order."""
        if len(ops) != len(self.layer_keys):
            raise LatencyError(f"expected {len(self.layer_keys)} layer ops, got {len(ops)}")
        keys = self.fixed_keys[:2]
        for layer, (op, names) in enumerate(zip(ops, self.candidates)):
            if op not in names:
                raise LatencyError(f"op {op!r} is not a choice of layer {layer + 1}: {names}")
            key = self.layer_keys[layer][names.index(op)]
            if key is not None:
                keys.append(key)
        keys += self.fixed_keys[2:]
        return [(key, self.table.ms(key)) for key in keys]

    def network_ms(self, ops: Sequence[str]) -> float:
        return sum(ms for _, ms in self.rows(ops))

    def sample_ms(self, one_hot: torch.Tensor) -> torch.Tensor:
        """Latency of (..., layers, ops) one-hot samples; the table's sum, vectorised."""
        matrix = self.matrix.to(one_hot.device, one_hot.dtype)
        return self.fixed_ms + (one_hot * matrix).sum(dim=(-1, -2))

    def bounds_ms(self) -> tuple[float, float]:
        """The smallest and largest latency of any network in the space."""
        low = high = self.fixed_ms
        for keys in self.layer_keys:
            values = [0.0 if key is None else self.table.ms(key) for key in keys]
            low, high = low + min(values), high + max(values)
        return low, high


# Per-layer latency models (what a latency-constrained search needs), by space.
LAYER_MODELS: Registry[Callable[[Any], ProxylessLatency]] = Registry("per-layer latency table")
LAYER_MODELS.register("proxyless_mobile")(lambda space: ProxylessLatency(space, pixel1_table()))


def layer_model(space) -> ProxylessLatency:
    if space.name not in LAYER_MODELS:
        raise LatencyError(f"space {space.name!r} has no per-layer latency table (spaces with one: {', '.join(LAYER_MODELS.names())})")
    return LAYER_MODELS.get(space.name)(space)


# ---------------------------------------------------------------- lookup, one entry per space

LOOKUPS: Registry[Callable[[Any, dict, dict], dict]] = Registry("latency lookup table")


@LOOKUPS.register("proxyless_mobile")
def lookup_proxyless_mobile(space, cells: dict, options: dict) -> dict:
    rows = layer_model(space).rows(space.ops(cells))
    return {
        "latency_ms": sum(ms for _, ms in rows),
        "table": PIXEL1_TABLE,
        "table_device": "pixel1",
        "rows": [{"key": key, "ms": ms} for key, ms in rows],
    }


@lru_cache(maxsize=1)
def nb201_latency_table() -> pd.DataFrame:
    with _benchmark_file(NB201_TABLE).open("rb") as handle:
        table = pd.read_csv(handle, compression="gzip")
    return table.set_index("arch_str", drop=False)


@LOOKUPS.register("nb201")
def lookup_nb201(space, cells: dict, options: dict) -> dict:
    from pipeline.benchmarks import nb201

    device = options["nb201_device"]
    arch = nb201.format_arch(nb201.parse_arch(space.to_text(cells)))
    table = nb201_latency_table()
    if device not in table.columns:
        raise LatencyError(f"config key 'latency.lookup.nb201_device': {device!r} is not a column of {NB201_TABLE}")
    row = table.loc[arch]
    return {
        "latency_ms": float(row[device]),
        "table": NB201_TABLE,
        "table_device": device,
        "nb201_index": int(row["nb201_index"]),
        "arch": arch,
    }


def lookup_latency(space, cells: dict, options: dict) -> dict:
    if space.name not in LOOKUPS:
        raise LatencyError(
            f"config key 'latency.method': no lookup table for space {space.name!r} "
            f"(tables: {', '.join(LOOKUPS.names())}); use method 'measure'"
        )
    return LOOKUPS.get(space.name)(space, cells, options)


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
    from pipeline import artifacts
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
    from pipeline import artifacts

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
