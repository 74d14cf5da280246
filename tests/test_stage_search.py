import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from conftest import search_params
from pipeline import artifacts
from pipeline.search import METHODS
from pipeline.search.run import run_search
from pipeline.select.magnitude import parse_magnitude
from pipeline.select.snas import parse_argmax
from pipeline.select.unas import parse_branches
from pipeline.spaces import get_space


def make_darts(order, seed=0, hvp_epsilon=0.01):
    torch.manual_seed(seed)
    space = get_space("darts")
    model = space.build_supernet(channels=4, layers=3, num_classes=10).double()
    params = search_params(options={"order": order, "hvp_epsilon": hvp_epsilon})
    method = METHODS.get("darts")(space, model, params["options"], params["settings"], torch.device("cpu"), "none")
    method.alpha.double()
    for p in method.alpha.values():
        p.data = p.data.double()
        p.data.normal_(0, 0.5)  # away from uniform, so the gradient has structure
    return space, model, method


def batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (16,), generator=g)
    xv = torch.randn(16, 3, 16, 16, generator=g, dtype=torch.float64)
    yv = torch.randint(0, 10, (16,), generator=g)
    return (x, y), (xv, yv)


def exact_unrolled_gradient(model, method, batch_w, batch_a, w_opt, lr, momentum, wd):
    """d/dalpha L_val(w - lr * (momentum * buf + grad_w L_train(w, alpha) + wd * w), alpha) by double backward."""
    names, params = zip(*model.named_parameters())
    train_loss = F.cross_entropy(functional_call(model, dict(zip(names, params)), (batch_w[0], method.weights())), batch_w[1])
    grads = torch.autograd.grad(train_loss, params, create_graph=True)
    unrolled = {
        n: p.detach() - lr * (momentum * w_opt.state[p]["momentum_buffer"] + g + wd * p.detach())
        for n, p, g in zip(names, params, grads)
    }
    val_loss = F.cross_entropy(functional_call(model, unrolled, (batch_a[0], method.weights())), batch_a[1])
    return torch.autograd.grad(val_loss, list(method.alpha.values()))


@pytest.mark.slow
@pytest.mark.parametrize("hvp_epsilon, rtol, atol", [(1e-6, 1e-4, 2e-6), (0.01, 1e-2, 5e-5)])
def test_second_order_gradient_matches_autograd_double_backward(hvp_epsilon, rtol, atol):
    space, model, method = make_darts(order=2, hvp_epsilon=hvp_epsilon)
    batch_w, batch_a = batches()
    lr, momentum, wd = 0.05, 0.9, 3e-4
    w_opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    method.weight_step(*batch_w, method.weights(), w_opt)  # fill the momentum buffers
    # BN on (trained) running statistics keeps the loss smooth in w, so finite differences
    # converge; in train mode a tiny network's batch statistics make them erratic.
    model.eval()
    approx = method.arch_gradient(batch_w, batch_a, w_opt, lr)
    exact = exact_unrolled_gradient(model, method, batch_w, batch_a, w_opt, lr, momentum, wd)
    first = torch.autograd.grad(
        F.cross_entropy(model(batch_a[0], method.weights()), batch_a[1]), list(method.alpha.values())
    )
    for a, e, f in zip(approx, exact, first):
        assert torch.allclose(a, e, rtol=rtol, atol=atol), (a - e).abs().max()
        assert not torch.allclose(e, f, rtol=1e-2)  # the unrolled term matters at this lr


def test_first_order_gradient_is_the_validation_gradient():
    _, model, method = make_darts(order=1)
    batch_w, batch_a = batches()
    w_opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    got = method.arch_gradient(batch_w, batch_a, w_opt, 0.05)
    want = torch.autograd.grad(F.cross_entropy(model(batch_a[0], method.weights()), batch_a[1]), list(method.alpha.values()))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.slow
def test_a_job_computes_with_its_own_thread_count_whatever_the_launcher_gives(tiny_data, tmp_path, monkeypatch):
    """CPU kernels split their sums by thread, so the count is a parameter of the job:
    Snakemake may lower a rule's threads to --cores and DVC passes none, and both must get
    the numbers of the job's runtime.threads."""
    used = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n, real=torch.set_num_threads: (used.append(n), real(n)))
    before = torch.get_num_threads()
    params = search_params(settings={"epochs": 1})
    params["runtime"]["threads"] = 1
    try:
        paths = [run_search(params, tiny_data, tmp_path / str(launch), threads=launch) for launch in (2, 0)]
    finally:
        torch.set_num_threads(before)
    assert used and set(used) == {1}  # never the launch's 2
    first, second = (artifacts.load_checkpoint(path, "supernet") for path in paths)
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name


def test_search_writes_checkpoint_and_metrics(tiny_data, tmp_path):
    params = search_params(settings={"epochs": 2})
    path = run_search(params, tiny_data, tmp_path, threads=1)
    checkpoint = artifacts.load_checkpoint(path, "supernet")
    assert checkpoint["epoch"] == 2
    assert checkpoint["provenance"]["params"] == params
    assert checkpoint["provenance"]["search_seconds"] > 0
    assert checkpoint["arch_weights"]["normal"].shape == (14, 8)
    torch.testing.assert_close(checkpoint["arch_weights"]["normal"].sum(-1), torch.ones(14))
    metrics = artifacts.read_metrics(tmp_path / "metrics.h5")
    assert metrics.num_epochs == 2 and metrics.epochs["alpha_normal"].shape == (2, 14, 8)
    assert metrics.epochs["lr"][0] == pytest.approx(0.025)
    assert not np.allclose(metrics.epochs["alpha_normal"][0], metrics.epochs["alpha_normal"][1])  # alpha trains
    assert not (tmp_path / "checkpoint").exists()  # resume point dropped once complete


def run_cli(params, data, out_dir):
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "search", "--params", json.dumps(params), "--data", str(data), "--out-dir", str(out_dir), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def assert_same(a, b, where="method"):
    """Exact equality of nested checkpoint state (dicts, lists, tensors, numbers)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


# Each method with a cheap setting and the genotype its selection derives from a checkpoint;
# SGAS decides an edge after the first epoch, so its resume point holds decided edges and a
# grown batch size.
magnitude = lambda space, ck: parse_magnitude(space, ck["arch_weights"])  # noqa: E731
RESUME_CASES = {
    "darts_2nd": ({"algorithm": "darts", "order": 2}, magnitude),
    "balenas": ({"algorithm": "balenas", "order": 1, "samples": 2}, magnitude),
    "sdarts_rs": ({"algorithm": "sdarts", "mode": "rs"}, magnitude),
    "sdarts_adv": ({"algorithm": "sdarts", "mode": "adv", "pgd_steps": 2}, magnitude),
    "sgas": ({"algorithm": "sgas", "warmup_fraction": 0.0, "decision_interval_fraction": 0.34}, magnitude),
    "sgas_pt": ({"algorithm": "sgas", "op_selection": "pt", "warmup_fraction": 0.0, "decision_interval_fraction": 0.34}, magnitude),
    "fix_alpha": ({"algorithm": "fix_alpha"}, magnitude),
    "snas": ({"algorithm": "snas"}, lambda space, ck: parse_argmax(space, ck["arch_weights"])),
    "unas": ({"algorithm": "unas", "warmup_epochs": 1}, lambda space, ck: parse_branches(space, ck["method"]["alpha"])),
    "drnas": ({"algorithm": "drnas", "reg_type": "kl"}, magnitude),
    "beta_darts": ({"algorithm": "beta_darts"}, magnitude),
    "pc_darts": ({"algorithm": "pc_darts", "warmup_epochs": 1}, magnitude),
    "gdas": ({"algorithm": "gdas"}, magnitude),
}
RESUME_SETTINGS = {"pc_darts": {"partial_channels": 2}}  # K=2 of the 2 initial channels


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RESUME_CASES))
def test_sigkill_mid_search_then_rerun_resumes_to_the_same_result(tiny_data, tmp_path, name):
    options, derive = RESUME_CASES[name]
    params = search_params(settings={"epochs": 2, "subset_per_class": 6, **RESUME_SETTINGS.get(name, {})}, method=name)
    params["options"] = dict(options)
    reference = run_cli(params, tiny_data, tmp_path / "ref")
    killed = run_cli(params, tiny_data, tmp_path / "killed")
    last = tmp_path / "killed" / "checkpoint" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.02)
    assert killed.poll() is None, "search finished before it could be killed"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert artifacts.load_checkpoint(last, "supernet")["epoch"] == 1
    assert not (tmp_path / "killed" / "supernet.pt").exists()

    resumed = run_cli(params, tiny_data, tmp_path / "killed")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resuming from" in err and "after epoch 1" in err
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err

    a = artifacts.load_checkpoint(tmp_path / "ref" / "supernet.pt", "supernet")
    b = artifacts.load_checkpoint(tmp_path / "killed" / "supernet.pt", "supernet")
    assert_same(a["method"], b["method"])
    assert_same(a["model"], b["model"], "model")
    space = get_space("darts")
    assert derive(space, a) == derive(space, b)
    metrics = artifacts.read_metrics(tmp_path / "killed" / "metrics.h5")
    assert metrics.epochs["epoch"].tolist() == [0, 1]
    reference_metrics = artifacts.read_metrics(tmp_path / "ref" / "metrics.h5")
    for key, values in reference_metrics.epochs.items():
        if key != "wall_time":
            assert np.array_equal(values, metrics.epochs[key], equal_nan=True), key  # UNAS pads with NaN


@pytest.mark.slow
def test_resume_ignores_a_checkpoint_made_with_other_parameters(tiny_data, tmp_path, monkeypatch):
    from pipeline.training import loop

    monkeypatch.setattr(loop, "finish", lambda path: None)  # keep the resume point around
    run_search(search_params(settings={"epochs": 1}), tiny_data, tmp_path, threads=1)
    assert (tmp_path / "checkpoint" / "last.pt").exists()
    changed = search_params(settings={"epochs": 1, "w_lr": 0.05})
    run_search(changed, tiny_data, tmp_path, threads=1)
    assert artifacts.load_checkpoint(tmp_path / "supernet.pt", "supernet")["provenance"]["params"] == changed
    assert artifacts.read_metrics(tmp_path / "metrics.h5").epochs["lr"][0] == pytest.approx(0.05)


def test_search_cli_rejects_bad_params(tiny_data, tmp_path):
    bad = search_params(settings={"layers": "eight"})
    proc = run_cli(bad, tiny_data, tmp_path / "out")
    _, err = proc.communicate()
    assert proc.returncode == 2
    assert err.strip() == "pipeline search: error: config key 'params.settings.layers': 'eight' is not of type 'integer'"
    assert not (tmp_path / "out").exists()


def test_batch_statistics_evaluation_leaves_the_model_untouched(tiny_data):
    from pipeline.training.data import BatchLoader, load_prepared
    from pipeline.training.steps import evaluate

    data = load_prepared(tiny_data)
    loader = BatchLoader(data.test_images, data.test_labels, None, 25, data.meta["mean"], data.meta["std"])
    space, model, method = make_darts(order=1)
    model.float()
    weights = {k: w.float() for k, w in method.eval_weights().items()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    running = evaluate(model, loader, {"weights": weights}, torch.device("cpu"), "none", bn="running")
    batch = evaluate(model, loader, {"weights": weights}, torch.device("cpu"), "none", bn="batch")
    assert running != batch  # untrained running stats (0, 1) differ from the batches'
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
