"""PT and magnitude selection on the supernets of drnas, beta_darts, pc_darts and gdas.

PT rebuilds the supernet from the search's settings (partial channels included) and tunes
it between decisions with the search method's own step."""

import numpy as np
import pytest

from conftest import search_params
from pipeline import artifacts
from pipeline.config import method_options
from pipeline.search import METHODS as SEARCH_METHODS
from pipeline.search.run import run_search
from pipeline.select.run import run_select
from test_select_pt import assert_two_inputs_per_node, full_options, select_params

CASES = {
    "drnas": ({}, {}),
    "beta_darts": ({}, {}),
    "pc_darts": ({"warmup_epochs": 0}, {"partial_channels": 2}),
    "gdas": ({}, {}),
}


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", list(CASES))
def test_pt_and_magnitude_select_from_the_supernet(algorithm, tiny8_data, tmp_path):
    options, settings = CASES[algorithm]
    params = search_params(settings={"epochs": 1, "subset_per_class": 2, "batch_size": 10, "space": "darts_nonone", **settings})
    params["options"] = method_options(SEARCH_METHODS, {"algorithm": algorithm, **options}, "search")
    supernet = run_search(params, tiny8_data, tmp_path / "search", threads=1)
    checkpoint = artifacts.load_checkpoint(supernet, "supernet")

    run_select(full_options(select_params("pt", finetune_epochs=1, topology=True)), supernet, tiny8_data, tmp_path / "pt" / "genotype.json", threads=1)
    genotype = artifacts.read_genotype(tmp_path / "pt" / "genotype.json")
    assert_two_inputs_per_node(genotype["cells"])
    record = artifacts.read_decisions(tmp_path / "pt" / "decisions.h5")
    assert record.summary["search_method"] == algorithm
    d, c = record.decisions, record.candidates
    moved = False  # the method's own architecture step kept training undecided edges
    for row in np.flatnonzero(d["kind"] == "op"):
        weights = c["weight"][c["decision"] == row]
        before = checkpoint["arch_weights"][d["cell_type"][row]][d["edge"][row]].double().numpy()
        moved |= not np.allclose(weights, before, rtol=0, atol=1e-9)
    assert moved

    run_select(full_options({**select_params("pt"), "method": "magnitude", "options": {"algorithm": "magnitude"}}), supernet, tiny8_data, tmp_path / "mag" / "genotype.json", threads=1)
    assert_two_inputs_per_node(artifacts.read_genotype(tmp_path / "mag" / "genotype.json")["cells"])
