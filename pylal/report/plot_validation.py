"""g(r) of the model against the reference, from validation.json["rdf"] (pylal.validate)."""
from __future__ import annotations

import numpy as np

from pylal.report._figure import new_figure, save


def _floats(values) -> np.ndarray:
    """JSON numbers to floats; null or anything else that is not a number becomes NaN."""
    return np.array([float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
                     for v in values], dtype=float)


def plot_rdf(rdf: dict, path):
    r = _floats(rdf.get("r") or [])
    curves = [(k, _floats(rdf[k])) for k in ("reference", "model")
              if isinstance(rdf.get(k), list) and len(rdf[k]) == len(r) and np.isfinite(_floats(rdf[k])).any()]
    if len(r) == 0 or not curves:
        return None
    fig, axes = new_figure(1, 1, size=(6.5, 3.8))
    ax = axes[0, 0]
    for (name, g), style in zip(curves, ("-", "--")):
        ax.plot(r, g, style, lw=1.5, label=name)
    if len(curves) == 2:
        rms = float(np.sqrt(np.nanmean((curves[0][1] - curves[1][1]) ** 2)))
        ax.set_title(f"g(r): RMS difference {rms:.3g}", fontsize=10)
    ax.axhline(1.0, color="0.6", lw=0.6)
    ax.set_xlabel("r ($\\AA$)")
    ax.set_ylabel("g(r)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)
