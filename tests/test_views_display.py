import io
import subprocess
import sys

import pandas as pd
import pytest

from pipeline import artifacts, runtime
from pipeline.spaces import get_space
from pipeline.views.display import cell_ascii, genotype_ascii, table_html, table_text
from pipeline.views.pictures import cell_graph, genotype_graphs
from test_spaces import DARTS_V2
from test_views_pictures import NB201_CELL


def test_darts_v2_normal_cell_in_ascii():
    normal = genotype_graphs({"cells": get_space("darts").from_text(DARTS_V2)})[0]
    assert cell_ascii(normal) == [
        "normal cell",
        "  c_{k-2} --sep_conv_3x3--+",
        "  c_{k-1} --sep_conv_3x3--+--> 0",
        "  c_{k-2} --sep_conv_3x3--+",
        "  c_{k-1} --sep_conv_3x3--+--> 1",
        "  c_{k-2} --skip_connect--+",
        "  c_{k-1} --sep_conv_3x3--+--> 2",
        "  c_{k-2} --skip_connect--+",
        "  0       --dil_conv_3x3--+--> 3",
        "  concat(0, 1, 2, 3) --> c_{k}",
    ]


def test_nb201_and_strip_in_ascii():
    assert cell_ascii(cell_graph("cell", NB201_CELL))[-2:] == [
        "  0 --avg_pool_3x3--+",
        "  2 --nor_conv_1x1--+--> 3",
    ]
    layers = [{"node": i + 1, "input": i, "op": op} for i, op in enumerate(["mbconv3_k3", "skip_connect", "mbconv6_k7"])]
    text = genotype_ascii({"space": "proxyless", "cells": {"layers": {"edges": layers}}}, width=40)
    assert text.splitlines() == ["layers (3 layers)", "  1:mbconv3_k3 > 2:skip_connect >", "  3:mbconv6_k7"]


TABLE = pd.DataFrame({
    "dataset": ["cifar10", "cifar10"], "space": ["darts", "darts"], "search_method": ["darts_1st", "darts_2nd"],
    "selection_method": ["magnitude", "magnitude"], "seeds": ["0 1", "0 1"], "test_error": ["55.10 ± 1.20", "53.00 ± 0.40"],
    "test_error_mean": [55.1, 53.0], "test_error_std": [1.2, 0.4], "test_error_best": [54.25, 52.6], "params_m": [0.0412, 0.0398],
    "search_cost": [0.0123, 0.0311], "search_cost_unit": ["CPU-hours", "CPU-hours"], "device": ["cpu", "cpu"],
    "benchmark_test_acc": [float("nan"), float("nan")],  # darts rows: no NAS-Bench-201 accuracy
    "benchmark_test_acc_mean": [float("nan"), float("nan")], "benchmark_test_acc_std": [float("nan"), float("nan")],
})


def test_table_text_aligns_the_main_columns():
    lines = table_text(TABLE, width=200).splitlines()
    assert lines[0].split() == ["space", "search", "selection", "seeds", "test", "error", "(%)", "best", "params", "(M)", "search", "cost", "unit"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split() == ["darts", "darts_1st", "magnitude", "0", "1", "55.10", "±", "1.20", "54.25", "0.041", "0.012", "CPU-hours"]
    assert len({len(line) for line in lines[1:]}) == 1  # every row as wide as the rule
    narrow = table_text(TABLE, width=40).splitlines()
    assert all(len(line) <= 40 for line in narrow[:-1])
    assert narrow[-1].startswith("(not shown for width: ") and "unit" in narrow[-1]
    assert "device" in table_text(TABLE, all_columns=True, width=400)
    nb201 = TABLE.assign(space="nb201", benchmark_test_acc=["93.76 ± 0.00", "94.37 ± 0.00"])
    assert table_text(nb201, width=400).splitlines()[2].endswith("CPU-hours  93.76 ± 0.00")


@pytest.mark.slow
def test_show_table_cli(tmp_path):
    path = tmp_path / "cifar10.csv"
    artifacts.write_table(path, TABLE)
    result = subprocess.run([sys.executable, "-m", "pipeline", "show-table", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[3].split()[:3] == ["darts", "darts_2nd", "magnitude"]
    bad = subprocess.run([sys.executable, "-m", "pipeline", "show-table", str(tmp_path / "x.csv")], capture_output=True, text=True)
    assert bad.returncode == 2 and "x.csv: table file not found" in bad.stderr


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_show_on_a_terminal_and_stay_silent_in_logs(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(runtime.progress(range(3), desc="batches", leave=True)) == [0, 1, 2]
    assert "batches" in terminal.getvalue() and "3/3" in terminal.getvalue()
    log = io.StringIO()  # a batch job's log file: not a terminal
    monkeypatch.setattr(sys, "stderr", log)
    assert list(runtime.progress(range(3), desc="batches")) == [0, 1, 2]
    runtime.log("epoch 1/1: done")
    assert log.getvalue() == "epoch 1/1: done\n"


def html_rows(text: str) -> list[list[tuple[str, str]]]:
    """(class, text) of each cell of each row of an HTML table."""
    import re

    body = text.split("<tbody>")[1].split("</tbody>")[0]
    return [re.findall(r'<td(?: class="(\w+)")?>(.*?)</td>', row) for row in body.split("</tr>") if "<td" in row]


@pytest.mark.slow
def test_html_table_shows_numbers_as_numbers_and_leaves_missing_ones_empty(tmp_path):
    nb201_row = TABLE.iloc[[0]].assign(
        space="nb201", search_method="darts_1st_nb201", selection_method="pt<x>", test_error="", test_error_mean=float("nan"),
        test_error_std=float("nan"), test_error_best=float("nan"), params_m=float("nan"),
        benchmark_test_acc="93.76 ± 0.61", benchmark_test_acc_mean=93.7562, benchmark_test_acc_std=0.6081,
    )
    path = tmp_path / "cifar10.csv"
    artifacts.write_table(path, pd.concat([TABLE, nb201_row], ignore_index=True))
    table = artifacts.read_table(path)  # as the workflow reads it: missing numbers are NaN
    text = table_html(table, title="Results: cifar10")
    header = text.split("<thead>")[1].split("</thead>")[0]
    assert [h for h in header.replace("<tr>", "").replace("</tr>", "").split("</th>") if h] == [
        f"<th>{h}" for h in ("space", "search", "selection", "seeds", "NB201 test acc (%)", "± std",
                              "test error (%)", "± std", "best", "params (M)", "search cost", "unit")
    ]
    darts, _, nb201 = html_rows(text)
    assert darts == [("", "darts"), ("", "darts_1st"), ("", "magnitude"), ("", "0 1"), ("num", ""), ("num", ""),
                     ("num", "55.10"), ("num", "1.20"), ("num", "54.25"), ("num", "0.0412"), ("num", "0.0123"), ("", "CPU-hours")]
    assert nb201[2] == ("", "pt&lt;x&gt;")  # escaped
    assert nb201[4:9] == [("num", "93.76"), ("num", "0.61"), ("num", ""), ("num", ""), ("num", "")]
    assert "Results: cifar10" in text and "<style>" in text
    # The CLI writes the same fragment.
    out = tmp_path / "cifar10.html"
    result = subprocess.run([sys.executable, "-m", "pipeline", "table-html", str(path), "--out", str(out), "--title", "Results: cifar10"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == text
