"""Contract tests over every selection method in the registry (``select.METHODS.names()``):
run through the selection stage (``run_select``) with its default options on a tiny
supernet of the first search method it accepts (``accepts``), in the space that search
runs in (tests/contracts.py), each writes a valid decision record and a genotype valid
for the space."""

from __future__ import annotations

import pytest

from conftest import RUNTIME, search_params
from contracts import search_case
from pipeline import artifacts, search, select
from pipeline.config import method_options
from pipeline.search.run import run_search
from pipeline.select.run import DECISIONS_FILE, run_select
from pipeline.spaces import get_space


def search_for(selection: str) -> str:
    """The first registered search method whose supernets the selection reads."""
    method_cls = select.METHODS.get(selection)
    accepted = [name for name in search.METHODS.names() if method_cls.accepts(name)]
    assert accepted, f"selection {selection} reads no registered search method's supernets"
    return accepted[0]


@pytest.fixture(scope="module")
def supernets(tiny8_data, tmp_path_factory):
    """Search method -> a 1-epoch supernet of it on 8x8 images (made on first use)."""
    made = {}

    def supernet(algorithm: str):
        if algorithm not in made:
            case = search_case(algorithm)
            settings = {"space": case.space, "layers": case.layers, "init_channels": 4, "epochs": 1,
                        "subset_per_class": 2, "batch_size": 10, "eval_batch_size": 10}
            params = search_params(options=case.options(), settings=settings)
            params["method"] = algorithm
            made[algorithm] = (case, run_search(params, tiny8_data, tmp_path_factory.mktemp(f"search_{algorithm}"), threads=1))
        return made[algorithm]

    return supernet


def tiny_options(selection: str) -> dict:
    """The schema's defaults, with every epoch count (``*_epochs``, e.g. PT's fine-tuning
    between decisions) at the schema's minimum: a tiny run still makes every decision."""
    schema = select.METHODS.get(selection).OPTIONS
    block = {"algorithm": selection}
    for name, spec in schema.items():
        if name.endswith("_epochs") and "minimum" in spec:
            block[name] = spec["minimum"]
    return block


def selection_cases() -> list:
    """Every selection method with tiny options; with its defaults too where they differ
    (slow: PT's default fine-tuning takes a minute here)."""
    cases = []
    for selection in select.METHODS.names():
        cases.append(pytest.param(selection, tiny_options(selection), id=selection))
        if tiny_options(selection) != {"algorithm": selection}:
            cases.append(pytest.param(selection, {"algorithm": selection}, id=f"{selection}-defaults", marks=pytest.mark.slow))
    return cases


@pytest.mark.parametrize(("selection", "block"), selection_cases())
def test_selection_method_contract(selection, block, supernets, tiny8_data, tmp_path):
    algorithm = search_for(selection)
    case, supernet = supernets(algorithm)
    options = method_options(select.METHODS, block, f"select.methods.{selection}")
    params = {"dataset": "cifar10", "seed": 0, "method": selection, "options": options, "runtime": dict(RUNTIME)}
    out = tmp_path / "genotype.json"
    returned = run_select(params, supernet, tiny8_data, out, threads=1)

    genotype = artifacts.read_genotype(out)  # validated against the artifacts contract
    assert genotype["space"] == case.space and genotype["cells"] == returned["cells"]
    get_space(case.space).validate_genotype(returned["cells"])
    assert genotype["provenance"]["selection_method"] == selection
    assert genotype["provenance"]["search_algorithm"] == algorithm

    record = artifacts.read_decisions(out.parent / DECISIONS_FILE)  # validated on read
    assert (record.method, record.algorithm) == (selection, selection)
    assert record.num_decisions > 0, "the selection explained none of its choices"
    assert record.provenance["decisions_file"] == str(out.parent / DECISIONS_FILE)


def test_every_selection_method_reads_some_search():
    for selection in select.METHODS.names():
        assert search_for(selection) in search.METHODS.names()
