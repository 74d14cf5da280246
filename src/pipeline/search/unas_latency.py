"""UNAS with a latency constraint (Vahdat et al., 2020, appendix E) in a space with a
per-layer latency table (``proxyless_mobile``: the ProxylessNAS Pixel-1 table).

Architecture: per searchable layer a categorical over the layer's candidates, logits
``alpha`` (layers, ops), zero at the start. Columns past a layer's candidates (skip where
the shapes forbid it) are masked with -inf where the logits are used; the parameter
itself stays finite.

Objective: E_z[L_gen(z, w)] + lambda_lat * E_z[max(0, lat(z) - target_ms)].

- L_gen, per (train, valid) example pair sharing one architecture sample z:
  CE_train + lambda_gen * |CE_valid - CE_train| (UNAS' generalisation-gap loss, 0.5).
- z per example: Gumbel noise g; hard sample argmax(alpha + g), relaxed sample
  softmax((alpha + g) / temperature) (0.4). alpha's gradient for L_gen: ``rebar``
  (default): mean(log q(z) (f(z) - f(z~)).detach()) + mean(f(z~)); or ``reinforce``:
  mean(log q(z) (f(z) - b)) with b an exponential moving average of f.
- lat(z): the sum of the table rows of the sampled ops (skip: 0) plus the fixed rows,
  always at the space's full-width 224x224 shapes (pipeline.benchmarks.latency.ProxylessLatency),
  whatever width and resolution the supernet is searched at.
- The latency term's gradient (choice): REINFORCE over ``latency_samples`` fresh samples
  per step with the leave-one-out baseline. Unbiased; a sample costs one table sum, so
  many samples make it low-variance. (E[lat] itself is linear in the probabilities, but
  the hinge's expectation is not, so it is estimated.)
- lambda_lat: 0 while alpha is frozen, then rising linearly by lambda_lat / ramp per
  architecture epoch to lambda_lat (``lat_ramp_epochs``; null: all architecture epochs).
- Dropout ``skip_dropout`` (0.1) on the skip choice during search (UNAS E.1), so that the
  latency term does not over-select skip.
- Warm-up: alpha frozen for ``warmup_epochs`` (the paper: 20 of 35); then Adam with a
  cosine learning rate from ``arch_lr`` to ``arch_lr_min`` (1e-3 -> 3e-4).
- Weights: cross-entropy of each training example's hard sample (one path per example),
  with Adam as in UNAS (``w_lr`` cosine to ``w_lr_min``; they replace the shared SGD settings).

Derivation: argmax per layer (``eval_weights`` are the masked softmax probabilities;
magnitude selection takes their argmax).
"""

from __future__ import annotations

import math
from typing import Any

from pipeline import runtime
from pipeline.benchmarks.latency import LAYER_MODELS, layer_model
from pipeline.errors import ConfigError
from pipeline.lazy import F, nn, torch
from pipeline.search import METHODS
from pipeline.search.base import SearchMethod
from pipeline.search.unas import Unas


def gumbel_like(shape, device) -> torch.Tensor:
    """Standard Gumbel noise, bounded (no inf) so that masked logits never meet +inf."""
    return torch.empty(shape, device=device).exponential_().clamp_min_(1e-20).log_().neg_()


@METHODS.register("unas_latency")
class UnasLatency(SearchMethod):
    OPTIONS = {
        "target_ms": {"type": "number", "exclusiveMinimum": 0, "default": 80.0, "description": "latency target t_target (ProxylessNAS-Mobile: about 80 ms on the Pixel 1)"},
        "lambda_lat": {"type": "number", "minimum": 0, "default": 0.1, "description": "weight of E[max(0, lat - target)] once ramped"},
        "lat_ramp_epochs": {"type": ["integer", "null"], "minimum": 1, "default": None, "description": "architecture epochs to reach lambda_lat (null: all of them)"},
        "lambda_gen": {"type": "number", "minimum": 0, "default": 0.5, "description": "generalisation-gap weight: CE_train + lambda_gen |CE_valid - CE_train|"},
        "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 0.4, "description": "Gumbel-softmax temperature of the relaxed sample"},
        "estimator": {"enum": ["rebar", "reinforce"], "default": "rebar", "description": "alpha gradient of E[L_gen]"},
        "baseline_decay": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.99, "description": "reinforce: EMA decay of the baseline"},
        "latency_samples": {"type": "integer", "minimum": 2, "default": 256, "description": "samples per step for the latency term (leave-one-out baseline)"},
        "skip_dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.1, "description": "dropout on the skip choice during search"},
        "warmup_epochs": {"type": "integer", "minimum": 0, "default": 20, "description": "epochs with alpha frozen"},
        "arch_lr": {"type": "number", "exclusiveMinimum": 0, "default": 1e-3},
        "arch_lr_min": {"type": "number", "minimum": 0, "default": 3e-4},
        "arch_betas": {
            "type": "array",
            "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "minItems": 2,
            "maxItems": 2,
            "default": [0.9, 0.999],
        },
        "arch_weight_decay": {"type": "number", "minimum": 0, "default": 0.0},
        **{key: Unas.OPTIONS[key] for key in ("w_lr", "w_lr_min", "w_betas", "w_weight_decay")},
    }

    make_weight_optimizer = Unas.make_weight_optimizer

    @classmethod
    def check_settings(cls, settings: dict, key_of=lambda setting: f"search.settings.{setting}") -> None:
        if settings["space"] not in LAYER_MODELS:
            raise ConfigError(
                f"config key '{key_of('space')}': search method unas_latency needs a space with a per-layer "
                f"latency table ({', '.join(LAYER_MODELS.names())}); got {settings['space']!r}"
            )

    def __init__(self, space, model, options, settings, device, amp, validate=None):
        super().__init__(space, model, options, settings, device, amp, validate)
        self.check_settings(settings)
        (self.kind,) = space.cell_types
        self.latency = layer_model(space)
        self.mask = space.arch_mask()[self.kind].to(device)
        self.lat_matrix = self.latency.matrix.to(device, torch.float32)
        self.alpha = nn.Parameter(torch.zeros(space.arch_shape(), device=device))
        self.arch_optimizer = torch.optim.Adam(
            [self.alpha], lr=options["arch_lr"], betas=tuple(options["arch_betas"]), weight_decay=options["arch_weight_decay"]
        )
        self.baseline = 0.0
        self.baseline_ready = False
        self.arch_active = False
        self.lambda_lat = 0.0

    # -- architecture distribution
    def logits(self) -> torch.Tensor:
        return self.alpha.masked_fill(~self.mask, float("-inf"))

    def eval_weights(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {self.kind: F.softmax(self.logits(), dim=-1)}

    def log_prob(self, index: torch.Tensor) -> torch.Tensor:
        """log q(z) of samples given as (..., layers) op indices."""
        log_p = F.log_softmax(self.logits(), dim=-1).expand(*index.shape, -1)
        return log_p.gather(-1, index.unsqueeze(-1)).squeeze(-1).sum(-1)

    def expected_latency_ms(self) -> float:
        with torch.no_grad():
            return self.latency.fixed_ms + float((F.softmax(self.logits(), dim=-1) * self.lat_matrix).sum())

    def argmax_latency_ms(self) -> float:
        with torch.no_grad():
            index = self.logits().argmax(-1)
        return float(self.latency.sample_ms(F.one_hot(index, self.alpha.shape[-1]).double()))

    # -- schedules
    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        opts = self.options
        arch_epoch, arch_epochs = epoch - opts["warmup_epochs"], epochs - opts["warmup_epochs"]
        self.arch_active = arch_epoch >= 0
        if not self.arch_active:
            self.lambda_lat = 0.0
            return
        ramp = opts["lat_ramp_epochs"] or arch_epochs
        self.lambda_lat = opts["lambda_lat"] * min(1.0, (arch_epoch + 1) / ramp)
        cosine = 0.5 * (1 + math.cos(math.pi * arch_epoch / arch_epochs))
        for group in self.arch_optimizer.param_groups:
            group["lr"] = opts["arch_lr_min"] + (opts["arch_lr"] - opts["arch_lr_min"]) * cosine

    # -- state
    def snapshot(self) -> dict[str, Any]:
        return {
            f"alpha_{self.kind}": self.alpha.detach().cpu().numpy().copy(),
            "lambda_lat": self.lambda_lat,
            "latency_expected_ms": self.expected_latency_ms(),
            "latency_argmax_ms": self.argmax_latency_ms(),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha.detach().clone(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "baseline": self.baseline,
            "baseline_ready": self.baseline_ready,
            "arch_active": self.arch_active,
            "lambda_lat": self.lambda_lat,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.alpha.copy_(state["alpha"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.baseline = float(state["baseline"])
        self.baseline_ready = bool(state["baseline_ready"])
        self.arch_active = bool(state["arch_active"])
        self.lambda_lat = float(state["lambda_lat"])

    # -- the step
    def gen_loss(self, x, y, xv, yv, weights) -> torch.Tensor:
        """Per pair: CE_train + lambda_gen * |CE_valid - CE_train| under per-example weights."""
        with runtime.autocast(self.device, self.amp):
            ce_train = F.cross_entropy(self.model(x, {self.kind: weights}).float(), y, reduction="none")
            ce_valid = F.cross_entropy(self.model(xv, {self.kind: weights}).float(), yv, reduction="none")
        return ce_train + self.options["lambda_gen"] * (ce_valid - ce_train).abs()

    def latency_surrogate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(REINFORCE surrogate whose gradient estimates grad E[hinge], the hinge's sample mean)."""
        samples = self.options["latency_samples"]
        logits = self.logits().detach()
        index = (logits + gumbel_like((samples, *logits.shape), self.device)).argmax(-1)
        latency = self.latency.fixed_ms + self.lat_matrix.gather(1, index.T).T.sum(-1)
        hinge = F.relu(latency - self.options["target_ms"])
        leave_one_out = (hinge.sum() - hinge) / (samples - 1)
        return (self.log_prob(index) * (hinge - leave_one_out)).mean(), hinge.mean()

    def train_step(self, batch_w, batch_a, w_optimizer, lr):
        (x, y), (xv, yv) = batch_w, batch_a
        logits = self.logits().detach()
        noise = gumbel_like((len(y), *logits.shape), self.device)
        index = (logits + noise).argmax(-1)  # masked columns stay -inf
        hard = F.one_hot(index, logits.shape[-1]).to(x.dtype)
        # Skip dropout in the search steps only, not in validation (which may run in train mode).
        self.model.skip_dropout = self.options["skip_dropout"]
        try:
            if self.arch_active:
                self.arch_step(x, y, xv, yv, index, hard, noise)
            return self.weight_step(x, y, {self.kind: hard}, w_optimizer)
        finally:
            self.model.skip_dropout = 0.0

    def arch_step(self, x, y, xv, yv, index, hard, noise) -> None:
        n = min(len(y), len(yv))
        x, y, xv, yv, index, hard, noise = x[:n], y[:n], xv[:n], yv[:n], index[:n], hard[:n], noise[:n]
        with torch.no_grad():
            f_hard = self.gen_loss(x, y, xv, yv, hard)
        log_q = self.log_prob(index)
        if self.options["estimator"] == "rebar":
            # The relaxed sample shares the hard sample's noise; alpha's gradient flows through it.
            relaxed = F.softmax((self.logits() + noise) / self.options["temperature"], dim=-1)
            f_relaxed = self.gen_loss(x, y, xv, yv, relaxed)
            loss = (log_q * (f_hard - f_relaxed).detach()).mean() + f_relaxed.mean()
        else:
            if not self.baseline_ready:
                self.baseline, self.baseline_ready = float(f_hard.mean()), True
            loss = (log_q * (f_hard - self.baseline)).mean()
            decay = self.options["baseline_decay"]
            self.baseline = decay * self.baseline + (1 - decay) * float(f_hard.mean())
        if self.lambda_lat > 0:
            surrogate, _ = self.latency_surrogate()
            loss = loss + self.lambda_lat * surrogate
        (grad,) = torch.autograd.grad(loss, [self.alpha])
        self.arch_optimizer.zero_grad(set_to_none=True)
        self.alpha.grad = grad
        self.arch_optimizer.step()
