"""Run a selection method on a supernet checkpoint and write the genotype JSON."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline import artifacts, runtime
from pipeline.select import METHODS
from pipeline.select.base import SelectionContext, SelectionError
from pipeline.spaces import get_space


def run_select(params: dict[str, Any], supernet_path: str | Path, data_path: str | Path, out: str | Path, threads: int = 0) -> dict:
    started = time.perf_counter()
    device = runtime.resolve_device(params["runtime"]["device"])
    runtime.configure(threads, params["seed"])
    checkpoint = artifacts.load_checkpoint(supernet_path, "supernet", map_location=device)
    search_params = checkpoint["provenance"]["params"]
    space = get_space(search_params["settings"]["space"])
    method_cls = METHODS.get(params["options"]["algorithm"])
    search_algorithm = search_params["options"]["algorithm"]
    if not method_cls.accepts(search_algorithm):
        raise SelectionError(
            f"selection {params['options']['algorithm']!r} cannot read a {search_algorithm!r} supernet"
            f" ({supernet_path}); it reads {', '.join(method_cls.SEARCH_ALGORITHMS)} supernets"
        )
    method = method_cls(params["options"])
    ctx = SelectionContext(space, checkpoint, checkpoint["arch_weights"], Path(data_path), device, params["seed"])
    cells = method.select(ctx)
    search_prov = checkpoint["provenance"]
    record = artifacts.provenance(
        params,
        seed=params["seed"],
        supernet_file=str(supernet_path),
        supernet_sha256=artifacts.sha256_file(supernet_path),
        search_method=search_params["method"],
        search_algorithm=search_params["options"]["algorithm"],
        selection_method=params["method"],
        search_seconds=search_prov["search_seconds"],
        search_device=search_prov["device"],
        select_seconds=time.perf_counter() - started,
        select_device=str(device),
        genotype_text=space.to_text(cells),
    )
    genotype = {"space": space.name, "cells": cells}
    artifacts.write_genotype(out, genotype, record)
    runtime.log(f"selected {space.to_text(cells)}")
    return genotype
