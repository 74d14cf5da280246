import re

import pytest
import torch

from pipeline.nets.counting import count_multiply_adds, count_parameters
from pipeline.nets.supernet import MixedOp
from pipeline.registry import UnknownNameError
from pipeline.spaces import SPACES, get_space

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
    assert abs(params / 1e6 - 3.3) <= 0.05 and params == 3_349_342  # the original's 3.35M
    # DARTS' AuxiliaryHeadCIFAR keeps its BatchNorm after the 768-channel conv
    assert layer_types(model.auxiliary_head) == ["ReLU", "AvgPool2d", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU"]
    assert count_parameters(model, exclude=()) > params  # the head exists and is left out


def test_genotype_text_round_trip():
    space = get_space("darts")
    cells = space.from_text(DARTS_V2)
    assert cells["normal"]["edges"][5] == {"node": 4, "input": 0, "op": "skip_connect"}
    assert cells["reduce"]["concat"] == [2, 3, 4, 5]
    assert space.from_text(space.to_text(cells)) == cells


def original_darts_gene(weights, primitives):
    """The (op, input) list DARTS' model_search.genotype() prints for one cell's softmaxed
    weights: per node the two inputs whose best non-none op weighs most, strongest first
    (a stable sort: ties keep the lower input), each with its best non-none op (ties: the
    earlier op)."""
    none = primitives.index("none")
    gene, start = [], 0
    for inputs in range(2, 6):
        rows = weights[start : start + inputs].tolist()
        strength = [max(w for k, w in enumerate(row) if k != none) for row in rows]
        for j in sorted(range(inputs), key=lambda j: -strength[j])[:2]:
            best = None
            for k, w in enumerate(rows[j]):
                if k != none and (best is None or w > rows[j][best]):
                    best = k
            gene.append((primitives[best], j))
        start += inputs
    return gene


def test_printed_genotype_is_the_originals_for_random_alphas_and_reads_back():
    space = get_space("darts")
    g = torch.Generator().manual_seed(0)
    reordered = 0
    for trial in range(200):
        scale = 3.0 if trial % 2 else 1e-3  # trained-looking and freshly initialised alphas
        weights = {kind: (scale * torch.randn(14, 8, generator=g)).softmax(-1) for kind in space.cell_types}
        if trial % 10 == 0:  # exact ties between edges too
            weights["normal"][2:5] = weights["normal"][2]
        cells = space.parse(weights)
        text = space.to_text(cells)
        genes = {kind: original_darts_gene(weights[kind], list(space.primitives)) for kind in space.cell_types}
        assert text == f"Genotype(normal={genes['normal']}, normal_concat=[2, 3, 4, 5], reduce={genes['reduce']}, reduce_concat=[2, 3, 4, 5])"
        assert space.from_text(text) == cells
        reordered += any(a[1] > b[1] for kind in genes for a, b in zip(genes[kind][::2], genes[kind][1::2]))
    assert reordered > 100  # input order would differ from the original in most of them


def test_genotype_texts_with_inputs_in_index_order_read_as_before():
    space = get_space("darts")
    cells = space.from_text(DARTS_V2)
    swapped = DARTS_V2.replace("('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)", "('skip_connect', 2), ('max_pool_3x3', 1), ('skip_connect', 2)")
    other = space.from_text(swapped)
    def key(cell):
        return sorted((e["node"], e["input"], e["op"]) for e in cell["edges"])
    assert all(key(cells[kind]) == key(other[kind]) for kind in space.cell_types)
    assert other["reduce"]["edges"][6:] == [{"node": 5, "input": 1, "op": "max_pool_3x3"}, {"node": 5, "input": 2, "op": "skip_connect"}]
    assert space.to_text(other) != space.to_text(cells) and space.from_text(space.to_text(other)) == other


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


def layer_types(head):
    return [type(m).__name__ for m in head.features]


def test_darts_v2_imagenet_mobile_network_has_the_published_4_7m_parameters():
    space = get_space("darts")
    model = space.build_network(space.from_text(DARTS_V2), 48, 14, 1000, auxiliary=True, setting="imagenet")
    assert count_parameters(model) == 4_718_752  # the original's 4.72M for DARTS V2
    # DARTS' AuxiliaryHeadImageNet: no BatchNorm after the 768-channel conv (1x1 conv 768 -> 128,
    # BN 128, 2x2 conv 128 -> 768, linear 768 -> 1000)
    assert layer_types(model.auxiliary_head) == ["ReLU", "AvgPool2d", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "ReLU"]
    assert count_parameters(model.auxiliary_head, exclude=()) == 768 * 128 + 2 * 128 + 128 * 768 * 4 + 768 * 1000 + 1000
    logits, aux = model(torch.zeros(2, 3, 224, 224))
    assert logits.shape == (2, 1000) and aux.shape == (2, 1000)


# Per space: (init_channels, layers) small enough for CPU.
TINY_SCALE = {name: (2, 3) for name in ["darts", "darts_nonone", "unas", "unas_imagenet", "s1", "s2", "s3", "s4"]}
TINY_SCALE.update({"nb201": (4, 5), "proxyless": (4, 21), "proxyless_mobile": (4, 21)})


def test_every_registered_space_has_a_tiny_scale():
    assert sorted(TINY_SCALE) == SPACES.names()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY_SCALE))
def test_every_space_searches_and_round_trips(name, tiny_data, tmp_path):
    from conftest import search_params
    from pipeline import artifacts
    from pipeline.search.run import run_search
    from pipeline.select.magnitude import parse_magnitude

    space = get_space(name)
    channels, layers = TINY_SCALE[name]
    params = search_params(settings={"space": name, "epochs": 1, "batch_size": 30, "init_channels": channels, "layers": layers})
    checkpoint = artifacts.load_checkpoint(run_search(params, tiny_data, tmp_path, threads=1), "supernet")
    assert set(checkpoint["arch_weights"]) == set(space.cell_types)
    assert all(w.shape == space.arch_shape() for w in checkpoint["arch_weights"].values())
    cells = parse_magnitude(space, checkpoint["arch_weights"])
    assert space.from_text(space.to_text(cells)) == cells
    model = space.build_network(cells, 4, layers, 10, auxiliary=False)
    logits, _ = model(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 10)


def test_unknown_space_lists_the_known_ones():
    with pytest.raises(UnknownNameError) as info:
        get_space("dartz")
    assert "nb201" in str(info.value) and "proxyless" in str(info.value)


def test_s1_has_the_robustdarts_per_edge_pairs():
    space = get_space("s1")
    normal, reduce = space.candidates("normal"), space.candidates("reduce")
    assert space.arch_shape() == (14, 2)
    assert normal[0] == ["skip_connect", "dil_conv_3x3"] and normal[5] == ["max_pool_3x3", "skip_connect"]
    assert reduce[0] == ["max_pool_3x3", "avg_pool_3x3"] and reduce[13] == ["skip_connect", "dil_conv_5x5"]
    model = space.build_supernet(channels=2, layers=3, num_classes=10)
    assert [op.candidates for op in model.cells[0].edges] == [tuple(row) for row in normal]
    weights = {"normal": torch.tensor([[0.0, 1.0]] * 14), "reduce": torch.tensor([[1.0, 0.0]] * 14)}
    cells = space.parse(weights)
    assert {e["op"] for e in cells["normal"]["edges"]} <= {"dil_conv_3x3", "dil_conv_5x5", "sep_conv_3x3", "skip_connect"}
    with pytest.raises(ValueError, match="not a candidate"):
        space.validate_genotype({**cells, "normal": {**cells["normal"], "edges": [{"node": 2, "input": 0, "op": "sep_conv_5x5"}] + cells["normal"]["edges"][1:]}})


NB201_ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_nb201_networks_have_the_benchmarks_published_sizes():
    # NAS-Bench-201 (Dong & Yang, 2020), CIFAR-10, C=16, N=5: the largest cell has 1.53M
    # parameters and 220.11M FLOPs (multiply-adds); the best cell 1.07M and 153.27M.
    from pipeline.benchmarks import nb201

    space = get_space("nb201")
    largest = space.build_network(space.from_text(NB201_ALL_CONV3), 16, 17, 10, auxiliary=False)
    assert round(count_parameters(largest) / 1e6, 2) == 1.53
    assert round(count_multiply_adds(largest, (1, 3, 32, 32)) / 1e6, 2) == 220.12
    best = space.build_network(space.from_text(nb201.best().arch), 16, 17, 10, auxiliary=False)
    assert round(count_parameters(best) / 1e6, 2) == 1.07
    assert round(count_multiply_adds(best, (1, 3, 32, 32)) / 1e6, 2) == 153.27


def test_nb201_genotype_round_trips_and_rejects_malformed_strings():
    space = get_space("nb201")
    text = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    cells = space.from_text(text)
    assert space.to_text(cells) == text
    assert cells["cell"]["edges"][1] == {"node": 2, "input": 0, "op": "none"}
    with pytest.raises(ValueError, match=re.escape("|op~0|+|op~0|op~1|+|op~0|op~1|op~2|")):
        space.from_text("|nor_conv_3x3~0|+|none~0|")
    with pytest.raises(ValueError, match="3N \\+ 2"):
        space.build_supernet(16, 9, 10)


def test_nb201_supernet_shares_one_cell_and_skips_none():
    space = get_space("nb201")
    model = space.build_supernet(channels=4, layers=5, num_classes=10)
    one_hot = torch.zeros(6, 5)
    one_hot[:, space.primitives.index("nor_conv_3x3")] = 1.0
    fixed = space.build_network(space.from_text(NB201_ALL_CONV3), 4, 5, 10, auxiliary=False)
    # Same weights in both: the supernet at a one-hot alpha is the fixed network.
    fixed_state = fixed.state_dict()
    for name, tensor in model.state_dict().items():
        mapped = name.replace(".ops.3.", ".").replace("edges.", "ops.")
        if mapped in fixed_state and fixed_state[mapped].shape == tensor.shape:
            fixed_state[mapped] = tensor
    fixed.load_state_dict(fixed_state)
    model.eval(), fixed.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x, {"cell": one_hot}), fixed(x)[0], rtol=1e-4, atol=1e-5)


PROXYLESS_GPU_STAGES = [32] * 4 + [56] * 4 + [112] * 4 + [128] * 4 + [256] * 4 + [432]


def test_proxyless_space_has_21_layers_and_skip_only_where_shapes_allow():
    space = get_space("proxyless")
    shapes = space.layer_shapes(40, "imagenet")
    assert [s.c_out for s in shapes] == PROXYLESS_GPU_STAGES
    assert space.arch_shape() == (21, 7)
    for shape, names in zip(shapes, space.candidates("layers")):
        assert ("skip_connect" in names) == (shape.stride == 1 and shape.c_in == shape.c_out)
        assert [n for n in names if n != "skip_connect"] == [f"mbconv{e}_k{k}" for e in (3, 6) for k in (3, 5, 7)]
    assert sum(space.skippable) == 15
    with pytest.raises(ValueError, match="21 searchable layers"):
        space.build_supernet(4, 8, 10)
    with pytest.raises(ValueError, match="not a choice of layer 1"):
        space.from_text(" ".join(["skip_connect"] * 21))


def test_proxyless_mobile_layers_are_the_keys_of_the_pixel1_table():
    space = get_space("proxyless_mobile")
    shapes = space.layer_shapes(32, "imagenet")
    assert [s.c_out for s in shapes] == [24] * 4 + [40] * 4 + [80] * 4 + [96] * 4 + [192] * 4 + [320]
    model = space.build_network(space.from_text(" ".join(["mbconv6_k3"] * 21)), 32, 21, 1000, auxiliary=False, setting="imagenet")
    logits, _ = model(torch.zeros(1, 3, 224, 224))
    assert logits.shape == (1, 1000)


def test_proxyless_supernet_at_one_hot_weights_is_the_chosen_network():
    space = get_space("proxyless")
    choice = ["mbconv3_k5"] + ["skip_connect", "mbconv6_k7", "mbconv3_k3"] + ["mbconv6_k3"] * 17
    cells = space.from_text(" ".join(choice))
    supernet = space.build_supernet(4, 21, 10).eval()
    network = space.build_network(cells, 4, 21, 10, auxiliary=False).eval()
    weights = torch.zeros(21, 7)
    for layer, op in enumerate(choice):
        weights[layer, space.primitives.index(op)] = 1.0
    state = network.state_dict()
    for name, tensor in supernet.state_dict().items():
        if name.startswith("choices."):
            _, layer, k, rest = name.split(".", 3)
            if space.primitives[int(k)] == choice[int(layer)]:
                state[f"layers.{layer}.{rest}"] = tensor
        else:
            state[name] = tensor
    network.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(supernet(x, {"layers": weights}), network(x)[0], rtol=1e-4, atol=1e-5)
    # Softmax over a full row equals softmax over the layer's own candidates.
    alpha = torch.randn(21, 7)
    masked = alpha.masked_fill(~space.arch_mask()["layers"], float("-inf")).softmax(-1)
    torch.testing.assert_close(supernet(x, {"layers": alpha.softmax(-1)}), supernet(x, {"layers": masked}))


def test_space_op_sets():
    assert "none" not in get_space("darts_nonone").primitives and len(get_space("darts_nonone").primitives) == 7
    assert get_space("unas").primitives[-1] == "sep_conv_7x7" and len(get_space("unas_imagenet").primitives) == 5
    assert get_space("s4").primitives == ("noise", "sep_conv_3x3")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nb201", "proxyless"])
def test_search_select_retrain_tables_chain_in_a_non_cell_space(name, tiny_data, tmp_path):
    from conftest import retrain_params, search_params
    from pipeline.benchmarks import nb201
    from pipeline.search.run import run_search
    from pipeline.select.run import run_select
    from pipeline.stages.retrain import run_retrain
    from pipeline.stages.tables import build_table

    channels, layers = TINY_SCALE[name]
    settings = {"space": name, "epochs": 1, "batch_size": 30, "init_channels": channels, "layers": layers}
    supernet = run_search(search_params(settings=settings), tiny_data, tmp_path / "search", threads=1)
    select = {"dataset": "cifar10", "seed": 0, "method": "magnitude", "options": {"algorithm": "magnitude", "exclude_ops": ["none"]},
              "runtime": search_params()["runtime"]}
    genotype = run_select(select, supernet, tiny_data, tmp_path / "genotype.json", threads=1)
    assert genotype["space"] == name
    params = retrain_params(epochs=1, init_channels=channels, layers=layers, auxiliary_weight=0.0)
    summary = run_retrain(params, tmp_path / "genotype.json", tiny_data, tmp_path / "retrain", threads=1)
    assert summary["genotype_text"] == get_space(name).to_text(genotype["cells"])
    row = build_table([tmp_path / "retrain" / "metrics.h5"], "cifar10").iloc[0]
    assert row["space"] == name
    if name == "nb201":
        assert row["benchmark_test_acc"] == f"{nb201.lookup(summary['genotype_text']).cifar10_test_200ep:.2f} ± 0.00"
    else:
        assert row["benchmark_test_acc"] == ""


@pytest.mark.parametrize("name", SPACES.names())
def test_capability_flags_match_what_the_space_builds(name):
    """The declared flags that methods and config checks read agree with the space's structure."""
    from pipeline.nets.supernet import SuperNet
    from pipeline.spaces.base import Space

    space = get_space(name)
    assert isinstance(space, Space)
    edges, ops = space.arch_shape()
    assert edges == len(space.edges()) and all(len(row) <= ops for kind in space.cell_types for row in space.candidates(kind))
    assert set(op for kind in space.cell_types for row in space.candidates(kind) for op in row) <= set(space.primitives)
    if space.darts_cells:  # DARTS-family normal/reduce cells: built as the DARTS supernet
        assert space.cell_graph and space.cell_types == ("normal", "reduce") and space.inputs_per_node == 2
        assert isinstance(space.build_supernet(4, 2, 10), SuperNet)
    if space.cell_graph:  # a DAG whose every edge chooses among the same number of ops
        assert all(source < node for node, source in space.edges())
        assert all(len(row) == ops for kind in space.cell_types for row in space.candidates(kind))
    assert space.uniform_edges == (name != "s1" and not name.startswith("proxyless"))
    assert (space.benchmark == "nb201") == (name == "nb201")


def test_space_declarations_agree_with_the_networks_they_build():
    """Constants the torch-free declarations spell out themselves match the network modules."""
    from pipeline.nets import nb201 as nb201_net
    from pipeline.nets import proxyless as proxyless_net

    assert get_space("nb201").edges() == [(n, s) for n in range(1, nb201_net.NB201_NODES) for s in range(n)]
    space = get_space("proxyless")
    assert space.primitives[-1] == proxyless_net.SKIP
    assert all(proxyless_net.mbconv_name(*proxyless_net.parse_mbconv(op)) == op for op in space.primitives[:-1])
    assert [shape.residual for shape in space.layer_shapes(40, "imagenet")] == space.skippable
