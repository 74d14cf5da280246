"""One way to make a figure and write it: no display needed, reproducible bytes (no dates
or random ids), written atomically. Plots and genotype pictures both use it."""

from __future__ import annotations

import io
from pathlib import Path

from pipeline import artifacts
from pipeline.errors import UserError

FORMATS = ("svg", "png", "pdf")


class PlotError(UserError, ValueError):
    """Input that cannot be plotted; the message names the file or field."""


def new_figure(figsize=(6.4, 4.8)):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def figure_bytes(fig, fmt: str = "svg") -> bytes:
    """The figure encoded as ``fmt`` with no date or random ids in it."""
    import matplotlib

    if fmt not in FORMATS:
        raise PlotError(f"figure format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}, "png": {}}[fmt]
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "pipeline", "svg.fonttype": "none"}):
        fig.savefig(buffer, format=fmt, metadata=metadata, dpi=120)
    return buffer.getvalue()


def save_figure(fig, path: str | Path) -> Path:
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise PlotError(f"{path}: figure format must be one of {', '.join(FORMATS)} (from the file suffix)")
    artifacts.write_bytes_atomic(path, figure_bytes(fig, fmt))
    return Path(path)
