"""The search loop shared by every method: epochs, LR schedule, validation, checkpoints.

State is saved after every epoch to ``<out_dir>/checkpoint/last.pt``; a rerun with the
same parameters and data resumes there, and the final supernet and metrics are identical
to an uninterrupted run because each epoch's data order comes from (seed, epoch) alone.
The declared outputs (supernet.pt, metrics.h5) are written only at the end.

A method may change its supernet between stages (``supernet_settings``: progressive
DrNAS lowers the partial-channel K): after the last epoch of a stage the mixed ops are
widened in place (``search/widen.py``) before that epoch's checkpoint, so a resumed run
builds the supernet of the stage its checkpoint is in.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import artifacts, runtime
from pipeline.config import check_batch_fits
from pipeline.search import METHODS
from pipeline.search.supernet_training import build_supernet, search_loaders, train_supernet_epoch
from pipeline.search.widen import widen_supernet
from pipeline.spaces import get_space
from pipeline.training.checkpoints import load_resume_state, resume_key
from pipeline.training.data import load_prepared
from pipeline.training.loop import RESUME_FILE, EpochLoop, Trained
from pipeline.training.steps import epoch_seed, evaluate

SUPERNET_FILE = "supernet.pt"
# What magnitude selection excludes by default (select.magnitude's exclude_ops default; a
# test keeps the two in step): the per-epoch ground truth is of the cell it would derive.
MAGNITUDE_EXCLUDE = ("none",)


def run_search(params: dict[str, Any], data_path: str | Path, out_dir: str | Path, threads: int = 0) -> Path:
    settings, options, rt = params["settings"], params["options"], params["runtime"]
    seed = params["seed"]
    out_dir = Path(out_dir)
    device = runtime.resolve_device(rt["device"])
    runtime.configure(rt, threads, seed)
    data = load_prepared(data_path, device)
    space = get_space(settings["space"])
    method_cls = METHODS.get(options["algorithm"])
    loaders = search_loaders(data, settings, rt["channels_last"])
    halves = [loaders.w.num_samples] + ([loaders.a.num_samples] if method_cls.bilevel else [])
    split = f"{data_path}'s search split half (search {params['method']})"
    check_batch_fits("search.settings.batch_size", settings["batch_size"], min(halves), split)
    loader_eval = loaders.eval
    resume_path = out_dir / RESUME_FILE
    resume = resume_key(params, data_path)
    state = load_resume_state(resume_path, "supernet", resume)
    # The supernet of the stage the run starts (or resumes) in.
    shape = method_cls.supernet_settings(options, settings, state["epoch"] if state is not None else 0)
    model = build_supernet(space, shape, data.num_classes, device, rt["channels_last"])

    def validate(weights: dict[str, torch.Tensor]) -> tuple[float, float]:
        """(loss, accuracy %) of the supernet under ``weights`` on the validation split."""
        return evaluate(model, loader_eval, {"weights": weights}, device, rt["amp"], bn=settings["eval_bn"])

    method = method_cls(space, model, options, settings, device, rt["amp"], validate=validate)
    method.on_data(loaders.w.num_samples, loaders.a.num_samples)
    w_optimizer, w_lr_min = method.make_weight_optimizer(model.parameters())
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_optimizer, settings["epochs"], eta_min=w_lr_min)
    epochs = settings["epochs"]

    def run_epoch(epoch: int) -> dict[str, Any]:
        nonlocal shape
        started = time.perf_counter()
        lr = scheduler.get_last_lr()[0]
        method.on_epoch_start(epoch, epochs)
        batch_size = method.batch_size(settings["batch_size"])
        train_loss, train_acc = train_supernet_epoch(
            method, loaders, w_optimizer, lr, seed, epoch, desc=f"epoch {epoch + 1}", batch_size=batch_size
        )
        scheduler.step()
        valid_loss, valid_acc = validate(method.eval_weights())
        method.on_epoch_end(epoch, epochs)
        row = {
            "epoch": epoch,
            "lr": lr,
            "batch_size": batch_size,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "valid_loss": valid_loss,
            "valid_acc": valid_acc,
            "wall_time": time.perf_counter() - started,
        }
        row.update({f"weights_{k}": w.cpu().numpy() for k, w in method.eval_weights().items()})
        row.update(ground_truth_row(space, method.eval_weights(), params["dataset"]))
        row.update(method.snapshot())
        following = method_cls.supernet_settings(options, settings, epoch + 1)
        if epoch + 1 < epochs and following != shape:  # the next stage's wider mixed ops, before the checkpoint
            grown = build_supernet(space, following, data.num_classes, device, rt["channels_last"])
            widen_supernet(model, grown, torch.Generator().manual_seed(epoch_seed(seed, epoch + 1, 2)), w_optimizer)
            shape = following
        return row

    def fields(epoch: int) -> dict[str, Any]:
        return {
            "method": method.state_dict(),
            "arch_weights": {k: w.cpu() for k, w in method.eval_weights().items()},
            "provenance": artifacts.provenance(
                params,
                seed=seed,
                device=str(device),
                device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                search_seconds=float(sum(loop.history.get("wall_time", []))),
                resume_key=resume,
            ),
        }

    loop = EpochLoop(
        "search", "supernet", epochs, Trained(model, w_optimizer, scheduler, method.scaler), run_epoch, resume_path, resume,
        fields=fields,
        restore=lambda state: method.load_state_dict(state["method"]),
        describe=lambda row: (
            f"train acc {row['train_acc']:.2f} loss {row['train_loss']:.3f} | "
            f"valid acc {row['valid_acc']:.2f} loss {row['valid_loss']:.3f} | {row['wall_time']:.1f}s"
        ),
        stored=torch.as_tensor,
        resumed=state,
    )
    history = loop.run()
    # The declared outputs appear only once the search is complete.
    loop.write_results(out_dir, _metrics(history, params, options, settings), SUPERNET_FILE)
    return out_dir / SUPERNET_FILE


def ground_truth_row(space, weights: dict[str, torch.Tensor], dataset: str) -> dict[str, Any]:
    """For a space with a benchmark table (NAS-Bench-201): the benchmark's accuracy on
    ``dataset`` of the cell that magnitude selection derives from ``weights`` now, so a
    search records how its magnitude pick would score after every epoch; else nothing."""
    ground_truth = getattr(space, "ground_truth", None)
    if ground_truth is None:
        return {}
    return ground_truth(space.parse(weights, MAGNITUDE_EXCLUDE), dataset) or {}


def _metrics(history: dict[str, list], params, options, settings) -> artifacts.Metrics:
    epochs = {key: np.stack([torch.as_tensor(v).numpy() for v in values]) for key, values in history.items()}
    summary = {
        "search_method": params["method"],
        "algorithm": options["algorithm"],
        "space": settings["space"],
        "search_seconds": float(epochs["wall_time"].sum()),
        "final_valid_acc": float(epochs["valid_acc"][-1]),
    }
    if "benchmark_test_acc" in epochs:  # the magnitude pick's ground truth after the last epoch
        summary["benchmark_test_acc"] = float(epochs["benchmark_test_acc"][-1])
    provenance = artifacts.provenance(params, seed=params["seed"])
    return artifacts.Metrics("search", epochs, summary, provenance)
