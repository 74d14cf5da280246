"""The original DARTS search step (Liu et al., 2019, cnn/model_search.py and architect.py),
re-implemented for timing comparisons only. It keeps the reference's costs on purpose:

- every op of every edge runs, ``none`` (x * 0) included, whatever its weight;
- alpha lives in the network as plain tensors, softmax recomputed in every cell;
- the 1st-order architecture step calls ``loss.backward()``, so it also fills the network
  weights' gradients (thrown away by the weight step's ``zero_grad``);
- the 2nd-order step builds a fresh network (``new()``: construction, random init, then
  ``load_state_dict`` of the unrolled weights) every step, backpropagates the validation
  loss into every unrolled weight and alpha, and perturbs the live weights in place for the
  two finite-difference passes (which, in train mode, also move BN running statistics);
- NCHW memory layout, fp32.

The ops are the pipeline's (the same definitions as DARTS' operations.py), except that the
depthwise convolutions are plain ``nn.Conv2d(groups=C)`` as in DARTS, not the pipeline's
CPU-specialised ``DepthwiseConv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.nets.depthwise import DepthwiseConv2d
from pipeline.nets.ops import OPS, FactorizedReduce, ReLUConvBN


def _plain_depthwise(op: nn.Module) -> nn.Module:
    """``op`` with each of the pipeline's DepthwiseConv2d layers swapped for the plain
    grouped nn.Conv2d DARTS uses (fresh weights: the network is initialised anyway)."""
    for name, child in op.named_children():
        if isinstance(child, DepthwiseConv2d):
            c, k = child.in_channels, child.kernel_size
            setattr(op, name, nn.Conv2d(c, c, k, child.stride, child.padding, dilation=child.dilation, groups=c, bias=False))
        else:
            _plain_depthwise(child)
    return op


PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class MixedOp(nn.Module):
    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.ops = nn.ModuleList()
        for name in PRIMITIVES:
            op = _plain_depthwise(OPS[name](channels, stride, False))
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(channels, affine=False))
            self.ops.append(op)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class Cell(nn.Module):
    def __init__(self, steps, multiplier, c_pp, c_p, c, reduction, reduction_prev):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.steps, self.multiplier = steps, multiplier
        self.edges = nn.ModuleList(
            MixedOp(c, 2 if reduction and j < 2 else 1) for i in range(steps) for j in range(2 + i)
        )

    def forward(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            s = sum(self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self.multiplier :], dim=1)


class Network(nn.Module):
    def __init__(self, channels: int, num_classes: int, layers: int, steps: int = 4, multiplier: int = 4, stem_multiplier: int = 3):
        super().__init__()
        self.args = (channels, num_classes, layers, steps, multiplier, stem_multiplier)
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            self.cells.append(Cell(steps, multiplier, c_pp, c_p, c_curr, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, multiplier * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        edges = sum(2 + i for i in range(steps))
        device = self.classifier.weight.device
        self.alphas_normal = (1e-3 * torch.randn(edges, len(PRIMITIVES), device=device)).requires_grad_(True)
        self.alphas_reduce = (1e-3 * torch.randn(edges, len(PRIMITIVES), device=device)).requires_grad_(True)

    def arch_parameters(self):
        return [self.alphas_normal, self.alphas_reduce]

    def new(self) -> Network:
        fresh = Network(*self.args).to(self.classifier.weight.device)
        for mine, theirs in zip(fresh.arch_parameters(), self.arch_parameters()):
            mine.data = theirs.data.clone()  # plain tensors: .to() above left them on the CPU
        return fresh

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            weights = F.softmax(self.alphas_reduce if cell.reduction else self.alphas_normal, dim=-1)
            s0, s1 = s1, cell(s0, s1, weights)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def loss(self, x, y):
        return F.cross_entropy(self(x), y)


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


class Architect:
    def __init__(self, model: Network, momentum=0.9, weight_decay=3e-4, arch_lr=3e-4, arch_weight_decay=1e-3):
        self.model = model
        self.momentum, self.weight_decay = momentum, weight_decay
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=arch_lr, betas=(0.5, 0.999), weight_decay=arch_weight_decay)

    def step(self, x_train, y_train, x_valid, y_valid, eta, w_optimizer, unrolled: bool):
        self.optimizer.zero_grad()
        if unrolled:
            self._backward_step_unrolled(x_train, y_train, x_valid, y_valid, eta, w_optimizer)
        else:
            self.model.loss(x_valid, y_valid).backward()
        self.optimizer.step()

    def _unrolled_model(self, x, y, eta, w_optimizer) -> Network:
        loss = self.model.loss(x, y)
        params = list(self.model.parameters())
        theta = _flat(params).data
        try:
            moment = _flat(w_optimizer.state[p]["momentum_buffer"] for p in params).mul_(self.momentum)
        except KeyError:
            moment = torch.zeros_like(theta)
        dtheta = _flat(torch.autograd.grad(loss, params)).data + self.weight_decay * theta
        return self._model_from_theta(theta - eta * (moment + dtheta))

    def _model_from_theta(self, theta) -> Network:
        fresh = self.model.new()
        state = self.model.state_dict()
        offset = 0
        for name, p in self.model.named_parameters():
            state[name] = theta[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        fresh.load_state_dict(state)
        return fresh

    def _backward_step_unrolled(self, x_train, y_train, x_valid, y_valid, eta, w_optimizer):
        unrolled = self._unrolled_model(x_train, y_train, eta, w_optimizer)
        unrolled.loss(x_valid, y_valid).backward()
        d_alpha = [a.grad for a in unrolled.arch_parameters()]
        vector = [p.grad.data for p in unrolled.parameters()]
        implicit = self._hessian_vector_product(vector, x_train, y_train)
        for g, ig in zip(d_alpha, implicit):
            g.data.sub_(eta * ig.data)
        for a, g in zip(self.model.arch_parameters(), d_alpha):
            a.grad = g.data.clone()

    def _hessian_vector_product(self, vector, x, y, r=1e-2):
        radius = r / _flat(vector).norm()
        params = list(self.model.parameters())
        for p, v in zip(params, vector):
            p.data.add_(radius * v)
        grads_p = torch.autograd.grad(self.model.loss(x, y), self.model.arch_parameters())
        for p, v in zip(params, vector):
            p.data.sub_(2 * radius * v)
        grads_n = torch.autograd.grad(self.model.loss(x, y), self.model.arch_parameters())
        for p, v in zip(params, vector):
            p.data.add_(radius * v)
        return [(gp - gn).div_(2 * radius) for gp, gn in zip(grads_p, grads_n)]


def weight_step(model: Network, x, y, w_optimizer, grad_clip: float = 5.0):
    w_optimizer.zero_grad()
    loss = model.loss(x, y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    w_optimizer.step()
    return loss
