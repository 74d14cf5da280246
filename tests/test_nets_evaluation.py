"""Every registered space's evaluation network records the drop-path probability its
forward pass applies: the loops write ``drop_path_prob`` into metrics.h5 from it."""

import pytest
import torch

from contracts import smallest_depth
from pipeline.spaces import SPACES, get_space


def some_network(name: str):
    space = get_space(name)
    generator = torch.Generator().manual_seed(0)
    weights = {kind: torch.rand(space.arch_shape(), generator=generator) for kind in space.cell_types}
    cells = space.parse(weights, exclude_ops=["none"])  # every edge carries a path
    return space.build_network(cells, 8, smallest_depth(name), 10, auxiliary=False)


def train_logits(net, x, prob: float) -> torch.Tensor:
    net.set_drop_path_prob(prob)
    torch.manual_seed(1)  # the same dropout draws either way
    return net(x)[0]


@pytest.mark.parametrize("name", SPACES.names())
def test_the_recorded_drop_path_probability_is_the_applied_one(name):
    net = some_network(name).train()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    without = train_logits(net, x, 0.0)
    with_drop_path = train_logits(net, x, 0.5)
    applied = not torch.allclose(with_drop_path, without)
    assert net.drop_path_prob == (0.5 if applied else 0.0)
    assert applied == net.uses_drop_path
