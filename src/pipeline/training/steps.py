"""One pass of training or evaluation over batches: the steps every training loop takes
(retrain, transfer; the search's method steps are in pipeline.search.supernet_training)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline import runtime
from pipeline.nets.evaluation import EvaluationNetwork
from pipeline.training.data import BatchLoader
from pipeline.training.distributed import World, unwrap

# criterion(logits, logits_aux or None, labels) -> loss summed over the batch
Criterion = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Seed of one epoch's data stream: a resumed run replays exactly the same batches."""
    return (seed * 1_000_003 + epoch) * 4 + stream


def correct_topk(logits: torch.Tensor, labels: torch.Tensor, topk: Sequence[int]) -> list[torch.Tensor]:
    """Per k, how many labels are among the k highest logits (on the logits' device)."""
    ranked = logits.topk(min(max(topk), logits.size(1)), dim=1).indices
    hits = ranked == labels.view(-1, 1)
    return [hits[:, :k].sum() for k in topk]


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    global_sizes: Sequence[int],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    criterion: Criterion,
    grad_clip: float,
    device: torch.device,
    amp: str,
    world: World = World(),
    after_step: Callable[[], None] | None = None,
    topk: Sequence[int] = (1,),
    desc: str = "train",
) -> dict[str, float]:
    """One pass over ``batches`` (this rank's shards of global batches of ``global_sizes``);
    returns the mean loss and top-k accuracies (percent) over all ranks' samples.

    The running sums stay on the device and are read once at the end, so a step never
    waits for the GPU."""
    sums = torch.zeros(1 + len(topk), device=device, dtype=torch.float64)
    count = 0
    steps = zip(batches, global_sizes)
    for (x, y), global_size in runtime.progress(steps, desc=desc, total=len(global_sizes)):
        optimizer.zero_grad(set_to_none=True)
        with runtime.autocast(device, amp):
            logits, logits_aux = model(x)
            loss_sum = criterion(logits.float(), None if logits_aux is None else logits_aux.float(), y)
        # DDP averages gradients over ranks; this scale makes the result the gradient of
        # the global batch's mean loss, also when shards differ in size.
        scaler.scale(loss_sum * (world.world_size / global_size)).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if after_step is not None:
            after_step()
        with torch.no_grad():
            sums += torch.stack([loss_sum.detach(), *correct_topk(logits, y, topk)]).double()
        count += len(y)
    return _means(sums, count, world, "train", topk)


@torch.no_grad()
def evaluate_sharded(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp: str,
    world: World = World(),
    topk: Sequence[int] = (1,),
) -> dict[str, float]:
    """Mean cross-entropy and top-k accuracies (percent) over every rank's ``batches``, with
    BN running statistics; ``model`` may be the DDP wrapper (its module is used)."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    sums = torch.zeros(1 + len(topk), device=device, dtype=torch.float64)
    count = 0
    try:
        for x, y in batches:
            with runtime.autocast(device, amp):
                logits = net(x)
            logits = (logits[0] if isinstance(logits, tuple) else logits).float()
            loss = F.cross_entropy(logits, y, reduction="sum")
            sums += torch.stack([loss, *correct_topk(logits, y, topk)]).double()
            count += len(y)
    finally:
        net.train(was_training)
    return _means(sums, count, world, "test", topk)


def _means(sums: torch.Tensor, count: int, world: World, prefix: str, topk: Sequence[int]) -> dict[str, float]:
    """Means over every rank's samples from this rank's device sums and sample count."""
    totals = world.all_reduce_sum(torch.cat([sums, sums.new_tensor([count])])).tolist()
    means = {f"{prefix}_loss": totals[0] / totals[-1]}
    means.update({f"{prefix}_top{k}": 100.0 * v / totals[-1] for k, v in zip(topk, totals[1:-1])})
    return means


@torch.no_grad()
def evaluate(model, loader: BatchLoader, forward_kwargs: dict, device, amp: str, bn: str = "running") -> tuple[float, float]:
    """Mean loss and accuracy (percent) over the loader under no_grad.

    ``bn="running"`` evaluates in eval mode (BN running statistics, as DARTS does);
    ``bn="batch"`` normalises with each batch's statistics (as DARTS-PT's reference does),
    which is meaningful before the running statistics settle; the model's buffers are
    left exactly as they were.
    """
    was_training = model.training
    saved = {name: b.clone() for name, b in model.named_buffers()} if bn == "batch" else {}
    model.train(bn == "batch")
    sums = torch.zeros(2, device=device, dtype=torch.float64)
    try:
        for x, y in runtime.progress(loader.epoch(seed=0), desc="evaluate", total=len(loader)):
            with runtime.autocast(device, amp):
                logits = model(x, **forward_kwargs)
            logits = (logits[0] if isinstance(logits, tuple) else logits).float()
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum"), (logits.argmax(dim=1) == y).sum()]).double()
    finally:
        for name, buffer in model.named_buffers():
            if name in saved:
                buffer.copy_(saved[name])
        model.train(was_training)
    total_loss, correct = sums.tolist()
    return total_loss / loader.num_samples, 100.0 * correct / loader.num_samples


def auxiliary_criterion(auxiliary_weight: float, label_smoothing: float = 0.0) -> Criterion:
    """Summed cross-entropy of the logits plus ``auxiliary_weight`` times the auxiliary head's."""

    def criterion(logits, logits_aux, labels):
        loss = F.cross_entropy(logits, labels, reduction="sum", label_smoothing=label_smoothing)
        if logits_aux is not None:
            loss = loss + auxiliary_weight * F.cross_entropy(logits_aux, labels, reduction="sum", label_smoothing=label_smoothing)
        return loss

    return criterion


def ramp_drop_path(net: EvaluationNetwork, final_prob: float, epoch: int, epochs: int) -> float:
    """Set epoch ``epoch``'s drop-path probability, linear from 0 to ``final_prob`` over
    ``epochs`` (DARTS' schedule); returns it."""
    net.set_drop_path_prob(final_prob * epoch / epochs)
    return net.drop_path_prob
