"""Figures without pyplot: a `matplotlib.figure.Figure` on an explicit Agg canvas (no global
backend state, safe in a server or notebook process)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def new_figure(nrows: int = 1, ncols: int = 1, size=(6.0, 4.0), **kwargs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def log_helps(values, ratio: float = 20.0) -> bool:
    """Log scale when the positive finite values (at least half of all finite ones) span more than
    `ratio`. Zeros (e.g. f_max of a check step without neighbours) are then drawn at the axis edge."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    pos = v[v > 0]
    return len(pos) > 1 and len(pos) >= len(v) / 2 and pos.max() / pos.min() > ratio


def set_log(ax, axis: str = "y"):
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log", nonpositive="clip")
    plain_log_ticks(ax, axis)


def plain_log_ticks(ax, axis: str = "y"):
    """Log axis labelled 0.02, 0.1, 0.3 instead of 2 x 10^-2; minor ticks at 2, 3, 5 x 10^n get a
    label when the axis spans less than two decades."""
    from matplotlib.ticker import FuncFormatter

    def minor(v, _):
        mantissa = v / 10 ** np.floor(np.log10(v) + 1e-9)
        return f"{v:g}" if np.isclose(mantissa, [2, 3, 5], rtol=1e-6).any() else ""

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    lo, hi = (ax.get_ylim() if axis == "y" else ax.get_xlim())
    if lo > 0 and hi / lo < 100:
        target.set_minor_formatter(FuncFormatter(minor))
