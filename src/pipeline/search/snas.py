"""SNAS (Xie et al., 2019): stochastic architecture search in one level.

Each step draws per edge Z = softmax((alpha + G) / t), G Gumbel noise, one sample per cell
type shared by the batch, and trains the network weights and alpha together on the same
training batch (``batch_a`` is not used): loss = CE(Z) + eta * cost, one backward pass,
SGD for the weights, Adam for alpha. The temperature t falls linearly from
``temperature_start`` to ``temperature_end`` over the search epochs (choice).

Resource cost (appendix F): per candidate op, its parameter count, FLOPs and memory
access cost (MAC), measured on the op's actual input and output shapes in this supernet
(conv: params fkIO/g, FLOPs HWfkIO/g, MAC = input + output elements + params; pooling:
FLOPs HWfkC, i.e. one channel per window as in the reference code, MAC = input + output;
skip: MAC only; none: 0; BN and ReLU not counted). Edge cost per cell, summed over the
cells of the type: ``log`` (the reference's log penalty): sum_r w_r log max(1, sum_o Z_o c_r(o));
``linear``: sum_r w_r sum_o Z_o c_r(o) in millions. ``cost_level`` picks eta from
``cost_eta`` (choice of values; moderate = the reference's 1.5e-3).

Cost-gradient estimators: ``reparameterized`` (cost of Z), ``analytic`` (cost of
softmax(alpha)), ``policy_gradient`` (log Concrete density of the detached Z times the
edge's cost less its cost at softmax(alpha), a baseline independent of Z). The CE term always uses the reparameterized sample (SNAS' search
gradient).
"""

from __future__ import annotations

from typing import Any

from pipeline.lazy import F, nn, no_grad, torch
from pipeline.search import METHODS
from pipeline.search.base import SearchMethod, gaussian_alpha_with_adam, require_cell_space
from pipeline.search.darts import Darts
from pipeline.search.sampling import concrete_log_density, gumbel_softmax, linear_temperature

CRITERIA = ("params", "flops", "mac")
COST_LEVELS = ("mild", "moderate", "aggressive")
ESTIMATORS = ("reparameterized", "analytic", "policy_gradient")


# ---------------------------------------------------------------- per-op resource costs


def _layer_costs(module: nn.Module, inputs, output) -> tuple[float, float, float] | None:
    """(params, FLOPs, MAC) of one layer for one image, appendix F; None: not counted."""
    x = inputs[0]
    per_image = x.shape[0]
    in_elems, out_elems = x.numel() / per_image, output.numel() / per_image
    if isinstance(module, nn.Conv2d):
        params = float(module.weight.numel())  # f k I O / g
        out_pixels = output.shape[-1] * output.shape[-2]
        return params, out_pixels * params, in_elems + out_elems + params
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = module.kernel_size
        window = k * k if isinstance(k, int) else k[0] * k[1]
        return 0.0, out_elems * window, in_elems + out_elems
    if isinstance(module, nn.Identity):
        return 0.0, 0.0, in_elems + out_elems
    return None


def search_cells(model: nn.Module, cell_types) -> list[tuple[str, nn.Module]]:
    """(cell type, cell) of the supernet's cells with mixed-op edges, in network order."""
    cells = [cell for cell in model.cells if isinstance(getattr(cell, "edges", None), nn.ModuleList)]
    if len(cell_types) == 1:
        return [(cell_types[0], cell) for cell in cells]
    return [("reduce" if cell.reduction else "normal", cell) for cell in cells]


@no_grad
def op_costs(model: nn.Module, image_shape: tuple[int, int, int], cell_types=("normal", "reduce")) -> dict[str, torch.Tensor]:
    """Per cell type, (cells of that type, edges, ops, 3): params, FLOPs and MAC of every
    candidate op of every cell, from one forward of a single image with all ops on.

    The forward runs in eval mode under a forked RNG, so it changes no BN statistics and
    no random stream: a resumed search stays identical.
    """
    first = next(model.parameters())
    cells = search_cells(model, cell_types)
    kinds = [kind for kind, _ in cells]
    records: dict[tuple[int, int, int], list[float]] = {}
    handles = []
    for c, (_, cell) in enumerate(cells):
        for e, mixed in enumerate(cell.edges):
            for k, op in enumerate(mixed.ops):
                key = (c, e, k)
                records[key] = [0.0, 0.0, 0.0]

                def hook(module, inputs, output, key=key):
                    costs = _layer_costs(module, inputs, output)
                    if costs is not None:
                        records[key] = [a + b for a, b in zip(records[key], costs)]

                for layer in op.modules():
                    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.Identity)):
                        handles.append(layer.register_forward_hook(hook))
    edges = {kind: len(cell.edges) for kind, cell in cells}
    ops = len(cells[0][1].edges[0].ops)
    weights = {kind: torch.ones(edges[kind], ops, device=first.device, dtype=first.dtype) for kind in edges}
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[first.device] if first.device.type == "cuda" else []):
            model(torch.zeros(1, *image_shape, device=first.device, dtype=first.dtype), weights)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    out = {}
    for kind in edges:
        cells = [c for c, name in enumerate(kinds) if name == kind]
        out[kind] = torch.tensor(
            [[[records[(c, e, k)] for k in range(ops)] for e in range(edges[kind])] for c in cells], dtype=torch.float64
        )
    return out


def edge_cost(weights: torch.Tensor, costs: torch.Tensor, form: str, criterion_weights) -> torch.Tensor:
    """Cost per edge (edges,) of op weights (edges, ops), summed over the cells of the type."""
    totals = torch.einsum("ek,cekr->cer", weights, costs.to(weights.dtype))
    if form == "log":
        terms = torch.log(totals.clamp(min=1.0))
    else:
        terms = totals * 1e-6
    return (terms * torch.as_tensor(criterion_weights, dtype=weights.dtype, device=weights.device)).sum(-1).sum(0)


def cost_surrogate(
    estimator: str, alpha: torch.Tensor, z: torch.Tensor, log_z: torch.Tensor, temperature: float, cost_of
) -> torch.Tensor:
    """A scalar whose alpha-gradient estimates d E[C(Z)] with the chosen estimator;
    ``cost_of`` maps op weights (edges, ops) to per-edge costs (edges,)."""
    if estimator == "reparameterized":
        return cost_of(z).sum()
    if estimator == "analytic":
        return cost_of(F.softmax(alpha, dim=-1)).sum()
    # Score function per edge: the cost of an edge is credited to its own decision, less
    # the cost at softmax(alpha), a baseline that does not depend on Z (so no bias).
    log_density = concrete_log_density(alpha, log_z.detach(), temperature)
    with torch.no_grad():
        advantage = cost_of(z) - cost_of(F.softmax(alpha, dim=-1))
    return (log_density * advantage).sum()


# ---------------------------------------------------------------- the method


@METHODS.register("snas")
class Snas(SearchMethod):
    bilevel = False

    OPTIONS = {
        # DARTS' Adam on alpha and its initialisation
        **{key: Darts.OPTIONS[key] for key in ("arch_lr", "arch_betas", "arch_weight_decay", "init_scale")},
        "temperature_start": {"type": "number", "exclusiveMinimum": 0, "default": 1.0},
        "temperature_end": {"type": "number", "exclusiveMinimum": 0, "default": 0.03},
        "cost_level": {"enum": ["none", *COST_LEVELS], "default": "moderate", "description": "resource constraint strength"},
        "cost_eta": {
            "type": "object",
            "additionalProperties": False,
            "required": list(COST_LEVELS),
            "properties": {level: {"type": "number", "minimum": 0} for level in COST_LEVELS},
            "default": {"mild": 5e-4, "moderate": 1.5e-3, "aggressive": 1e-2},
            "description": "eta of each cost level (choice; moderate is the reference's log-penalty value)",
        },
        "cost_form": {"enum": ["log", "linear"], "default": "log"},
        "cost_weights": {
            "type": "array",
            "items": {"type": "number", "minimum": 0},
            "minItems": 3,
            "maxItems": 3,
            "default": [1 / 3, 1 / 3, 1 / 3],
            "description": "weights of params, FLOPs, MAC in the cost",
        },
        "estimator": {"enum": list(ESTIMATORS), "default": "reparameterized", "description": "gradient of the cost term"},
    }

    @classmethod
    def check_settings(cls, settings: dict, key_of=lambda setting: f"search.settings.{setting}") -> None:
        require_cell_space("snas", settings, key_of)

    def __init__(self, space, model, options, settings, device, amp, validate=None):
        super().__init__(space, model, options, settings, device, amp, validate)
        self.alpha, self.arch_optimizer = gaussian_alpha_with_adam(space, options, device)
        self.temperature = float(options["temperature_start"])
        level = options["cost_level"]
        self.eta = 0.0 if level == "none" else float(options["cost_eta"][level])
        self.costs: dict[str, torch.Tensor] | None = None  # measured on the first batch

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.temperature = linear_temperature(epoch, epochs, self.options["temperature_start"], self.options["temperature_end"])

    def eval_weights(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {kind: F.softmax(alpha, dim=-1) for kind, alpha in self.alpha.items()}

    def snapshot(self) -> dict[str, Any]:
        snap = {f"alpha_{kind}": alpha.detach().cpu().numpy().copy() for kind, alpha in self.alpha.items()}
        snap["temperature"] = self.temperature
        return snap

    def state_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "temperature": self.temperature,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha.load_state_dict(state["alpha"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.temperature = float(state["temperature"])

    def cost_of(self, kind: str, weights: torch.Tensor) -> torch.Tensor:
        return edge_cost(weights, self.costs[kind], self.options["cost_form"], self.options["cost_weights"])

    def train_step(self, batch_w, batch_a, w_optimizer, lr):
        x, y = batch_w
        if self.costs is None:
            measured = op_costs(self.model, tuple(x.shape[1:]), self.space.cell_types)
            self.costs = {kind: c.to(device=x.device, dtype=torch.float32) for kind, c in measured.items()}
        samples, log_samples = {}, {}
        for kind, alpha in self.alpha.items():
            samples[kind], log_samples[kind] = gumbel_softmax(alpha, self.temperature)

        w_optimizer.zero_grad(set_to_none=True)
        self.arch_optimizer.zero_grad(set_to_none=True)
        ce, logits = self.loss(x, y, samples)
        loss = ce
        if self.eta > 0:
            cost = sum(
                cost_surrogate(
                    self.options["estimator"], alpha, samples[kind], log_samples[kind], self.temperature,
                    lambda w, kind=kind: self.cost_of(kind, w),
                )
                for kind, alpha in self.alpha.items()
            )
            loss = loss + self.eta * cost
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(w_optimizer)
        nn.utils.clip_grad_norm_(self.model.parameters(), self.settings["grad_clip"])
        self.scaler.step(w_optimizer)
        self.scaler.step(self.arch_optimizer)
        self.scaler.update()
        return ce.detach(), logits.detach()
