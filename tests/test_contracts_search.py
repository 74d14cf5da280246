"""Contract tests over every search method in the registry (``search.METHODS.names()``).

A method added as one module under src/pipeline/search/ is collected here without a test
edit; where it runs is derived from its own checks (tests/contracts.py). Checks: one
step on a tiny supernet, state_dict round trip, options defaults validate, and resume
equality at an epoch boundary (bit-identical on CPU).
"""

from __future__ import annotations

import copy
import io
import math
import sys
from pathlib import Path

import pytest
import torch

from conftest import build_method
from contracts import BATCH, CHANNELS, EPOCHS, PIXELS, SearchCase, search_case, search_cases
from pipeline import artifacts
from pipeline.config import method_options
from pipeline.search import METHODS

# ---------------------------------------------------------------- a tiny search, step by step


def batch(step: int, size: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The (weight, architecture) batches of step ``step``: the same in every run."""
    g = torch.Generator().manual_seed(1000 + step)
    return tuple((torch.randn(size, 3, PIXELS, PIXELS, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(2))


class TinySearch:
    """A method, its supernet and weight optimiser, driven the way the search loop drives them."""

    def __init__(self, case: SearchCase, seed: int = 0):
        self.case = case
        options = case.options()
        METHODS.get(case.algorithm).check_options(options, case.settings)
        given = {key: value for key, value in options.items() if key != "algorithm"}
        self.space, self.model, self.method = build_method(
            case.algorithm, seed=seed, channels=CHANNELS, layers=case.layers, space=case.space, settings=case.settings, **given
        )
        self.w_optimizer, _ = self.method.make_weight_optimizer(self.model.parameters())
        self.method.on_data(5 * BATCH, 5 * BATCH)
        self.steps = 0

    def step(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch of one step (epoch start, step, epoch end); returns (loss, logits)."""
        self.model.train()
        self.method.on_epoch_start(epoch, EPOCHS)
        self.batch_size = self.method.batch_size(BATCH)
        batch_w, batch_a = batch(self.steps, self.batch_size)
        loss, logits = self.method.train_step(batch_w, batch_a, self.w_optimizer, self.case.settings["w_lr"])
        self.method.on_epoch_end(epoch, EPOCHS)
        self.steps += 1
        return loss, logits

    def checkpoint(self) -> dict:
        """What the loop's resume point holds, through torch.save as on disk."""
        state = {
            "model": self.model.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(),
            "method": self.method.state_dict(),
            "rng": artifacts.rng_state(),
            "steps": self.steps,
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=False)

    def restore(self, state: dict) -> None:
        state = copy.deepcopy(state)  # optimisers keep the loaded tensors: a state must not be shared between runs
        self.model.load_state_dict(state["model"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.method.load_state_dict(state["method"])
        artifacts.set_rng_state(state["rng"])
        self.steps = state["steps"]


def assert_same(a, b, where: str = "state") -> None:
    """Bit-identical nested states (tensors, dicts, lists, numbers; NaN equals NaN)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{index}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def differs(a, b) -> bool:
    try:
        assert_same(a, b)
    except AssertionError:
        return True
    return False


# ---------------------------------------------------------------- the checks


def check_options_defaults(case: SearchCase) -> None:
    """An empty method block is a valid config: every option has a default that validates
    against the schema and fits the settings the method runs with."""
    method_cls = METHODS.get(case.algorithm)
    resolved = method_options(METHODS, {"algorithm": case.algorithm}, f"search.methods.{case.algorithm}")
    assert set(resolved) == set(method_cls.OPTIONS) | {"algorithm"}, "an option without a default"
    method_cls.check_options(resolved, case.settings)


def check_one_step(case: SearchCase) -> None:
    run = TinySearch(case)
    weights_before = {k: v.clone() for k, v in run.model.state_dict().items()}
    state_before = run.checkpoint()["method"]
    loss, logits = run.step(0)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert logits.shape == (run.batch_size, 10) and torch.isfinite(logits).all()
    assert differs(weights_before, run.model.state_dict()), "the step left the network weights as they were"
    if state_before:  # fix_alpha keeps no architecture state
        assert differs(state_before, run.method.state_dict()), "the step left the method's state as it was"
    weights = run.method.eval_weights()
    assert set(weights) == set(run.space.cell_types)
    for kind, w in weights.items():
        assert tuple(w.shape) == tuple(run.space.arch_shape()) and torch.isfinite(w).all(), kind


def check_state_dict_round_trip(case: SearchCase) -> None:
    """A fresh instance (other initial weights) loaded from a state_dict has the same state
    and derives the same op weights."""
    first = TinySearch(case, seed=0)
    first.step(0)
    state = first.checkpoint()
    second = TinySearch(case, seed=1)
    if state["method"]:
        assert differs(state["method"], second.method.state_dict()), "seed 1 starts where seed 0 ended: the check would be empty"
    second.restore(state)
    assert_same(first.method.state_dict(), second.method.state_dict(), "method state after load")
    assert_same(first.method.eval_weights(), second.method.eval_weights(), "eval_weights after load")


def check_resume_equality(case: SearchCase) -> None:
    """Two epochs of a step straight == one, checkpoint, restore into a fresh instance (other
    initial weights, the global RNG elsewhere), one: the next step and all state bit-identical."""
    straight = TinySearch(case)
    straight.step(0)
    saved = straight.checkpoint()
    straight_result = straight.step(1)
    straight_after = straight.checkpoint()  # now: the global RNG moves on below

    resumed = TinySearch(case, seed=1)
    torch.manual_seed(12345)
    resumed.restore(saved)
    resumed_result = resumed.step(1)
    assert_same(straight_result, resumed_result, "second step's (loss, logits)")
    assert_same(straight_after, resumed.checkpoint(), "after the second step")


CHECKS = [check_options_defaults, check_one_step, check_state_dict_round_trip, check_resume_equality]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
@pytest.mark.parametrize("case", search_cases(), ids=lambda case: case.algorithm)
def test_search_method_contract(case, check):
    check(case)


def test_every_registered_method_is_collected():
    assert [case.algorithm for case in search_cases()] == METHODS.names()


# ---------------------------------------------------------------- a new method is picked up


PROBE = '''
"""A throwaway search method: DARTS 1st order under another name."""
from pipeline.search import METHODS
from pipeline.search.darts import Darts


@METHODS.register("contract_probe")
class ContractProbe(Darts):
    pass
'''


def test_a_new_method_module_is_collected_and_passes(tmp_path, monkeypatch):
    """A module dropped into the search package's path is found the way the package finds
    its own (registry.import_submodules), and the contract collection covers it."""
    import pipeline.search as package
    from pipeline.registry import import_submodules

    own_folders = list(package.__path__)
    folder = tmp_path / "methods"
    folder.mkdir()
    (folder / "contract_probe.py").write_text(PROBE)
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))  # the registration is undone after the test
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    try:
        assert "contract_probe" not in METHODS
        import_submodules(package.__name__, [str(folder)])
        cases = {case.algorithm: case for case in search_cases()}
        assert "contract_probe" in cases and cases["contract_probe"].space == search_case("darts").space
        for check in CHECKS:
            check(cases["contract_probe"])
    finally:
        sys.modules.pop(f"{package.__name__}.contract_probe", None)
    assert not any((Path(own) / "contract_probe.py").exists() for own in own_folders)
