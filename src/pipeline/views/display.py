"""Views of results: a genotype's cells drawn in plain ASCII, a results table aligned for
the terminal, and the results table as an HTML table (the report's first page)."""

from __future__ import annotations

import html
import math
import shutil
import sys
import textwrap
from collections.abc import Mapping, Sequence

import pandas as pd

from pipeline.views.pictures import CellGraph, genotype_graphs

# The table columns people read first (empty ones left out); `--all` shows every column.
TABLE_VIEW = (
    ("space", "space"),
    ("search_method", "search"),
    ("selection_method", "selection"),
    ("seeds", "seeds"),
    ("test_error", "test error (%)"),
    ("test_error_best", "best"),
    ("params_m", "params (M)"),
    ("search_cost", "search cost"),
    ("search_cost_unit", "unit"),
    ("benchmark_test_acc", "NB201 test acc (%)"),
)


def cell_ascii(graph: CellGraph, width: int = 80) -> list[str]:
    """One block per node: its inputs and their ops joined into an arrow to the node.

    ``c_{k-2} --sep_conv_3x3--+``
    ``c_{k-1} --sep_conv_3x3--+--> 0``
    """
    lines = [graph.caption()]
    labels = {node.id: node.label for node in graph.nodes}
    if graph.strip:
        chain = " > ".join(f"{node.id}:{node.op}" for node in graph.nodes)
        lines += textwrap.wrap(chain, width=width - 2, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False)
        return lines
    into: dict[str, list] = {}
    for edge in graph.edges:
        into.setdefault(edge.target, []).append(edge)
    op_edges = [e for e in graph.edges if e.op is not None]
    source_width = max((len(labels[e.source]) for e in op_edges), default=0)
    op_width = max((len(e.op) for e in op_edges), default=0)
    for node in graph.nodes:
        edges = into.get(node.id, [])
        if node.role == "input":
            continue
        if not edges:
            lines.append(f"  {'(no input)':<{source_width + op_width + 6}}--> {node.label}")
            continue
        if all(e.op is None for e in edges):  # concat into the cell output
            lines.append(f"  concat({', '.join(labels[e.source] for e in edges)}) --> {node.label}")
            continue
        for index, edge in enumerate(edges):
            head = f"  {labels[edge.source]:<{source_width}} --{edge.op:-<{op_width}}--+"
            lines.append(head + (f"--> {node.label}" if index == len(edges) - 1 else ""))
    return lines


def genotype_ascii(genotype: Mapping, width: int | None = None) -> str:
    width = width or shutil.get_terminal_size((100, 24)).columns
    blocks = ["\n".join(cell_ascii(graph, width)) for graph in genotype_graphs(genotype)]
    return "\n\n".join(blocks)


def _cell(value, column: str) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3f}" if column in ("params_m", "search_cost") else f"{value:.2f}"
    return str(value)


def table_text(table: pd.DataFrame, all_columns: bool = False, width: int | None = None) -> str:
    """A results table as aligned text with a rule under the header; numbers right-aligned.

    Shows the main columns (TABLE_VIEW, if not empty) unless ``all_columns``; columns that do not fit in
    ``width`` are dropped from the right and named in a last line."""
    if all_columns:
        view = [(column, column) for column in table.columns]
    else:
        view = [(column, header) for column, header in TABLE_VIEW if column in table.columns and table[column].notna().any()]
    cells = [[_cell(value, column) for value in table[column]] for column, _ in view]
    widths = [max([len(header)] + [len(text) for text in column]) for (_, header), column in zip(view, cells)]
    numeric = [pd.api.types.is_numeric_dtype(table[column]) for column, _ in view]
    if width is None:  # a terminal's width; piped output keeps every column
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 1 << 30
    shown, used = 0, 0
    while shown < len(view) and used + widths[shown] + (2 if shown else 0) <= max(width, widths[0]):
        used += widths[shown] + (2 if shown else 0)
        shown += 1

    def row(texts: Sequence[str]) -> str:
        parts = [text.rjust(w) if num else text.ljust(w) for text, w, num in zip(texts, widths, numeric)]
        return "  ".join(parts[:shown]).rstrip()

    lines = [row([header for _, header in view]), "  ".join("-" * w for w in widths[:shown])]
    lines += [row([column[i] for column in cells]) for i in range(len(table))]
    if shown < len(view):
        lines.append(f"(not shown for width: {', '.join(header for _, header in view[shown:])})")
    return "\n".join(lines)


# The HTML table's columns: the numbers themselves (mean, std), not "mean ± std" text.
HTML_VIEW = (  # the dataset is the table's title
    ("space", "space"),
    ("search_method", "search"),
    ("selection_method", "selection"),
    ("seeds", "seeds"),
    ("benchmark_test_acc_mean", "NB201 test acc (%)"),
    ("benchmark_test_acc_std", "± std"),
    ("test_error_mean", "test error (%)"),
    ("test_error_std", "± std"),
    ("test_error_best", "best"),
    ("params_m", "params (M)"),
    ("search_cost", "search cost"),
    ("search_cost_unit", "unit"),
)
HTML_STYLE = (
    "table.results{border-collapse:collapse;font:12px/1.3 sans-serif;margin:0.5em 0 1em}"
    "table.results th,table.results td{border:1px solid #ccc;padding:2px 5px}"
    "table.results th{background:#f0f0f0}table.results td.num{text-align:right;font-variant-numeric:tabular-nums}"
)


def table_html(table: pd.DataFrame, title: str | None = None) -> str:
    """The results table as an HTML fragment (a ``<table class="results">`` with its style):
    the main columns that hold anything, numbers right-aligned in ``td.num`` cells (a row's
    missing number is an empty cell), everything HTML-escaped."""
    view = [(column, header) for column, header in HTML_VIEW if column in table.columns and table[column].notna().any()]
    numeric = {column: pd.api.types.is_numeric_dtype(table[column]) for column, _ in view}
    parts = [f"<style>{HTML_STYLE}</style>"]
    if title:
        parts.append(f"<p><b>{html.escape(title)}</b></p>")
    parts.append('<table class="results">')
    parts.append("<thead><tr>" + "".join(f"<th>{html.escape(header)}</th>" for _, header in view) + "</tr></thead>")
    parts.append("<tbody>")
    for _, row in table.iterrows():
        cells = []
        for column, _ in view:
            value = row[column]
            if numeric[column]:
                text = "" if pd.isna(value) else _number(value, column)
                cells.append(f'<td class="num">{text}</td>')
            else:
                cells.append(f"<td>{'' if pd.isna(value) else html.escape(str(value))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts) + "\n"


def _number(value, column: str) -> str:
    """Percentages to 2 decimals; sizes and costs (often well below 1) to 4 significant digits."""
    return f"{float(value):.4g}" if column in ("params_m", "search_cost") else f"{float(value):.2f}"
