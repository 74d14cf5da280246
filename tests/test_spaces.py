import pytest
import torch

from pipeline.counting import count_multiply_adds, count_parameters
from pipeline.spaces import get_space
from pipeline.supernet import MixedOp

DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=range(2, 6))"
)


def test_darts_v2_cifar_network_has_the_published_3_3m_parameters():
    space = get_space("darts")
    model = space.build_network(space.from_text(DARTS_V2), channels=36, layers=20, num_classes=10, auxiliary=True)
    params = count_parameters(model)  # auxiliary head excluded, as in the paper
    assert abs(params / 1e6 - 3.3) <= 0.05
    assert count_parameters(model, exclude=()) > params  # the head exists and is left out


def test_genotype_text_round_trip():
    space = get_space("darts")
    cells = space.from_text(DARTS_V2)
    assert cells["normal"]["edges"][5] == {"node": 4, "input": 0, "op": "skip_connect"}
    assert cells["reduce"]["concat"] == [2, 3, 4, 5]
    assert space.from_text(space.to_text(cells)) == cells


@pytest.mark.parametrize("text", ["Genotype(normal=[])", "not python (", "Genotype(normal=[('conv_9x9', 0)]*8, normal_concat=[2], reduce=[], reduce_concat=[2])"])
def test_malformed_genotype_text_is_rejected(text):
    with pytest.raises(ValueError):
        get_space("darts").from_text(text)


def test_supernet_forward_backward_and_shapes():
    space = get_space("darts")
    model = space.build_supernet(channels=4, layers=3, num_classes=10)
    alpha = {k: torch.zeros(*space.arch_shape(), requires_grad=True) for k in space.cell_types}
    logits = model(torch.randn(2, 3, 16, 16), {k: a.softmax(-1) for k, a in alpha.items()})
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in alpha.values())
    assert space.arch_shape() == (14, 8)


def test_mixed_op_skips_zero_weight_ops_and_handles_per_sample_weights(monkeypatch):
    op = MixedOp(4, 1, get_space("darts").primitives)
    x = torch.randn(3, 4, 8, 8)
    weights = torch.zeros(8)
    weights[4] = 1.0  # only sep_conv_3x3
    for k, module in enumerate(op.ops):
        if k != 4:
            monkeypatch.setattr(module, "forward", lambda *_: (_ for _ in ()).throw(AssertionError("computed")))
    out = op(x, weights, active=[4])
    assert torch.allclose(out, op.ops[4](x))
    monkeypatch.undo()
    op.eval()  # BN on running statistics, so samples do not interact
    per_sample = torch.rand(3, 8)
    batched = op(x, per_sample, active=list(range(1, 8)))
    for i in range(3):
        single = op(x[i : i + 1], per_sample[i], active=list(range(1, 8)))
        torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-4, atol=1e-5)


def test_multiply_adds_of_a_linear_layer():
    layer = torch.nn.Linear(10, 5, bias=False)
    assert count_multiply_adds(layer, (1, 10)) == 50


def test_darts_v2_imagenet_mobile_network_has_the_published_4_7m_parameters():
    space = get_space("darts")
    model = space.build_network(space.from_text(DARTS_V2), 48, 14, 1000, auxiliary=True, setting="imagenet")
    assert abs(count_parameters(model) / 1e6 - 4.7) <= 0.03 * 4.7
    logits, aux = model(torch.zeros(2, 3, 224, 224))
    assert logits.shape == (2, 1000) and aux.shape == (2, 1000)


CELL_SPACES = ["darts", "darts_nonone", "unas", "unas_imagenet", "s2", "s3", "s4"]


@pytest.mark.parametrize("name", CELL_SPACES)
def test_every_cell_space_searches_and_round_trips(name, tiny_data, tmp_path):
    from conftest import search_params
    from pipeline import artifacts
    from pipeline.search.loop import run_search
    from pipeline.select.magnitude import parse_magnitude

    space = get_space(name)
    params = search_params(settings={"space": name, "epochs": 1, "batch_size": 30})
    checkpoint = artifacts.load_checkpoint(run_search(params, tiny_data, tmp_path, threads=1), "supernet")
    assert checkpoint["arch_weights"]["normal"].shape == (14, len(space.primitives))
    cells = parse_magnitude(space, checkpoint["arch_weights"])
    assert space.from_text(space.to_text(cells)) == cells
    model = space.build_network(cells, 4, 3, 10, auxiliary=False)
    logits, _ = model(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 10)


def test_space_op_sets():
    assert "none" not in get_space("darts_nonone").primitives and len(get_space("darts_nonone").primitives) == 7
    assert get_space("unas").primitives[-1] == "sep_conv_7x7" and len(get_space("unas_imagenet").primitives) == 5
    assert get_space("s4").primitives == ("noise", "sep_conv_3x3")
