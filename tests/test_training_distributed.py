"""Pieces of the DDP set-up that run in one process (the two-process runs are in test_stage_retrain)."""

import torch
from torch import nn

from pipeline.training.distributed import CrossProcessBatchNorm, World, convert_batchnorm, start, unwrap, wrap


def test_a_plain_run_is_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world, device = start(torch.device("cpu"))
    assert world == World() and world.is_main and not world.distributed and device == torch.device("cpu")
    model = nn.Linear(2, 2)
    assert wrap(model, world, device) is model and unwrap(model) is model
    assert world.all_gather_object({"a": 1}) == [{"a": 1}]


def test_cpu_conversion_keeps_every_batchnorm_state_and_acts_alike_in_one_process():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4, affine=False)))
    model[1].running_mean.fill_(0.5)
    x = torch.randn(8, 3, 6, 6)
    expected = model(x)
    reference = {name: value.clone() for name, value in model.state_dict().items()}
    converted = convert_batchnorm(model, torch.device("cpu"))
    assert [type(m) for m in converted.modules()].count(CrossProcessBatchNorm) == 2
    state = converted.state_dict()
    assert set(state) == set(reference) and all(torch.equal(state[name], value) for name, value in reference.items())
    assert torch.allclose(converted(x), expected, atol=1e-6)  # no process group: plain BN
