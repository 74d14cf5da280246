"""The artifact contracts: supernet/retrain checkpoints, genotype JSON, metrics HDF5, tables.

Every writer goes through a temp file in the target folder plus ``os.replace`` so that a
reader never sees half a file, and every reader validates the format before returning.
The formats are documented in docs/artifacts.md.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

import pipeline
from pipeline.errors import UserError

CHECKPOINT_FORMAT = "pipeline.checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_KINDS = {
    "supernet": ("epoch", "model", "optimizer", "scheduler", "method", "arch_weights", "history"),
    "retrain": ("epoch", "model", "optimizer", "scheduler", "history"),
    # network: what rebuilds the model (init_channels, layers, num_classes, setting, auxiliary)
    "transfer": ("epoch", "model", "optimizer", "scheduler", "history", "network"),
    # A selection's resume point (e.g. DARTS-PT after each decision step).
    "select": ("step", "model", "method", "optimizer", "scheduler", "projection", "record"),
}
GENOTYPE_FORMAT = "pipeline.genotype"
GENOTYPE_VERSION = 1
METRICS_FORMAT = "pipeline.metrics"
METRICS_VERSION = 1
DECISIONS_FORMAT = "pipeline.decisions"
DECISIONS_VERSION = 1
DATASET_FORMAT = "pipeline.dataset"
DATASET_VERSION = 1
LATENCY_FORMAT = "pipeline.stages.latency"
LATENCY_FILTER_FORMAT = "pipeline.latency_filter"
LATENCY_VERSION = 1
TABLE_COLUMNS = (
    "dataset",
    "space",
    "search_method",
    "selection_method",
    "seeds",
    "test_error",
    "test_error_mean",
    "test_error_std",
    "test_error_best",
    "params_m",
    "search_cost",
    "search_cost_unit",
    "device",
    "benchmark_test_acc",
    "benchmark_test_acc_mean",
    "benchmark_test_acc_std",
)
TRANSFER_TABLE_COLUMNS = (
    "dataset",
    "source_dataset",
    "space",
    "search_method",
    "selection_method",
    "seeds",
    "top1_error",
    "top1_error_mean",
    "top1_error_std",
    "top5_error",
    "top5_error_mean",
    "top5_error_std",
    "init_channels",
    "params_m",
    "multiply_adds_m",
    "search_cost",
    "search_cost_unit",
    "device",
)
TABLE_KINDS = {"retrain": TABLE_COLUMNS, "transfer": TRANSFER_TABLE_COLUMNS}
# Written after TABLE_COLUMNS when the table is made with latency results.
LATENCY_COLUMNS = ("latency_ms", "latency_target_ms", "latency_passed", "latency_passed_seeds", "latency_source")


_UMASK = os.umask(0)
os.umask(_UMASK)


class ArtifactError(UserError, ValueError):
    """A file that is missing or does not follow its format; the message names the file."""


# ---------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` only if the body succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are shared like any output
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def check_writable(path: str | os.PathLike, directory: bool = False) -> None:
    """Fail early, with one line naming ``path``, when an output cannot be written there:
    a folder on the way is a file, the file system refuses (read-only, /proc, permissions).
    Probes by creating a temp file where the output will go; folders it had to create for
    that are removed again, so a refused output leaves nothing behind."""
    target = Path(path)
    if directory and target.exists() and not target.is_dir():
        raise ArtifactError(f"{target}: exists and is not a directory")
    if not directory and target.is_dir():
        raise ArtifactError(f"{target}: is a directory, expected a file path")
    folder = target if directory else target.parent
    missing = []
    existing = folder
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise ArtifactError(f"{target}: cannot create it, {existing} is not a directory")
    created: list[Path] = []
    where = folder
    try:
        for step in reversed(missing):
            where = step.parent
            try:
                step.mkdir()
            except FileExistsError:
                if not step.is_dir():
                    raise
                continue  # made meanwhile by another process: not ours to remove
            created.append(step)
        where = folder
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ArtifactError(f"{target}: cannot write into {where} ({exc.strerror or exc})") from None
    finally:
        for step in reversed(created):
            with contextlib.suppress(OSError):
                step.rmdir()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- provenance


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Git commit of the source tree (with '+dirty' for local edits), else the package version.

    Computed once per process: the code that runs is the code loaded at start."""
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=src, capture_output=True, text=True
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return f"pipeline-{pipeline.__version__}"


def provenance(params: dict[str, Any], seed: int | None = None, **extra: Any) -> dict[str, Any]:
    record = {
        "code_version": code_version(),
        "package_version": pipeline.__version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        # The environment the job ran in: on a cluster, the shared venv (README).
        "python_executable": sys.executable,
        "host": platform.node(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "params": params,
    }
    record.update(extra)
    return record


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | os.PathLike, kind: str, payload: dict[str, Any]) -> None:
    """Write a checkpoint of ``kind`` (a key of CHECKPOINT_KINDS); ``payload`` holds its fields."""
    missing = [key for key in CHECKPOINT_KINDS[kind] if key not in payload]
    if missing:
        raise ArtifactError(f"{path}: {kind} checkpoint lacks {', '.join(missing)}")
    record = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": kind, **payload}
    buffer = io.BytesIO()
    torch.save(record, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, kind: str, map_location: Any = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint file not found")
    try:
        record = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        reason = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise ArtifactError(
            f"{path}: not a readable checkpoint, truncated or corrupt ({exc.__class__.__name__}: {reason})"
        ) from None
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"{path}: field 'format' is not {CHECKPOINT_FORMAT!r}")
    if record.get("version") != CHECKPOINT_VERSION:
        raise ArtifactError(f"{path}: field 'version' is {record.get('version')!r}, expected {CHECKPOINT_VERSION}")
    if record.get("kind") != kind:
        raise ArtifactError(f"{path}: field 'kind' is {record.get('kind')!r}, expected {kind!r}")
    missing = [key for key in CHECKPOINT_KINDS[kind] if key not in record]
    if missing:
        raise ArtifactError(f"{path}: checkpoint lacks field {missing[0]!r}")
    return record


def rng_state() -> dict[str, Any]:
    import random

    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- prepared datasets


def save_dataset(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Prepared dataset: uint8 images (N,3,H,W) and int64 labels per split, plus a checksum."""
    record = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "tensors": tensors,
        "checksum": _tensor_checksum(tensors),
        "meta": meta,
    }
    buffer = io.BytesIO()
    torch.save(record, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_dataset(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: dataset file not found")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(f"{path}: not a readable dataset ({exc.__class__.__name__})") from None
    if not isinstance(record, dict) or record.get("format") != DATASET_FORMAT:
        raise ArtifactError(f"{path}: field 'format' is not {DATASET_FORMAT!r}")
    if record.get("version") != DATASET_VERSION:
        raise ArtifactError(f"{path}: field 'version' is {record.get('version')!r}, expected {DATASET_VERSION}")
    for key in ("tensors", "checksum", "meta"):
        if key not in record:
            raise ArtifactError(f"{path}: field {key!r} is missing")
    tensors = record["tensors"]
    for split in ("train", "test"):
        images, labels = tensors.get(f"{split}_images"), tensors.get(f"{split}_labels")
        if images is None or labels is None:
            raise ArtifactError(f"{path}: split {split!r} is missing")
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ArtifactError(f"{path}: field '{split}_images' must be uint8 (N,C,H,W) matching its labels")
    if _tensor_checksum(tensors) != record["checksum"]:
        raise ArtifactError(f"{path}: checksum mismatch, the file is corrupt")
    return tensors, record["meta"]


def _tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- genotype JSON


def write_genotype(path: str | os.PathLike, genotype: dict[str, Any], provenance_record: dict[str, Any]) -> None:
    """``genotype`` is ``{"space": name, "cells": {...}}`` as made by the space's ``to_json``."""
    record = {"format": GENOTYPE_FORMAT, "version": GENOTYPE_VERSION, **genotype, "provenance": provenance_record}
    validate_genotype(record, str(path))
    write_bytes_atomic(path, (json.dumps(record, indent=2, sort_keys=False) + "\n").encode())


def read_genotype(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: genotype file not found")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    validate_genotype(record, str(path))
    return record


def validate_genotype(record: Any, where: str) -> None:
    from pipeline.registry import registries

    (spaces,) = registries("spaces")  # the space named in the record, looked up by name

    if not isinstance(record, dict):
        raise ArtifactError(f"{where}: a genotype is a JSON object")
    if record.get("format") != GENOTYPE_FORMAT:
        raise ArtifactError(f"{where}: field 'format' is not {GENOTYPE_FORMAT!r}")
    if record.get("version") != GENOTYPE_VERSION:
        raise ArtifactError(f"{where}: field 'version' is {record.get('version')!r}, expected {GENOTYPE_VERSION}")
    for key in ("space", "cells", "provenance"):
        if key not in record:
            raise ArtifactError(f"{where}: field {key!r} is missing")
    try:
        space = spaces.get_space(record["space"])
        space.validate_genotype(record["cells"])
    except (KeyError, ValueError) as exc:
        raise ArtifactError(f"{where}: {exc}") from None


# ---------------------------------------------------------------- metrics HDF5


@dataclass
class Metrics:
    kind: str
    epochs: dict[str, np.ndarray]
    summary: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def num_epochs(self) -> int:
        return len(self.epochs["epoch"]) if "epoch" in self.epochs else 0


METRICS_REQUIRED = {
    "search": ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "wall_time"),
    "retrain": ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "wall_time"),
    "transfer": ("epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "wall_time"),
}


def write_metrics(path: str | os.PathLike, metrics: Metrics) -> None:
    """One HDF5 file: root attrs (format, kind, summary, provenance), group 'epochs'."""
    _check_metrics(metrics, str(path))
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["format"] = METRICS_FORMAT
            handle.attrs["version"] = METRICS_VERSION
            handle.attrs["kind"] = metrics.kind
            handle.attrs["provenance"] = json.dumps(metrics.provenance)
            summary = handle.create_group("summary")
            for key, value in metrics.summary.items():
                summary.attrs[key] = json.dumps(value)
            group = handle.create_group("epochs")
            for key, values in metrics.epochs.items():
                group.create_dataset(key, data=np.asarray(values))


def read_metrics(path: str | os.PathLike) -> Metrics:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: metrics file not found")
    try:
        with h5py.File(path, "r") as handle:
            if handle.attrs.get("format") != METRICS_FORMAT:
                raise ArtifactError(f"{path}: attribute 'format' is not {METRICS_FORMAT!r}")
            if handle.attrs.get("version") != METRICS_VERSION:
                raise ArtifactError(f"{path}: attribute 'version' is not {METRICS_VERSION}")
            for item in ("kind", "provenance"):
                if item not in handle.attrs:
                    raise ArtifactError(f"{path}: attribute {item!r} is missing")
            for group in ("epochs", "summary"):
                if not isinstance(handle.get(group), h5py.Group):
                    raise ArtifactError(f"{path}: group {group!r} is missing")
            metrics = Metrics(
                kind=str(handle.attrs["kind"]),
                epochs={key: handle["epochs"][key][()] for key in handle["epochs"]},
                summary={key: json.loads(value) for key, value in handle["summary"].attrs.items()},
                provenance=json.loads(handle.attrs["provenance"]),
            )
    except OSError as exc:
        raise ArtifactError(f"{path}: not a readable HDF5 file ({exc})") from None
    except json.JSONDecodeError:
        raise ArtifactError(f"{path}: a summary or provenance attribute is not valid JSON") from None
    _check_metrics(metrics, str(path))
    return metrics


def _check_metrics(metrics: Metrics, where: str) -> None:
    if metrics.kind not in METRICS_REQUIRED:
        raise ArtifactError(f"{where}: metrics kind {metrics.kind!r} is not one of {sorted(METRICS_REQUIRED)}")
    for key in METRICS_REQUIRED[metrics.kind]:
        if key not in metrics.epochs:
            raise ArtifactError(f"{where}: metrics lack the per-epoch series {key!r}")
    lengths = {key: len(values) for key, values in metrics.epochs.items()}
    if len(set(lengths.values())) > 1:
        raise ArtifactError(f"{where}: per-epoch series differ in length: {lengths}")


# ---------------------------------------------------------------- latency JSON

# field -> accepted types of a latency result and of the filter's summary
LATENCY_FIELDS = {
    "dataset": (str,),
    "space": (str,),
    "genotype_file": (str,),
    "genotype_sha256": (str,),
    "search_method": (str, type(None)),
    "selection_method": (str, type(None)),
    "seed": (int,),
    "method": (str,),
    "source": (str,),
    "latency_ms": (int, float),
    "detail": (dict,),
    "provenance": (dict,),
}
LATENCY_FILTER_FIELDS = {
    "dataset": (str,),
    "target_ms": (int, float),
    "results": (list,),
    "kept": (list,),
    "dropped": (list,),
    "provenance": (dict,),
}
LATENCY_RESULT_FIELDS = {
    "latency_file": (str,),
    "genotype_file": (str,),
    "genotype_sha256": (str,),
    "seed": (int,),
    "source": (str,),
    "latency_ms": (int, float),
    "passed": (bool,),
}


def write_latency(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """One architecture's latency (``latency_ms``, the figure the filter uses) and how it was had."""
    _write_json(path, LATENCY_FORMAT, record, LATENCY_FIELDS)


def read_latency(path: str | os.PathLike) -> dict[str, Any]:
    return _read_json(path, LATENCY_FORMAT, LATENCY_FIELDS, "latency")


def write_latency_filter(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """The filter's outcome: ``target_ms``, per architecture its latency and ``passed``, kept/dropped."""
    _write_json(path, LATENCY_FILTER_FORMAT, record, LATENCY_FILTER_FIELDS)


def read_latency_filter(path: str | os.PathLike) -> dict[str, Any]:
    return _read_json(path, LATENCY_FILTER_FORMAT, LATENCY_FILTER_FIELDS, "latency filter")


def _write_json(path, fmt: str, record: dict[str, Any], fields: dict[str, tuple]) -> None:
    full = {"format": fmt, "version": LATENCY_VERSION, **record}
    _check_json(full, str(path), fmt, fields)
    write_bytes_atomic(path, (json.dumps(full, indent=2) + "\n").encode())


def _read_json(path, fmt: str, fields: dict[str, tuple], noun: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: {noun} file not found")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None
    _check_json(record, str(path), fmt, fields)
    return record


def _check_json(record: Any, where: str, fmt: str, fields: dict[str, tuple]) -> None:
    if not isinstance(record, dict) or record.get("format") != fmt:
        raise ArtifactError(f"{where}: field 'format' is not {fmt!r}")
    if record.get("version") != LATENCY_VERSION:
        raise ArtifactError(f"{where}: field 'version' is {record.get('version')!r}, expected {LATENCY_VERSION}")
    _check_fields(record, where, fields)
    if "latency_ms" in fields and not (np.isfinite(record["latency_ms"]) and record["latency_ms"] >= 0):
        raise ArtifactError(f"{where}: field 'latency_ms' must be a finite, non-negative number")
    for index, entry in enumerate(record.get("results", []) if fmt == LATENCY_FILTER_FORMAT else []):
        if not isinstance(entry, dict):
            raise ArtifactError(f"{where}: field 'results[{index}]' must be an object")
        _check_fields(entry, f"{where}: results[{index}]", LATENCY_RESULT_FIELDS, prefix=f"results[{index}].")


def _check_fields(record: dict, where: str, fields: dict[str, tuple], prefix: str = "") -> None:
    for key, types in fields.items():
        if key not in record:
            raise ArtifactError(f"{where}: field '{prefix}{key}' is missing")
        value = record[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ArtifactError(f"{where}: field '{prefix}{key}' has type {type(value).__name__}")


# ---------------------------------------------------------------- selection decision records

# Column -> kind ('i' integer, 'f' float, 's' string) of the two tables of a decisions file.
DECISION_COLUMNS = {
    "step": "i",
    "cell_type": "s",
    "kind": "s",
    "node": "i",
    "input": "i",
    "edge": "i",
    "criterion": "s",
    "action": "s",
    "choice": "s",
    "valid_acc_after": "f",
    "valid_loss_after": "f",
}
CANDIDATE_COLUMNS = {"decision": "i", "name": "s", "input": "i", "score": "f", "weight": "f"}
# What a decision row's ``kind`` may be, and what its candidates are.
DECISION_KINDS = {
    "op": "an edge's operation; candidates: the edge's ops",
    "edge": "an edge dropped by topology selection; candidates: the node's remaining edges",
    "branch": "one of a node's two branches (UNAS); candidates: every (input, op) pair",
    "sample": "an architecture among samples (train-free); candidates: the samples' genotype texts",
}


@dataclass
class Decisions:
    """Why a selection method chose what it chose: one row per decision, one per candidate.

    ``decisions`` and ``candidates`` map column names (``DECISION_COLUMNS``,
    ``CANDIDATE_COLUMNS``) to equal-length arrays; ``candidates["decision"]`` indexes the
    decision rows. The layout is documented in docs/artifacts.md."""

    method: str
    algorithm: str
    decisions: dict[str, np.ndarray]
    candidates: dict[str, np.ndarray]
    summary: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def num_decisions(self) -> int:
        return len(self.decisions["step"])


def _column(values: Any, kind: str) -> np.ndarray:
    if kind == "s":
        return np.array([str(v) for v in values], dtype=object)
    return np.asarray(values, dtype=np.int64 if kind == "i" else np.float64).reshape(-1)


def write_decisions(path: str | os.PathLike, record: Decisions) -> None:
    """One HDF5 file: root attrs (format, version, method, algorithm, provenance), group
    'summary' (one JSON attr per entry), groups 'decisions' and 'candidates' (one dataset per column)."""
    record = _checked_decisions(record, str(path))
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["format"] = DECISIONS_FORMAT
            handle.attrs["version"] = DECISIONS_VERSION
            handle.attrs["method"] = record.method
            handle.attrs["algorithm"] = record.algorithm
            handle.attrs["provenance"] = json.dumps(record.provenance)
            summary = handle.create_group("summary")
            for key, value in record.summary.items():
                summary.attrs[key] = json.dumps(value)
            for group_name, columns, table in (
                ("decisions", DECISION_COLUMNS, record.decisions),
                ("candidates", CANDIDATE_COLUMNS, record.candidates),
            ):
                group = handle.create_group(group_name)
                for name, kind in columns.items():
                    data = table[name]
                    dtype = h5py.string_dtype() if kind == "s" else data.dtype
                    group.create_dataset(name, data=data, dtype=dtype)


def read_decisions(path: str | os.PathLike) -> Decisions:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: decisions file not found")
    try:
        with h5py.File(path, "r") as handle:
            if handle.attrs.get("format") != DECISIONS_FORMAT:
                raise ArtifactError(f"{path}: attribute 'format' is not {DECISIONS_FORMAT!r}")
            if handle.attrs.get("version") != DECISIONS_VERSION:
                raise ArtifactError(f"{path}: attribute 'version' is not {DECISIONS_VERSION}")
            for item in ("method", "algorithm", "provenance"):
                if item not in handle.attrs:
                    raise ArtifactError(f"{path}: attribute {item!r} is missing")
            tables = {}
            for group_name, columns in (("decisions", DECISION_COLUMNS), ("candidates", CANDIDATE_COLUMNS)):
                group = handle.get(group_name)
                if not isinstance(group, h5py.Group):
                    raise ArtifactError(f"{path}: group {group_name!r} is missing")
                table = {}
                for name, kind in columns.items():
                    if name not in group:
                        raise ArtifactError(f"{path}: column '{group_name}/{name}' is missing")
                    data = group[name]
                    table[name] = np.array(data.asstr()[()], dtype=object) if kind == "s" else data[()]
                tables[group_name] = table
            summary_group = handle.get("summary")
            summary = {key: json.loads(value) for key, value in summary_group.attrs.items()} if summary_group else {}
            record = Decisions(
                method=str(handle.attrs["method"]),
                algorithm=str(handle.attrs["algorithm"]),
                decisions=tables["decisions"],
                candidates=tables["candidates"],
                summary=summary,
                provenance=json.loads(handle.attrs["provenance"]),
            )
    except OSError as exc:
        raise ArtifactError(f"{path}: not a readable HDF5 file ({exc})") from None
    except json.JSONDecodeError:
        raise ArtifactError(f"{path}: a summary or provenance attribute is not valid JSON") from None
    except TypeError:  # a string column stored as numbers or vice versa
        raise ArtifactError(f"{path}: a column has the wrong type") from None
    return _checked_decisions(record, str(path))


def _checked_decisions(record: Decisions, where: str) -> Decisions:
    """Columns complete, typed and of equal length; candidates point at existing decisions."""
    tables = {}
    for group_name, columns, table in (
        ("decisions", DECISION_COLUMNS, record.decisions),
        ("candidates", CANDIDATE_COLUMNS, record.candidates),
    ):
        missing = [name for name in columns if name not in table]
        if missing:
            raise ArtifactError(f"{where}: column '{group_name}/{missing[0]}' is missing")
        try:
            typed = {name: _column(table[name], kind) for name, kind in columns.items()}
        except (TypeError, ValueError):
            raise ArtifactError(f"{where}: a column of {group_name!r} has the wrong type") from None
        lengths = {name: len(values) for name, values in typed.items()}
        if len(set(lengths.values())) > 1:
            raise ArtifactError(f"{where}: columns of {group_name!r} differ in length: {lengths}")
        tables[group_name] = typed
    decisions, candidates = tables["decisions"], tables["candidates"]
    index = candidates["decision"]
    if len(index) and (index.min() < 0 or index.max() >= len(decisions["step"])):
        raise ArtifactError(f"{where}: column 'candidates/decision' points past the decisions")
    unknown = sorted(set(decisions["kind"]) - set(DECISION_KINDS))
    if unknown:
        raise ArtifactError(f"{where}: column 'decisions/kind' holds {unknown[0]!r}, not one of {sorted(DECISION_KINDS)}")
    offered = set(zip(index.tolist(), candidates["name"].tolist(), candidates["input"].tolist()))
    for row, (choice, source) in enumerate(zip(decisions["choice"], decisions["input"].tolist())):
        if (row, choice, source) not in offered:
            raise ArtifactError(f"{where}: decision {row}: its choice {choice!r} (input {source}) is none of its candidates")
    return Decisions(record.method, record.algorithm, tables["decisions"], tables["candidates"], dict(record.summary), dict(record.provenance))


# ---------------------------------------------------------------- tables


def write_table(path: str | os.PathLike, table: pd.DataFrame, kind: str = "retrain") -> None:
    """A results table of ``kind`` ('retrain': CIFAR-style, 'transfer': ImageNet-style)."""
    missing = [column for column in TABLE_KINDS[kind] if column not in table.columns]
    if missing:
        raise ArtifactError(f"{path}: table lacks column {missing[0]!r}")
    columns = list(TABLE_KINDS[kind]) + [column for column in LATENCY_COLUMNS if column in table.columns]
    with atomic_path(path) as tmp:
        table.loc[:, columns].to_csv(tmp, index=False)


TABLE_METRICS = (
    "test_error_mean", "test_error_std", "test_error_best", "params_m", "search_cost", "benchmark_test_acc_mean", "benchmark_test_acc_std",
)


def write_table_metrics(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """The table's numbers as JSON for `dvc metrics`: space > search > selection > cost unit
    (a row's empty numbers, e.g. the test error of a benchmark-judged cell, left out)."""
    nested: dict = {}
    for row in table.to_dict("records"):
        keys = (row["space"], row["search_method"], row["selection_method"], row["search_cost_unit"])
        node = nested
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = {name: float(row[name]) for name in TABLE_METRICS if not pd.isna(row[name])}
    write_bytes_atomic(path, (json.dumps(nested, indent=2, sort_keys=True) + "\n").encode())


def read_table(path: str | os.PathLike, kind: str = "retrain") -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: table file not found")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not a readable CSV table ({exc.__class__.__name__})") from None
    missing = [column for column in TABLE_KINDS[kind] if column not in table.columns]
    if missing:
        raise ArtifactError(f"{path}: table lacks column {missing[0]!r}")
    return table
