"""NAS-Bench-201 architecture strings and the benchmark's accuracy lookup.

A cell has nodes 0..3; node j sums one op applied to each earlier node. The string form is
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (node 1's edge, then node 2's, then node 3's).
The lookup reads the tables vendored in ``pipeline/benchmarks`` (see its README).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EXPECTED_FORM = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2| with op one of " + ", ".join(NB201_OPS)
_NODE = re.compile(r"^\|(?:[a-z0-9_]+~\d\|)+$")


class NB201Error(ValueError):
    pass


def parse_arch(text: str) -> list[tuple[str, int, int]]:
    """(op, input, node) of the 6 edges; rejects anything but the canonical string."""
    nodes = text.strip().split("+") if isinstance(text, str) else []
    edges = []
    if len(nodes) != 3:
        raise NB201Error(f"NAS-Bench-201 string {text!r} has {len(nodes)} node groups; expected {EXPECTED_FORM}")
    for node, group in enumerate(nodes, start=1):
        if not _NODE.match(group):
            raise NB201Error(f"NAS-Bench-201 node group {group!r} is malformed; expected {EXPECTED_FORM}")
        items = group.strip("|").split("|")
        if len(items) != node:
            raise NB201Error(f"NAS-Bench-201 node {node} needs {node} inputs, got {group!r}; expected {EXPECTED_FORM}")
        for source, item in enumerate(items):
            op, _, index = item.partition("~")
            if op not in NB201_OPS or int(index) != source:
                raise NB201Error(f"NAS-Bench-201 edge {item!r} of node {node} is invalid; expected {EXPECTED_FORM}")
            edges.append((op, source, node))
    return edges


def format_arch(edges: list[tuple[str, int, int]]) -> str:
    groups = []
    for node in (1, 2, 3):
        groups.append("|" + "|".join(f"{op}~{source}" for op, source, target in edges if target == node) + "|")
    return "+".join(groups)


@dataclass(frozen=True)
class NB201Result:
    index: int
    arch: str
    cifar10_test_200ep: float
    cifar100_test_200ep: float
    imagenet16_test_200ep: float
    cifar10_valid_12ep: float
    cifar10_test_12ep: float
    cifar100_valid_12ep: float
    cifar100_test_12ep: float
    imagenet16_valid_12ep: float
    imagenet16_test_12ep: float


@lru_cache(maxsize=4)
def _table(path_200ep: str | None, path_12ep: str | None) -> pd.DataFrame:
    import pandas as pd  # only where a table is read: the space's declaration needs none

    files = resources.files("pipeline") / "benchmarks"
    full = pd.read_csv(Path(path_200ep) if path_200ep else files / "nb201_test_acc_200ep.csv.gz")
    short = pd.read_csv(Path(path_12ep) if path_12ep else files / "nb201_valid_test_acc_12ep.csv.gz", index_col=0)
    if not (full["ArchitectureString"].values == short["cellstr"].values).all():
        raise NB201Error("the 200-epoch and 12-epoch NAS-Bench-201 tables list cells in different orders")
    table = pd.DataFrame(
        {
            "arch": full["ArchitectureString"],
            "cifar10_test_200ep": full["CIFAR10TestAccuracy200Epochs"],
            "cifar100_test_200ep": full["CIFAR100TestAccuracy200Epochs"],
            "imagenet16_test_200ep": full["ImageNetTestAccuracy200Epochs"],
            "cifar10_valid_12ep": short["cifar10-val"].values,
            "cifar10_test_12ep": short["cifar10-test"].values,
            "cifar100_valid_12ep": short["cifar100-val"].values,
            "cifar100_test_12ep": short["cifar100-test"].values,
            "imagenet16_valid_12ep": short["imagenet-val"].values,
            "imagenet16_test_12ep": short["imagenet-test"].values,
        }
    )
    return table.reset_index(names="index").set_index("arch", drop=False)


def lookup(arch: str, path_200ep: str | None = None, path_12ep: str | None = None) -> NB201Result:
    """Benchmark accuracies (percent) of a cell given as its NAS-Bench-201 string."""
    canonical = format_arch(parse_arch(arch))
    row = _table(path_200ep, path_12ep).loc[canonical]
    return NB201Result(**{field: row[field] for field in NB201Result.__dataclass_fields__})


def best(column: str = "cifar10_test_200ep", path_200ep: str | None = None, path_12ep: str | None = None) -> NB201Result:
    table = _table(path_200ep, path_12ep)
    return lookup(table.loc[table[column].idxmax(), "arch"], path_200ep, path_12ep)


# Dataset names of this pipeline -> (NATS-Bench dataset, result field of the vendored table).
DATASETS = {
    "cifar10": ("cifar10", "cifar10_test_200ep"),
    "cifar100": ("cifar100", "cifar100_test_200ep"),
    "imagenet16": ("ImageNet16-120", "imagenet16_test_200ep"),
}


def test_accuracy(arch: str, dataset: str, official_path: str | None = None) -> float:
    """200-epoch test accuracy (percent) of a cell on ``dataset``: from an official NATS-Bench /
    NAS-Bench-201 file when ``official_path`` is given (needs the ``nats_bench`` package),
    else from the vendored table."""
    if dataset not in DATASETS:
        raise NB201Error(f"NAS-Bench-201 has no results for dataset {dataset!r}; known: {', '.join(DATASETS)}")
    canonical = format_arch(parse_arch(arch))
    if official_path is None:
        return float(getattr(lookup(canonical), DATASETS[dataset][1]))
    api = _official_api(official_path)
    index = api.query_index_by_arch(canonical)
    if index < 0:
        raise NB201Error(f"{official_path}: no entry for cell {canonical}")
    info = api.get_more_info(index, DATASETS[dataset][0], hp="200", is_random=False)
    return float(info["test-accuracy"])


@lru_cache(maxsize=2)
def _official_api(path: str):
    try:
        from nats_bench import create
    except ImportError:
        raise NB201Error(
            f"benchmarks.nb201.path: reading {path} needs the nats_bench package (pip install nats_bench)"
        ) from None
    if not Path(path).exists():
        raise NB201Error(f"benchmarks.nb201.path: {path} does not exist")
    return create(path, "tss", fast_mode=True, verbose=False)
