"""Train-free selection (BaLeNAS-TF, Zhang et al.): draw K architectures from the learnt
distribution, score each untrained child network with a saliency proxy, keep the best.

Sampling. If the search method learnt a Gaussian over alpha and stored it in its state
(``checkpoint["method"]["sigma"]`` and the mean as ``["mu"]`` or ``["alpha"]``, per cell
type; BaLeNAS), alpha is drawn
from N(mu, sigma^2); otherwise each edge's op weights are read as a categorical
distribution and alpha = log(weight) + Gumbel noise (the Gumbel-max trick: an exact draw of
each edge's op). The sample is parsed like the DARTS parse (``exclude_ops``, top
``inputs_per_node`` edges per node).

Proxies (Abdelfattah et al., 2021, as BaLeNAS-TF uses them), summed over the weights of
every convolution and linear layer of the child network built with ``space.build_network``
at the search's ``init_channels`` and ``layers``, no auxiliary head; the largest wins:
- ``synflow``: no data. BN layers removed, weights replaced by |theta|, one all-ones input
  of ``image_size``; score = sum theta * dR/dtheta with R the sum of the logits. In
  float64: the products over depth overflow float32.
- ``snip``: one batch, train mode; score = sum |theta * dL/dtheta|.
- ``grasp``: one batch, train mode; score = sum -theta * (H g), g = dL/dtheta, H the
  Hessian of L (temperature 1, as the zero-cost proxies use it).
- ``zico`` (Li et al., ICLR 2023, as the authors' code computes it): ``zico_batches``
  batches (default 2), train mode; per layer, over the batches, the mean |g| and the
  standard deviation (population) of each weight's gradient g; score = sum over layers of
  log sum_theta mean|g| / std(g), weights whose std is 0 left out, layers whose sum is 0
  contributing nothing.
- ``nwot`` (Mellor et al., ICML 2021, "NASWOT"): one batch, train mode, no gradients;
  per ReLU module the binary code c of each sample (its output > 0, flattened); kernel
  K = sum over ReLUs of c c^T + (1 - c)(1 - c)^T; score = log |det K| (float64).
Sample k's alpha and network initialisation come from (seed, k); SNIP and GraSP score
every sample on the same batch (the first of the search's weight-half loader for the seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pipeline.lazy import F, nn, no_grad, np, torch
from pipeline.select import METHODS
from pipeline.select.base import SelectionContext, SelectionError, SelectionMethod
from pipeline.select.magnitude import ALL_OPS, parse_magnitude


def _scored_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _logits(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def synflow(net: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> float:
    """SynFlow of ``net`` (modified in place: use a fresh network). Needs no data."""
    net = net.to(device=device, dtype=torch.float64)
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.forward = lambda x: x  # the proxy is defined on the network without BN
    net.eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    _logits(net(ones)).sum().backward()
    return _sum_over_layers(net, lambda w: (w * w.grad).abs())


def snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """SNIP saliency of ``net`` on one batch (``net`` gets gradients)."""
    net.train()
    net.zero_grad(set_to_none=True)
    F.cross_entropy(_logits(net(x)), y).backward()
    return _sum_over_layers(net, lambda w: (w * w.grad).abs())


def grasp(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """GraSP score of ``net`` on one batch: sum of -theta * Hg."""
    net.train()
    weights = [m.weight for m in _scored_layers(net)]
    first = torch.autograd.grad(F.cross_entropy(_logits(net(x)), y), weights, allow_unused=True)
    grads = torch.autograd.grad(F.cross_entropy(_logits(net(x)), y), weights, create_graph=True, allow_unused=True)
    z = sum((g0.detach() * g).sum() for g0, g in zip(first, grads) if g0 is not None and g is not None)
    if not torch.is_tensor(z) or not z.requires_grad:
        return 0.0
    hessian_g = torch.autograd.grad(z, weights, allow_unused=True)
    total = sum((-w.detach() * h).sum().item() for w, h in zip(weights, hessian_g) if h is not None)
    return float(total)


def zico(net: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """ZiCo of ``net`` over ``batches`` (two or more; ``net`` gets gradients)."""
    net.train()
    layers = _scored_layers(net)
    grads: list[list[torch.Tensor]] = [[] for _ in layers]
    for x, y in batches:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(_logits(net(x)), y).backward()
        for store, layer in zip(grads, layers):
            if layer.weight.grad is not None:
                store.append(layer.weight.grad.detach().flatten().double())
    total = 0.0
    for store in grads:
        if len(store) < len(batches):
            continue
        g = torch.stack(store)
        std = g.std(dim=0, unbiased=False)
        keep = std != 0
        ratio = (g.abs().mean(dim=0)[keep] / std[keep]).sum().item()
        if ratio != 0:
            total += math.log(ratio)
    return total


@no_grad
def nwot(net: nn.Module, x: torch.Tensor) -> float:
    """NASWOT score of ``net`` on the batch ``x``: log |det K| of the ReLU-code kernel."""
    net.train()
    n = len(x)
    kernel = torch.zeros(n, n, dtype=torch.float64, device=x.device)

    def count(module, inputs, output):
        nonlocal kernel
        codes = (output.detach().reshape(n, -1) > 0).double()
        kernel = kernel + codes @ codes.T + (1 - codes) @ (1 - codes).T

    handles = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        net(x)
    finally:
        for handle in handles:
            handle.remove()
    return float(torch.linalg.slogdet(kernel)[1])


def _sum_over_layers(net: nn.Module, saliency: Callable[[torch.Tensor], torch.Tensor]) -> float:
    total = 0.0
    for layer in _scored_layers(net):
        if layer.weight.grad is not None:
            total += saliency(layer.weight).sum().item()
    return total


PROXIES = ("synflow", "snip", "grasp", "zico", "nwot")


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def arch_distribution(checkpoint: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """The Gaussian over alpha the search learnt ({cell type: (mu, sigma)}), if it stored one:
    ``sigma`` per cell type beside the mean, ``mu`` or (BaLeNAS) ``alpha``."""
    state = checkpoint.get("method")
    if not isinstance(state, dict) or not isinstance(state.get("sigma"), dict):
        return None
    mu = state.get("mu", state.get("alpha"))
    if not isinstance(mu, dict) or set(mu) != set(state["sigma"]):
        return None
    return {kind: (mu[kind].float().cpu(), state["sigma"][kind].float().cpu()) for kind in mu}


def sample_weights(
    eval_weights: dict[str, torch.Tensor],
    distribution: dict[str, tuple[torch.Tensor, torch.Tensor]] | None,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """One draw of op weights per cell type: softmax of alpha ~ N(mu, sigma^2), or of
    log(weight) + Gumbel noise when there is no Gaussian."""
    sampled = {}
    for kind in sorted(eval_weights):
        w = eval_weights[kind].detach().float().cpu()
        if distribution is not None:
            mu, sigma = distribution[kind]
            alpha = mu + sigma * torch.randn(mu.shape, generator=generator)
        else:
            uniform = torch.rand(w.shape, generator=generator).clamp(1e-20, 1.0)
            alpha = w.clamp(min=1e-30).log() - torch.log(-torch.log(uniform))
        sampled[kind] = F.softmax(alpha, dim=-1)
    return sampled


@METHODS.register("trainfree")
class TrainFree(SelectionMethod):
    runs_network = True  # scores networks on a batch: a GPU job on a cluster
    OPTIONS = {
        "proxy": {"enum": list(PROXIES), "default": "synflow", "description": "saliency proxy that scores each sample"},
        "samples": {"type": "integer", "minimum": 1, "default": 10, "description": "K architectures drawn (BaLeNAS-TF: 10, 50, 100)"},
        "batch_size": {"type": "integer", "minimum": 1, "default": 64, "description": "snip/grasp/zico/nwot: images per batch"},
        "zico_batches": {"type": "integer", "minimum": 2, "default": 2, "description": "zico: batches the gradient statistics run over"},
        "image_size": {"type": "integer", "minimum": 1, "default": 32, "description": "synflow: side of the all-ones input"},
        "exclude_ops": {
            "type": "array",
            "items": {"enum": ALL_OPS},
            "uniqueItems": True,
            "default": ["none"],
            "description": "ops never selected when a sample is parsed",
        },
    }

    def select(self, ctx: SelectionContext) -> dict:
        o = self.options
        space, settings = ctx.space, ctx.search_params["settings"]
        distribution = arch_distribution(ctx.checkpoint)
        samples = []
        for k in range(o["samples"]):
            generator = torch.Generator().manual_seed(_seed(ctx.seed, k, 0))
            weights = sample_weights(ctx.arch_weights, distribution, generator)
            samples.append(parse_magnitude(space, weights, o["exclude_ops"]))

        batch = None
        if o["proxy"] == "synflow":
            num_classes = _num_classes(ctx)
        elif o["proxy"] == "zico":
            batches, num_classes = first_batches(ctx, o["batch_size"], o["zico_batches"])
        else:
            batch, num_classes = one_batch(ctx, o["batch_size"])
        scores = []
        for k, cells in enumerate(samples):
            torch.manual_seed(_seed(ctx.seed, k, 1))
            net = space.build_network(cells, settings["init_channels"], settings["layers"], num_classes, False).to(ctx.device)
            if o["proxy"] == "synflow":
                score = synflow(net, (3, o["image_size"], o["image_size"]), ctx.device)
            elif o["proxy"] == "zico":
                score = zico(net, batches)
            elif o["proxy"] == "nwot":
                score = nwot(net, batch[0])
            else:
                score = (snip if o["proxy"] == "snip" else grasp)(net, *batch)
            scores.append(score)
        ranked = [s if math.isfinite(s) else -math.inf for s in scores]
        best = max(range(len(samples)), key=lambda i: (ranked[i], -i))
        texts = [space.to_text(cells) for cells in samples]
        ctx.record.add(
            step=0, cell_type="all", kind="sample", criterion=o["proxy"], action="keep", choice=texts[best],
            candidates=[(text, -1, score, math.nan) for text, score in zip(texts, scores)],
        )
        ctx.record.summary.update(
            proxy=o["proxy"], samples=o["samples"], sampling="gaussian" if distribution is not None else "categorical",
            search_method=ctx.search_params["options"]["algorithm"],
        )
        return samples[best]


def _num_classes(ctx: SelectionContext) -> int:
    """Classes of the search, from the supernet's classifier (SynFlow reads no data)."""
    for name, tensor in ctx.checkpoint["model"].items():
        if name.endswith("classifier.weight"):
            return int(tensor.shape[0])
    raise SelectionError(f"{ctx.supernet_path}: no 'classifier.weight' in the supernet to tell the number of classes")


def one_batch(ctx: SelectionContext, batch_size: int) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
    """The first batch of the search's weight-half loader for the selection seed."""
    batches, num_classes = first_batches(ctx, batch_size, 1)
    return batches[0], num_classes


def first_batches(ctx: SelectionContext, batch_size: int, count: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """The first ``count`` batches of the search's weight-half loader for the selection seed."""
    from itertools import islice

    from pipeline.search.supernet_training import search_loaders
    from pipeline.training.data import load_prepared

    data = load_prepared(ctx.data_path, ctx.device)
    loader = search_loaders(data, ctx.search_params["settings"], channels_last=False).w
    batches = list(islice(loader.epoch(_seed(ctx.seed, 2), batch_size=batch_size), count))
    if len(batches) < count:
        raise SelectionError(f"zico needs {count} batches of {batch_size} images; the search's weight half has {loader.num_samples} images")
    return batches, data.num_classes
