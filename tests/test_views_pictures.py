import re
import shutil
import subprocess
import sys

import pytest

from pipeline import artifacts
from pipeline.spaces import get_space
from pipeline.views import pictures
from pipeline.views.pictures import PictureError, cell_graph, dot_source, genotype_graphs, render_genotype
from test_spaces import DARTS_V2

# The DARTS-V2 cells as drawn in the DARTS paper (Liu et al., 2019, Fig. 4 and 5):
# (from, to, op), nodes named as there.
V2_NORMAL = {
    ("c_{k-2}", "0", "sep_conv_3x3"), ("c_{k-1}", "0", "sep_conv_3x3"),
    ("c_{k-2}", "1", "sep_conv_3x3"), ("c_{k-1}", "1", "sep_conv_3x3"),
    ("c_{k-1}", "2", "sep_conv_3x3"), ("c_{k-2}", "2", "skip_connect"),
    ("c_{k-2}", "3", "skip_connect"), ("0", "3", "dil_conv_3x3"),
    ("0", "c_{k}", None), ("1", "c_{k}", None), ("2", "c_{k}", None), ("3", "c_{k}", None),
}
V2_REDUCE = {
    ("c_{k-2}", "0", "max_pool_3x3"), ("c_{k-1}", "0", "max_pool_3x3"),
    ("0", "1", "skip_connect"), ("c_{k-1}", "1", "max_pool_3x3"),
    ("c_{k-2}", "2", "max_pool_3x3"), ("0", "2", "skip_connect"),
    ("0", "3", "skip_connect"), ("c_{k-1}", "3", "max_pool_3x3"),
    ("0", "c_{k}", None), ("1", "c_{k}", None), ("2", "c_{k}", None), ("3", "c_{k}", None),
}
NB201_CELL = {"edges": [
    {"node": 1, "input": 0, "op": "nor_conv_3x3"},
    {"node": 2, "input": 0, "op": "none"},
    {"node": 2, "input": 1, "op": "skip_connect"},
    {"node": 3, "input": 0, "op": "avg_pool_3x3"},
    {"node": 3, "input": 1, "op": "none"},
    {"node": 3, "input": 2, "op": "nor_conv_1x1"},
]}
PROXYLESS_OPS = ["mbconv3_k3", "mbconv6_k5", "skip_connect", "mbconv3_k7", "mbconv6_k7"]


@pytest.fixture
def v2_genotype():
    cells = get_space("darts").from_text(DARTS_V2)
    return {"space": "darts", "cells": cells, "provenance": {"search_method": "darts_2nd", "selection_method": "published", "seed": 0}}


def test_darts_v2_cells_have_the_published_nodes_and_edges(v2_genotype):
    normal, reduce = genotype_graphs(v2_genotype)
    assert (normal.name, reduce.name) == ("normal", "reduce")
    for graph, expected in ((normal, V2_NORMAL), (reduce, V2_REDUCE)):
        assert [(n.label, n.role) for n in graph.nodes] == [
            ("c_{k-2}", "input"), ("c_{k-1}", "input"),
            ("0", "intermediate"), ("1", "intermediate"), ("2", "intermediate"), ("3", "intermediate"),
            ("c_{k}", "output"),
        ]
        assert len(graph.edges) == len(expected) and set(graph.edge_list()) == expected


def test_dot_source_draws_exactly_the_cells_edges(v2_genotype):
    source = dot_source(genotype_graphs(v2_genotype), title="DARTS-V2")
    nodes = dict(re.findall(r'^\s+"(\w+)" \[label="([^"]*)"', source, flags=re.M))
    edges = re.findall(r'^\s+"(\w+)" -> "(\w+)" \[(?:label="(\w+)")?', source, flags=re.M)
    for cell, expected in (("normal", V2_NORMAL), ("reduce", V2_REDUCE)):
        drawn = {(nodes[a], nodes[b], op or None) for a, b, op in edges if a.startswith(cell + "_")}
        assert drawn == expected
    assert len(edges) == len(V2_NORMAL) + len(V2_REDUCE)
    assert 'label="normal cell"' in source and 'label="DARTS-V2"' in source


def test_nb201_cell_drops_none_edges_and_ends_at_node_3():
    cells = get_space("nb201").from_text("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|")
    assert cells["cell"]["edges"] == NB201_CELL["edges"]
    (graph,) = genotype_graphs({"space": "nb201", "cells": cells})
    assert [(n.label, n.role) for n in graph.nodes] == [("0", "input"), ("1", "intermediate"), ("2", "intermediate"), ("3", "output")]
    assert graph.edge_list() == [("0", "1", "nor_conv_3x3"), ("1", "2", "skip_connect"), ("0", "3", "avg_pool_3x3"), ("2", "3", "nor_conv_1x1")]
    assert graph.notes == ["2 edges with op none left out"]
    assert graph.caption() == "cell; 2 edges with op none left out"


def test_proxyless_layers_become_a_strip_in_layer_order():
    ops = (["mbconv3_k3"] + ["mbconv6_k5", "skip_connect", "mbconv3_k7", "mbconv6_k7"] * 5)[:21]
    cells = get_space("proxyless").from_text(" ".join(ops))
    cells["layers"]["edges"].reverse()  # drawn in layer order whatever the JSON order
    (graph,) = genotype_graphs({"space": "proxyless", "cells": cells})
    assert graph.strip and [n.op for n in graph.nodes] == ops and graph.caption() == "layers (21 layers)"
    assert [(e.source, e.target) for e in graph.edges] == [(str(i), str(i + 1)) for i in range(1, 21)]
    with pytest.raises(PictureError, match="field 'cells' must map cell types to cells"):
        genotype_graphs({"space": "proxyless", "layers": PROXYLESS_OPS})  # the genotype JSON has 'cells' only


@pytest.mark.parametrize(
    "cell, message",
    [
        ({"edges": []}, "field 'edges' must be a non-empty list"),
        ({"edges": [{"node": 2, "op": "skip_connect"}]}, "edges[0] must have node, input and op"),
        ({"edges": [{"node": 2, "input": 0, "op": "skip_connect"}], "concat": [9]}, "field 'concat'"),
    ],
)
def test_malformed_cells_are_rejected_naming_the_field(cell, message):
    with pytest.raises(PictureError, match=re.escape(message)):
        cell_graph("normal", cell)


def test_matplotlib_picture_shows_every_op_and_is_repeatable(v2_genotype, tmp_path):
    assert render_genotype(v2_genotype, tmp_path / "a.svg", renderer="matplotlib") == "matplotlib"
    render_genotype(v2_genotype, tmp_path / "b.svg", renderer="matplotlib")
    svg = (tmp_path / "a.svg").read_text()
    assert svg == (tmp_path / "b.svg").read_text()
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    for op in ("sep_conv_3x3", "skip_connect", "dil_conv_3x3", "max_pool_3x3"):
        assert op in texts
    # one label per op edge of both cells (concat edges carry none)
    assert sum(text in {"sep_conv_3x3", "skip_connect", "dil_conv_3x3", "max_pool_3x3"} for text in texts) == 16


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed")
def test_graphviz_picture_has_every_edge(v2_genotype, tmp_path):
    assert render_genotype(v2_genotype, tmp_path / "v2.svg", renderer="graphviz") == "graphviz"
    svg = (tmp_path / "v2.svg").read_text()
    assert svg.count('class="edge"') == len(V2_NORMAL) + len(V2_REDUCE)
    assert svg.count('class="node"') == 14
    assert "<title>normal_0&#45;&gt;normal_2</title>" in svg


def test_without_dot_auto_falls_back_to_matplotlib(v2_genotype, tmp_path, monkeypatch):
    monkeypatch.setattr(pictures.shutil, "which", lambda name: None)
    assert render_genotype(v2_genotype, tmp_path / "v2.png") == "matplotlib"
    assert (tmp_path / "v2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(PictureError, match="the dot binary is not on PATH"):
        render_genotype(v2_genotype, tmp_path / "v2.svg", renderer="graphviz")
    assert not (tmp_path / "v2.svg").exists()


def test_unknown_picture_format_is_rejected(v2_genotype, tmp_path):
    with pytest.raises(PictureError, match=r"v2\.txt: picture format must be one of svg, png, pdf"):
        render_genotype(v2_genotype, tmp_path / "v2.txt")


@pytest.mark.slow
def test_draw_genotype_cli(v2_genotype, tmp_path):
    path = tmp_path / "genotype.json"
    artifacts.write_genotype(path, {"space": "darts", "cells": v2_genotype["cells"]}, v2_genotype["provenance"])
    ok = subprocess.run([sys.executable, "-m", "pipeline", "draw-genotype", str(path), "--out", str(tmp_path / "g.svg"),
                         "--renderer", "matplotlib"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "darts, darts_2nd + published, seed 0" in (tmp_path / "g.svg").read_text()
    bad = subprocess.run([sys.executable, "-m", "pipeline", "draw-genotype", str(tmp_path / "none.json"), "--out", str(tmp_path / "x.svg")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "none.json: genotype file not found" in bad.stderr
    assert not (tmp_path / "x.svg").exists()
