"""Random architecture samples for the stochastic search methods (SNAS, UNAS).

Every draw uses torch's global generator, whose state the search checkpoint saves, so a
resumed search draws the same samples as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.lazy import F, torch


def uniform(shape, like: torch.Tensor) -> torch.Tensor:
    """U(0, 1) kept off 0 and 1, where the Gumbel transforms below are infinite."""
    finfo = torch.finfo(like.dtype)
    return torch.rand(shape, device=like.device, dtype=like.dtype).clamp_(min=finfo.tiny, max=1.0 - finfo.eps)


def gumbel_noise(shape, like: torch.Tensor) -> torch.Tensor:
    return -torch.log(-torch.log(uniform(shape, like)))


def gumbel_softmax(logits: torch.Tensor, temperature: float, sample_shape: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """A reparameterized Concrete sample Z = softmax((logits + G) / t) per row, and log Z."""
    shape = (*sample_shape, *logits.shape)
    scaled = (logits + gumbel_noise(shape, logits)) / temperature
    return F.softmax(scaled, dim=-1), F.log_softmax(scaled, dim=-1)


def linear_temperature(epoch: int, epochs: int, start: float, end: float) -> float:
    """``start`` at the first epoch, ``end`` at the last, linear in between."""
    if epochs <= 1:
        return start
    return start + (end - start) * epoch / (epochs - 1)


def concrete_log_density(logits: torch.Tensor, log_x: torch.Tensor, temperature: float) -> torch.Tensor:
    """log p(x) of the Concrete (Gumbel-softmax) distribution (Maddison et al., 2017) per
    row of the last axis, from log x (exact where x itself underflows):
    log (n-1)! + (n-1) log t + sum_k (a_k - (t+1) log x_k) - n logsumexp_k(a_k - t log x_k).
    """
    n = logits.shape[-1]
    return (
        math.lgamma(n)
        + (n - 1) * math.log(temperature)
        + (logits - (temperature + 1) * log_x).sum(-1)
        - n * torch.logsumexp(logits - temperature * log_x, dim=-1)
    )


@dataclass
class CategoricalSample:
    """One draw b of a categorical q = softmax(logits), with its relaxations."""

    index: torch.Tensor  # b, the argmax (..., 1)
    hard: torch.Tensor  # one-hot of b
    relaxed: torch.Tensor  # REBAR: value softmax(z/t), gradient of softmax(z/t) - softmax(z~/t)
    log_prob: torch.Tensor  # log q(b) (...), differentiable in the logits


def rebar_categorical(logits: torch.Tensor, temperature: float, sample_shape: tuple[int, ...] = ()) -> CategoricalSample:
    """Draw b = argmax z, z = log q + Gumbel noise, and relax it REBAR's way (Tucker et al.,
    2017): z~ is z resampled given b by the conditional Gumbel construction, reusing z's own
    noise, so z~ equals z in value but differs in how it depends on the logits:
    z~_b = -log(-log v_b), z~_k = -log(-log v_k / q_k - log v_b), with v from u and b
    held fixed. ``relaxed`` carries d softmax(z/t) - d softmax(z~/t); then
    E[(f(b) - f(relaxed)) d log q(b) + d f(relaxed)] is the exact gradient of E[f(b)].
    Logits of -inf (masked categories) are never drawn and get no gradient.
    """
    log_q = F.log_softmax(logits, dim=-1).expand(*sample_shape, *logits.shape)
    q = log_q.exp()
    log_u = torch.log(uniform(log_q.shape, log_q))
    z = log_q - torch.log(-log_u)
    index = z.argmax(dim=-1, keepdim=True)
    with torch.no_grad():  # (b, v) is what the conditional sample is given
        q_fixed = q.detach()
        log_v_b = log_u.gather(-1, index) / q_fixed.gather(-1, index)
        log_v = log_u - q_fixed * log_v_b
    possible = q > 0  # where q = 0 the formula is inf / inf: keep it (and its gradient) finite
    z_tilde = -torch.log(-log_v / torch.where(possible, q, torch.ones_like(q)) - log_v_b)
    z_tilde = torch.where(possible, z_tilde, torch.full_like(z_tilde, float("-inf")))
    z_tilde = z_tilde.scatter(-1, index, -torch.log(-log_v_b))
    soft = F.softmax(z / temperature, dim=-1)
    soft_tilde = F.softmax(z_tilde / temperature, dim=-1)
    hard = torch.zeros_like(soft).scatter_(-1, index, 1.0)
    return CategoricalSample(
        index=index,
        hard=hard,
        relaxed=soft - soft_tilde + soft_tilde.detach(),
        log_prob=log_q.gather(-1, index).squeeze(-1),
    )


def rebar_surrogate(log_prob: torch.Tensor, f_hard: torch.Tensor, f_relaxed: torch.Tensor) -> torch.Tensor:
    """Loss whose gradient is REBAR's estimate of d E[f(b)]: the score term with the relaxed
    loss as control variate, plus the relaxed loss itself (its gradient carries the
    conditional correction of ``rebar_categorical``)."""
    return (log_prob * (f_hard - f_relaxed).detach() + f_relaxed).mean()


def reinforce_surrogate(log_prob: torch.Tensor, f_hard: torch.Tensor, baseline: float) -> torch.Tensor:
    """Loss whose gradient is REINFORCE's estimate of d E[f(b)] with a constant baseline."""
    return (log_prob * (f_hard - baseline).detach()).mean()
