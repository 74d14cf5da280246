"""Run a selection method on a supernet checkpoint; write the genotype JSON and the
decision record (HDF5) beside it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline import artifacts, runtime
from pipeline.registry import UnknownNameError
from pipeline.select import METHODS
from pipeline.select.base import RESUME_FILE, SelectionContext, SelectionError
from pipeline.spaces import get_space
from pipeline.training.checkpoints import finish, resume_key

DECISIONS_FILE = "decisions.h5"


def check_supernet(checkpoint: dict[str, Any], path: str | Path):
    """The checkpoint's search space, after checking that its architecture weights fit it;
    an incompatible checkpoint is an ArtifactError naming the file and the mismatch."""
    try:
        params = checkpoint["provenance"]["params"]
        space_name = params["settings"]["space"]
        params["options"]["algorithm"]
    except (KeyError, TypeError):
        raise artifacts.ArtifactError(f"{path}: provenance lacks the search parameters (settings.space, options.algorithm)") from None
    try:
        space = get_space(space_name)
    except UnknownNameError as exc:
        raise artifacts.ArtifactError(f"{path}: {exc}") from None
    expected = tuple(space.arch_shape())
    weights = checkpoint["arch_weights"]
    if not isinstance(weights, dict) or set(weights) != set(space.cell_types):
        found = sorted(weights) if isinstance(weights, dict) else type(weights).__name__
        raise artifacts.ArtifactError(f"{path}: arch_weights has cell types {found}, space {space.name!r} has {list(space.cell_types)}")
    for kind in space.cell_types:
        shape = tuple(weights[kind].shape[-2:])
        if shape != expected:
            raise artifacts.ArtifactError(
                f"{path}: arch_weights[{kind!r}] has shape {shape}, space {space.name!r} expects (edges, ops) = {expected}"
            )
    return space


def run_select(
    params: dict[str, Any],
    supernet_path: str | Path,
    data_path: str | Path,
    out: str | Path,
    threads: int = 0,
    decisions_out: str | Path | None = None,
) -> dict:
    started = time.perf_counter()
    out = Path(out)
    decisions_out = Path(decisions_out) if decisions_out is not None else out.parent / DECISIONS_FILE
    device = runtime.resolve_device(params["runtime"]["device"])
    runtime.configure(params["runtime"], threads, params["seed"])
    checkpoint = artifacts.load_checkpoint(supernet_path, "supernet", map_location=device)
    space = check_supernet(checkpoint, supernet_path)
    search_params = checkpoint["provenance"]["params"]
    method_cls = METHODS.get(params["options"]["algorithm"])
    search_algorithm = search_params["options"]["algorithm"]
    if not method_cls.accepts(search_algorithm):
        raise SelectionError(
            f"selection {params['options']['algorithm']!r} cannot read a {search_algorithm!r} supernet"
            f" ({supernet_path}); it reads {', '.join(method_cls.SEARCH_ALGORITHMS)} supernets"
        )
    method = method_cls(params["options"])
    supernet_sha = artifacts.sha256_file(supernet_path)
    ctx = SelectionContext(
        space,
        checkpoint,
        checkpoint["arch_weights"],
        Path(data_path),
        device,
        params["seed"],
        runtime=params["runtime"],
        supernet_path=Path(supernet_path),
        work_dir=out.parent,
        resume_key=resume_key(params, data_path, supernet_sha256=supernet_sha) if method.resumable else None,
    )
    cells = method.select(ctx)
    search_prov = checkpoint["provenance"]
    # The pick's benchmark record (NAS-Bench-201 spaces), as the search logs its magnitude pick's.
    ground_truth = getattr(space, "ground_truth", None)
    truth = (ground_truth(cells, params["dataset"]) if ground_truth else None) or {}
    record = artifacts.provenance(
        params,
        seed=params["seed"],
        supernet_file=str(supernet_path),
        supernet_sha256=supernet_sha,
        search_method=search_params["method"],
        search_algorithm=search_params["options"]["algorithm"],
        selection_method=params["method"],
        search_seconds=search_prov["search_seconds"],
        search_device=search_prov["device"],
        select_seconds=time.perf_counter() - started,
        select_device=str(device),
        genotype_text=space.to_text(cells),
        decisions_file=str(decisions_out),
        **truth,
    )
    genotype = {"space": space.name, "cells": cells}
    decisions = ctx.record.to_artifact(params["method"], params["options"]["algorithm"], record)
    space.validate_genotype(cells)
    # Both outputs or neither: the record goes first, the genotype (what retrain reads) last.
    artifacts.write_decisions(decisions_out, decisions)
    artifacts.write_genotype(out, genotype, record)
    if method.resumable:
        finish(ctx.work_dir / RESUME_FILE)  # done: a forced rerun selects anew
    runtime.log(f"selected {space.to_text(cells)}")
    return genotype
