"""Latency tables and their lookups: the ProxylessNAS Pixel-1 per-layer table (also the
differentiable latency model of UNAS's latency loss) and the NAS-Bench-201 latency table
(HELP), one lookup per space, registered by the space's name. Provenance of the tables:
``pipeline/benchmarks/README.md``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import UserError
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
