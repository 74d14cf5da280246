"""DARTS (Liu et al., 2019): softmax-relaxed mixed ops, bilevel optimisation.

1st order: the architecture step uses the validation loss at the current weights.
2nd order: the validation loss at the weights after one virtual SGD step,
w' = w - lr * (momentum * buf + grad_w L_train + wd * w); its alpha gradient is
grad_alpha L_val(w') - lr * H v, where the Hessian-vector product comes from central
finite differences of grad_alpha L_train at w +- r v, v = grad_w' L_val, r = 0.01/||v||
(``hvp_epsilon``). The unrolled step always runs in fp32: finite differences in half
precision are noise.
"""

from __future__ import annotations

from typing import Any

from pipeline.lazy import F, nn, torch
from pipeline.search import METHODS
from pipeline.search.base import SearchMethod


@METHODS.register("darts")
class Darts(SearchMethod):
    OPTIONS = {
        "order": {"enum": [1, 2], "default": 1, "description": "1: first-order, 2: unrolled second-order"},
        "arch_lr": {"type": "number", "exclusiveMinimum": 0, "default": 3e-4},
        "arch_betas": {
            "type": "array",
            "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "minItems": 2,
            "maxItems": 2,
            "default": [0.5, 0.999],
        },
        "arch_weight_decay": {"type": "number", "minimum": 0, "default": 1e-3},
        "init_scale": {"type": "number", "minimum": 0, "default": 1e-3, "description": "alpha ~ init_scale * N(0, 1)"},
        "hvp_epsilon": {"type": "number", "exclusiveMinimum": 0, "default": 0.01, "description": "2nd order: r = hvp_epsilon / ||v||"},
    }

    def __init__(self, space, model, options, settings, device, amp, validate=None):
        super().__init__(space, model, options, settings, device, amp, validate)
        edges, ops = space.arch_shape()
        self.alpha = nn.ParameterDict(
            {kind: nn.Parameter(options["init_scale"] * torch.randn(edges, ops).to(device)) for kind in space.cell_types}
        )
        self.arch_optimizer = self.build_arch_optimizer()

    def build_arch_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.alpha.parameters(),
            lr=self.options["arch_lr"],
            betas=tuple(self.options["arch_betas"]),
            weight_decay=self.options["arch_weight_decay"],
        )

    def weights(self, alpha: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Op weights from ``alpha`` (default: the method's own)."""
        alpha = self.alpha if alpha is None else alpha
        return {kind: F.softmax(a, dim=-1) for kind, a in alpha.items()}

    def eval_weights(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self.weights()

    def snapshot(self) -> dict[str, Any]:
        return {f"alpha_{kind}": alpha.detach().cpu().numpy().copy() for kind, alpha in self.alpha.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha.state_dict(), "arch_optimizer": self.arch_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha.load_state_dict(state["alpha"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])

    # -- the step
    def train_step(self, batch_w, batch_a, w_optimizer, lr):
        self.arch_step(batch_w, batch_a, w_optimizer, lr)
        return self.weight_update(batch_w, w_optimizer)

    def weight_update(self, batch_w, w_optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight half of a step; returns (loss, logits)."""
        x, y = batch_w
        return self.weight_step(x, y, self.train_weights(x, y), w_optimizer)

    def train_weights(self, x, y) -> dict[str, torch.Tensor]:
        """Op weights the weight step sees (SDARTS perturbs them)."""
        return self.weights()

    def arch_step(self, batch_w, batch_a, w_optimizer, lr) -> None:
        grads = self.arch_gradient(batch_w, batch_a, w_optimizer, lr)
        self.arch_optimizer.zero_grad(set_to_none=True)
        for alpha, grad in zip(self.alpha.values(), grads):
            alpha.grad = grad
        self.arch_optimizer.step()

    def arch_gradient(self, batch_w, batch_a, w_optimizer, lr, alpha=None) -> list[torch.Tensor]:
        """Gradient w.r.t. ``alpha`` (default: the method's own), in cell-type order."""
        alpha = self.alpha if alpha is None else alpha
        alphas = list(alpha.values())
        if self.options["order"] == 1:
            loss, _ = self.loss(*batch_a, self.weights(alpha))  # a plain backward pass: AMP is fine
            grads = torch.autograd.grad(loss, alphas, allow_unused=True)
            # Alpha can drop out of the graph once PT has decided every edge and `none` cuts a
            # cell's output (NB201): then it has no gradient, as backward() would leave it.
            return [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, grads)]
        return self._unrolled_gradient(batch_w, batch_a, w_optimizer, lr, alpha)

    def _unrolled_gradient(self, batch_w, batch_a, w_optimizer, lr, alpha) -> list[torch.Tensor]:
        names, params = zip(*[(n, p) for n, p in self.model.named_parameters() if p.requires_grad])
        alphas = list(alpha.values())
        group = w_optimizer.param_groups[0]
        momentum, weight_decay = group["momentum"], group["weight_decay"]

        # Virtual step w' = w - lr * (momentum * buf + grad + wd * w), arch weights fixed.
        train_loss, _ = self.loss(*batch_w, {k: w.detach() for k, w in self.weights(alpha).items()}, amp=False)
        grads = torch.autograd.grad(train_loss, params)
        unrolled = []
        with torch.no_grad():
            for p, g in zip(params, grads):
                step = g + weight_decay * p
                buf = w_optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    step = step + momentum * buf
                unrolled.append((p - lr * step).requires_grad_(True))

        # BN statistics of the virtual passes go to one scratch copy: they must not move the
        # supernet's (DARTS uses a model copy), and no pass reads them back (train mode
        # normalises by batch statistics; eval mode does not update them).
        scratch = {name: b.clone() for name, b in self.model.named_buffers()}

        # Validation loss at w'; gradients for alpha and for w'.
        val_loss = self._functional_loss(dict(zip(names, unrolled)), scratch, batch_a, alpha)
        all_grads = torch.autograd.grad(val_loss, alphas + unrolled)
        d_alpha, d_unrolled = list(all_grads[: len(alphas)]), list(all_grads[len(alphas) :])

        hvp = self._hessian_vector_product(names, params, d_unrolled, scratch, batch_w, alpha)
        return [da - lr * h for da, h in zip(d_alpha, hvp)]

    def _functional_loss(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], batch, alpha) -> torch.Tensor:
        """Loss at other weights and BN buffers, in fp32."""
        x, y = batch
        logits = torch.func.functional_call(self.model, {**params, **buffers}, (x, self.weights(alpha)))
        return F.cross_entropy(logits.float(), y)

    def _hessian_vector_product(self, names, params, vector, buffers, batch_w, alpha) -> list[torch.Tensor]:
        """(grad_alpha L_train(w + r v) - grad_alpha L_train(w - r v)) / (2 r)."""
        alphas = list(alpha.values())
        r = self.options["hvp_epsilon"] / torch.cat([v.flatten() for v in vector]).norm()
        grads = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                shifted = {n: p + sign * r * v for n, p, v in zip(names, params, vector)}
            loss = self._functional_loss(shifted, buffers, batch_w, alpha)
            grads.append(torch.autograd.grad(loss, alphas))
        return [(gp - gm) / (2 * r) for gp, gm in zip(*grads)]
