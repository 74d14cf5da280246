import pytest
import torch
import torch.nn.functional as F

from conftest import SEARCH_SETTINGS, random_batch
from pipeline.config import ConfigError
from pipeline.nets.supernet import MixedOp, active_ops, channel_shuffle
from pipeline.search.pc_darts import PcDarts, edge_normalisation
from pipeline.search.supernet_training import build_supernet
from pipeline.spaces import get_space
from pipeline.spaces.cell import DARTS_PRIMITIVES

OPS = list(DARTS_PRIMITIVES)
ALL = [k for k, name in enumerate(OPS) if name != "none"]


def options(**given):
    from pipeline.config import method_options
    from pipeline.search import METHODS

    return method_options(METHODS, {"algorithm": "pc_darts", **given}, "options")


def softmax_weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.softmax(torch.randn(len(OPS), generator=g), dim=0)


@pytest.mark.parametrize("stride", [1, 2])
def test_with_k1_the_mixed_op_is_darts_exactly(stride):
    torch.manual_seed(0)
    plain = MixedOp(8, stride, OPS)
    torch.manual_seed(0)
    partial = MixedOp(8, stride, OPS, partial_channels=1)
    partial.load_state_dict(plain.state_dict())
    x = torch.randn(4, 8, 8, 8)
    w = softmax_weights()
    assert torch.equal(plain(x, w, ALL), partial(x, w, ALL))


def test_with_k1_the_supernet_is_darts_exactly():
    space = get_space("darts")
    torch.manual_seed(0)
    plain = space.build_supernet(4, 3, 10)
    torch.manual_seed(0)
    k1 = build_supernet(space, {**SEARCH_SETTINGS, "init_channels": 4, "layers": 3, "partial_channels": 1}, 10, torch.device("cpu"), False)
    assert plain.state_dict().keys() == k1.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), k1.state_dict().values()))
    weights = {kind: F.softmax(torch.randn(14, 8), -1) for kind in ("normal", "reduce")}
    x = random_batch(0)[0]
    assert torch.equal(plain(x, weights), k1(x, weights))


def test_shuffle_is_a_permutation_of_the_channels():
    x = torch.arange(12.0).view(1, 12, 1, 1).expand(2, 12, 3, 3)
    out = channel_shuffle(x, 4)
    assert sorted(out[0, :, 0, 0].tolist()) == list(range(12))
    # output channel i comes from group i % K, position i // K
    assert out[0, :, 0, 0].tolist() == [(i % 4) * 3 + i // 4 for i in range(12)]
    assert torch.equal(out[1], out[0])


@pytest.mark.parametrize("stride", [1, 2])
def test_with_k4_only_a_quarter_of_the_channels_go_through_the_ops(stride):
    torch.manual_seed(0)
    partial = MixedOp(16, stride, OPS, partial_channels=4)
    inner = MixedOp(4, stride, OPS)  # the same ops on 4 channels
    inner.load_state_dict(partial.state_dict())
    for module in (partial, inner):
        module.eval()  # BN running statistics: each channel's output depends on its own input only
    w = softmax_weights(1)
    x = torch.randn(2, 16, 8, 8)
    out = partial(x, w, ALL)
    # undo the shuffle: channel c of the concatenation sits at position (c % 4) * 4 + c // 4
    unshuffled = out[:, [(c % 4) * 4 + c // 4 for c in range(16)]]
    torch.testing.assert_close(unshuffled[:, :4], inner(x[:, :4], w, ALL))
    bypass = x[:, 4:] if stride == 1 else F.max_pool2d(x[:, 4:], 2, 2)
    torch.testing.assert_close(unshuffled[:, 4:], w.sum() * bypass)
    # changing the bypassed channels changes no channel that went through the ops
    y = x.clone()
    y[:, 4:] += torch.randn(2, 12, 8, 8)
    torch.testing.assert_close(partial(y, w, ALL)[:, ::4], out[:, ::4])
    convs = [m for m in partial.ops.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.in_channels == 4 for m in convs)  # the ops see 4 of the 16 channels


def test_edge_normalisation_is_a_softmax_over_each_nodes_inputs():
    space = get_space("darts")
    nodes = [node for node, _ in space.edges()]
    beta = torch.randn(14)
    normed = edge_normalisation(beta, nodes)
    start = 0
    for _node, count in [(2, 2), (3, 3), (4, 4), (5, 5)]:
        torch.testing.assert_close(normed[start : start + count], F.softmax(beta[start : start + count], 0))
        start += count


def test_edge_weights_enter_the_node_sum_as_beta_times_the_mixed_op():
    settings = {**SEARCH_SETTINGS, "init_channels": 4, "layers": 3, "partial_channels": 2}
    space = get_space("darts")
    torch.manual_seed(0)
    model = build_supernet(space, settings, 10, torch.device("cpu"), False).eval()
    method = PcDarts(space, model, options(), settings, torch.device("cpu"), "none")
    with torch.no_grad():
        for a in method.alpha.values():
            a.copy_(torch.randn_like(a))
    weights = method.weights()
    cell = model.cells[0]
    s0, s1 = torch.randn(2, 12, 8, 8), torch.randn(2, 12, 8, 8)
    got = cell(s0, s1, weights["normal"], active_ops(weights["normal"], model.candidates["normal"]))
    # by hand, the reference's sum_j beta_j * MixedOp_j(h_j, softmax(alpha_j))
    beta = edge_normalisation(method.alpha["beta_normal"], method.nodes)
    alpha = F.softmax(method.alpha["normal"], -1)
    states = [cell.preprocess0(s0), cell.preprocess1(s1)]
    edge = 0
    for _ in range(4):
        node = 0
        for h in list(states):
            node = node + beta[edge] * cell.edges[edge](h, alpha[edge], ALL)
            edge += 1
        states.append(node)
    torch.testing.assert_close(got, torch.cat(states[2:], dim=1))


def test_search_step_trains_alpha_and_beta_after_warmup_only():
    settings = {**SEARCH_SETTINGS, "init_channels": 4, "layers": 3, "partial_channels": 2}
    space = get_space("darts")
    torch.manual_seed(0)
    model = build_supernet(space, settings, 10, torch.device("cpu"), False)
    method = PcDarts(space, model, options(warmup_epochs=1), settings, torch.device("cpu"), "none")
    w_opt, _ = method.make_weight_optimizer(model.parameters())
    before = {k: a.detach().clone() for k, a in method.alpha.items()}
    assert set(before) == {"normal", "reduce", "beta_normal", "beta_reduce"}
    method.on_epoch_start(0, 3)
    method.train_step(random_batch(0), random_batch(1), w_opt, 0.025)
    assert all(torch.equal(before[k], a) for k, a in method.alpha.items())
    method.on_epoch_start(1, 3)
    method.train_step(random_batch(0), random_batch(1), w_opt, 0.025)
    assert all(not torch.equal(before[k], a) for k, a in method.alpha.items())
    for _kind, w in method.eval_weights().items():  # op weights of a node's inputs sum to 1 over the node
        torch.testing.assert_close(w[:2].sum(), torch.tensor(1.0))


def test_partial_channels_need_a_cell_space_and_a_divisor_of_init_channels(tmp_path):
    from pipeline.config import _check_partial_channels

    key_of = lambda s: f"search.settings.{s}"  # noqa: E731
    with pytest.raises(ConfigError, match="search.settings.partial_channels.*divide"):
        _check_partial_channels({**SEARCH_SETTINGS, "init_channels": 6, "partial_channels": 4}, key_of)
    with pytest.raises(ConfigError, match="search.settings.partial_channels.*cell space"):
        _check_partial_channels({**SEARCH_SETTINGS, "space": "nb201", "partial_channels": 2}, key_of)
    _check_partial_channels({**SEARCH_SETTINGS, "init_channels": 16, "partial_channels": 4}, key_of)


@pytest.mark.slow
def test_bench_times_pc_darts_on_the_partial_channels_its_config_block_sets():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import search_step

    assert search_step.partial_channels("pc_darts") == 4 and search_step.partial_channels("darts") == 1
    assert search_step.method_steps("pc_darts") == ["weight", "arch1", "arch2"]
    assert search_step.method_steps("drnas") == ["weight", "arch1"] and search_step.method_steps("gdas") == ["train"]
    common = dict(channels=4, layers=3, batch=2, device="cpu", threads=1, min_time=0, clock="cpu", amp="none", channels_last=True)
    for method, step in (("pc_darts", "arch1"), ("gdas", "train"), ("drnas", "arch1"), ("beta_darts", "arch2")):
        row = search_step.run_job({**common, "impl": "ours", "method": method, "step": step})
        assert row["seconds"] > 0
