"""What every search method provides to the shared search loop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from pipeline import runtime
from pipeline.lazy import F, nn, torch

# (valid loss, valid acc %) of the supernet under the given op weights (a tensor per cell
# type); spelt without torch so that the declaration imports none
Validate = Callable[[dict[str, Any]], tuple[float, float]]


class SearchMethod(ABC):
    """A method owns its architecture state and does one training step at a time.

    ``OPTIONS`` is the JSON-schema ``properties`` of the method's config block, with
    defaults; the config is validated against it before any job starts.
    """

    OPTIONS: dict[str, dict[str, Any]] = {}
    bilevel = True  # needs a batch from the architecture half of the split each step

    def __init__(
        self, space, model: nn.Module, options: dict, settings: dict, device: torch.device, amp: str, validate: Validate | None = None
    ):
        self.space = space
        self.model = model
        self.options = options
        self.settings = settings
        self.device = device
        self.amp = amp
        self.scaler = runtime.grad_scaler(device, amp)
        # From the search loop: (valid loss, valid acc %) of the supernet under given op
        # weights, on the validation split, as the epoch's validation measures it; None
        # where there is none (a method restored for selection).
        self.validate = validate

    # -- to implement
    @abstractmethod
    def eval_weights(self) -> dict[str, torch.Tensor]:
        """Op weights per cell type (edges, ops) for validation and selection."""

    @abstractmethod
    def train_step(self, batch_w, batch_a, w_optimizer: torch.optim.Optimizer, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on a weight batch (and an architecture batch); returns (loss, logits)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the method exactly (architecture state, optimisers)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    # -- optional hooks
    @classmethod
    def check_settings(cls, settings: dict, key_of=lambda setting: f"search.settings.{setting}") -> None:
        """Raise ConfigError naming ``key_of(setting)`` if the method cannot search with these
        settings (e.g. a space it does not support); checked when the config is."""

    @classmethod
    def check_options(cls, options: dict, settings: dict, key: str = "options", key_of=lambda setting: f"search.settings.{setting}") -> None:
        """Raise ConfigError naming ``key`` (the options' config key) or ``key_of(setting)`` if
        the options do not fit the settings; checked when the config is."""

    @classmethod
    def supernet_settings(cls, options: dict, settings: dict, epoch: int) -> dict:
        """The settings the supernet is built from for epoch ``epoch`` (0-based): a method
        whose supernet changes between stages (progressive DrNAS) returns its stage's; the
        search loop widens the supernet when they change. The last epoch's are ``settings``."""
        return settings

    def kept_ops(self) -> dict[str, torch.Tensor] | None:
        """Per cell type, a bool (edges, ops) of the ops still in the search where the method
        pruned some (selection considers no other); None: all are."""
        return None

    def make_weight_optimizer(self, parameters) -> tuple[torch.optim.Optimizer, float]:
        """The network-weight optimiser and the LR its cosine schedule ends at (DARTS: SGD)."""
        s = self.settings
        optimizer = torch.optim.SGD(parameters, lr=s["w_lr"], momentum=s["w_momentum"], weight_decay=s["w_weight_decay"])
        return optimizer, s["w_lr_min"]

    def on_data(self, train_size: int, arch_size: int) -> None:
        """Images in the weight and the architecture split, told once before any step."""

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        pass

    def on_epoch_end(self, epoch: int, epochs: int) -> None:
        """After the epoch's validation, before it is logged and checkpointed."""

    def batch_size(self, configured: int) -> int:
        """Batch size of the coming epoch (both splits); asked after ``on_epoch_start``."""
        return configured

    def snapshot(self) -> dict[str, Any]:
        """Arrays logged once per epoch into the metrics file (e.g. alpha)."""
        return {}

    # -- shared pieces
    def loss(self, x, y, weights: dict[str, torch.Tensor], amp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the supernet; ``amp=False`` forces fp32 (finite differences need it)."""
        with runtime.autocast(self.device, self.amp if amp else "none"):
            logits = self.model(x, weights)
            return F.cross_entropy(logits.float(), y), logits

    def weight_step(self, x, y, weights, w_optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on the network weights with the architecture weights held fixed."""
        w_optimizer.zero_grad(set_to_none=True)
        loss, logits = self.loss(x, y, {kind: w.detach() for kind, w in weights.items()})
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(w_optimizer)
        nn.utils.clip_grad_norm_(self.model.parameters(), self.settings["grad_clip"])
        self.scaler.step(w_optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach()


def require_cell_space(method: str, settings: dict, key_of) -> None:
    """ConfigError naming ``key_of('space')`` unless the search space is a cell space (the
    DARTS family or nb201): the ``check_settings`` of methods that sample or perturb per edge."""
    from pipeline.errors import ConfigError
    from pipeline.spaces import get_space

    if not get_space(settings["space"]).cell_graph:
        raise ConfigError(
            f"config key '{key_of('space')}': search method {method} needs a cell space (DARTS family or nb201); got {settings['space']!r}"
        )


def gaussian_alpha_with_adam(space, options: dict, device) -> tuple[nn.ParameterDict, torch.optim.Adam]:
    """Per cell type, alpha ~ init_scale * N(0, 1) of shape (edges, ops), and the Adam
    optimiser of the ``arch_*`` options: the architecture state of SNAS and GDAS."""
    edges, ops = space.arch_shape()
    alpha = nn.ParameterDict(
        {kind: nn.Parameter(options["init_scale"] * torch.randn(edges, ops).to(device)) for kind in space.cell_types}
    )
    optimizer = torch.optim.Adam(
        alpha.parameters(), lr=options["arch_lr"], betas=tuple(options["arch_betas"]), weight_decay=options["arch_weight_decay"]
    )
    return alpha, optimizer
