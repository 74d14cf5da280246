"""Retrain stage: the derived network from scratch (DARTS' CIFAR protocol).

SGD with cosine LR, cutout, drop-path ramped linearly from 0 to ``drop_path_prob``,
auxiliary head weighted by ``auxiliary_weight``, gradient clipping. Resumable per epoch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import artifacts, runtime
from pipeline.counting import count_multiply_adds, count_parameters
from pipeline.data import Augment, BatchLoader, load_prepared
from pipeline.spaces import get_space
from pipeline.training import (
    epoch_seed,
    evaluate,
    finish,
    load_resume_state,
    restore_training_state,
    resume_key,
    training_state,
)

MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.h5"
RESUME_FILE = Path("checkpoint") / "last.pt"


def run_retrain(params: dict[str, Any], genotype_path: str | Path, data_path: str | Path, out_dir: str | Path, threads: int = 0) -> dict:
    settings, rt, seed = params["settings"], params["runtime"], params["seed"]
    out_dir = Path(out_dir)
    genotype = artifacts.read_genotype(genotype_path)
    device = runtime.resolve_device(rt["device"])
    runtime.configure(threads, seed)
    data = load_prepared(data_path, device)
    space = get_space(genotype["space"])

    fmt = runtime.memory_format(rt["channels_last"])
    model = space.build_network(
        genotype["cells"], settings["init_channels"], settings["layers"], data.num_classes, settings["auxiliary_weight"] > 0
    ).to(device, memory_format=fmt)
    params_count = count_parameters(model)
    multiply_adds = count_multiply_adds(model, (1, 3, *data.train_images.shape[2:]))

    common = dict(mean=data.meta["mean"], std=data.meta["std"], channels_last=rt["channels_last"])
    train_loader = BatchLoader(
        data.train_images, data.train_labels, None, settings["batch_size"],
        augment=Augment(crop_padding=4, flip=True, cutout=settings["cutout"]), shuffle=True, **common,
    )
    test_loader = BatchLoader(data.test_images, data.test_labels, None, settings["eval_batch_size"], **common)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings["lr"], momentum=settings["momentum"], weight_decay=settings["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings["epochs"], eta_min=settings["lr_min"])
    scaler = runtime.grad_scaler(device, rt["amp"])

    history: dict[str, list] = {}
    start_epoch = 0
    resume_path = out_dir / RESUME_FILE
    resume = resume_key(params, data_path, genotype_cells=genotype["cells"])
    state = load_resume_state(resume_path, "retrain", resume)
    if state is not None:
        history, start_epoch = restore_training_state(state, model, optimizer, scheduler, scaler)

    def payload(epoch: int) -> dict[str, Any]:
        return {
            **training_state(epoch, model, optimizer, scheduler, scaler, history),
            "provenance": artifacts.provenance(params, seed=seed, device=str(device), resume_key=resume),
        }

    epochs = settings["epochs"]
    for epoch in runtime.progress(range(start_epoch, epochs), desc="retrain epochs", total=epochs - start_epoch, leave=True):
        started = time.perf_counter()
        lr = scheduler.get_last_lr()[0]
        model.drop_path_prob = settings["drop_path_prob"] * epoch / epochs
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in runtime.progress(train_loader.epoch(epoch_seed(seed, epoch, 2)), desc=f"epoch {epoch + 1}", total=len(train_loader)):
            optimizer.zero_grad(set_to_none=True)
            with runtime.autocast(device, rt["amp"]):
                logits, logits_aux = model(x)
                loss = F.cross_entropy(logits.float(), y)
                if logits_aux is not None:
                    loss = loss + settings["auxiliary_weight"] * F.cross_entropy(logits_aux.float(), y)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), settings["grad_clip"])
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(dim=1) == y).sum().item()
            seen += len(y)
        scheduler.step()
        test_loss, test_acc = evaluate(model, test_loader, {}, device, rt["amp"])
        row = {
            "epoch": epoch,
            "lr": lr,
            "drop_path_prob": model.drop_path_prob,
            "train_loss": loss_sum / seen,
            "train_acc": 100.0 * correct / seen,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "wall_time": time.perf_counter() - started,
        }
        for key, value in row.items():
            history.setdefault(key, []).append(value)
        artifacts.save_checkpoint(resume_path, "retrain", payload(epoch + 1))
        runtime.log(
            f"retrain epoch {epoch + 1}/{epochs}: train acc {row['train_acc']:.2f} loss {row['train_loss']:.3f} | "
            f"test acc {test_acc:.2f} loss {test_loss:.3f} | {row['wall_time']:.1f}s"
        )

    gp = genotype["provenance"]
    summary = {
        "test_acc": float(history["test_acc"][-1]),
        "test_error": 100.0 - float(history["test_acc"][-1]),
        "params": params_count,
        "params_m": params_count / 1e6,
        "multiply_adds": multiply_adds,
        "retrain_seconds": float(sum(history["wall_time"])),
        "dataset": params["dataset"],
        "space": genotype["space"],
        "search_method": gp["search_method"],
        "selection_method": gp["selection_method"],
        "seed": seed,
        "search_seconds": gp["search_seconds"],
        "select_seconds": gp["select_seconds"],
        "search_device": gp["search_device"],
        "genotype_sha256": artifacts.sha256_file(genotype_path),
        "genotype_text": space.to_text(genotype["cells"]),
    }
    epochs_arrays = {name: np.asarray(values) for name, values in history.items()}
    provenance = artifacts.provenance(params, seed=seed, genotype_file=str(genotype_path), device=str(device))
    artifacts.write_metrics(out_dir / METRICS_FILE, artifacts.Metrics("retrain", epochs_arrays, summary, provenance))
    artifacts.save_checkpoint(out_dir / MODEL_FILE, "retrain", payload(epochs))
    finish(resume_path)
    runtime.log(f"retrain done: test acc {summary['test_acc']:.2f}%, {summary['params_m']:.3f}M params")
    return summary
