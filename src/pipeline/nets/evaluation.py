"""What the training loops need of an evaluation network (a searched architecture trained
from scratch: CIFAR, ImageNet, NAS-Bench-201, ProxylessNAS networks)."""

from __future__ import annotations

from torch import nn


class EvaluationNetwork(nn.Module):
    """``forward(x)`` returns ``(logits, auxiliary logits or None)``; the auxiliary head's
    logits only in training mode, where the network has one.

    Drop-path: the loop sets the coming epoch's probability with ``set_drop_path_prob``
    (retrain and transfer ramp it linearly) and records ``drop_path_prob``. A network
    whose cells drop paths reads it in ``forward``; one that trains without drop-path
    (``uses_drop_path = False``: NAS-Bench-201, ProxylessNAS) keeps 0, so that the metrics
    record what was applied, not what the config asked for.
    """

    uses_drop_path = True
    drop_path_prob: float = 0.0

    def set_drop_path_prob(self, prob: float) -> None:
        self.drop_path_prob = prob if self.uses_drop_path else 0.0
