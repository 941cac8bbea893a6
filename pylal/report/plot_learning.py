"""Learning curve: held-out energy and force RMSE of every version against the number of
labelled configurations in its fit (the final ARD fit as a star)."""
from __future__ import annotations

import numpy as np

from pylal.report._figure import log_helps, new_figure, save, set_log


def plot_learning_curve(curve: dict, path):
    """curve: evaluate.learning_curve output. Versions without a known configuration count are
    left out; if none has one, the x axis is the version number instead."""
    points = [p for p in curve["points"] if p.get("force_rmse") is not None]
    counted = [p for p in points if p.get("n_configs") is not None]
    by_version = not counted
    use = points if by_version else counted
    final = curve.get("final")
    if not use and final is None:
        return None
    use = sorted(use, key=lambda p: (p["version"] if by_version else p["n_configs"], p["version"]))
    x = np.array([p["version"] if by_version else p["n_configs"] for p in use], dtype=float)
    fig, axes = new_figure(1, 2, size=(9.5, 3.8))
    for ax, key, scale, ylabel in ((axes[0, 0], "energy_rmse", 1e3, "energy RMSE (meV/atom)"),
                                   (axes[0, 1], "force_rmse", 1.0, "force RMSE (eV/$\\AA$)")):
        y = np.array([p[key] * scale if p.get(key) is not None else np.nan for p in use], dtype=float)
        ax.plot(x, y, "o-", color="C0", ms=4, label="published versions")
        values = list(y)
        if final is not None and final.get(key) is not None and final.get("n_configs") is not None \
                and not by_version:
            ax.plot([final["n_configs"]], [final[key] * scale], "*", color="C3", ms=13, label="final fit")
            values.append(final[key] * scale)
        if log_helps(values, 3.0):
            set_log(ax)
        ax.set_xlabel("parameter version" if by_version else "configurations in the fit (initial + labelled)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        if len(x) and np.all(x == np.round(x)):
            ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0, 1].legend(fontsize=8)
    n_holdout = curve.get("n_holdout")
    fig.suptitle("Learning curve on holdout.xyz" + (f" ({n_holdout} configurations)" if n_holdout else "")
                 + (" - configuration counts unknown, by version" if by_version else ""), fontsize=11)
    return save(fig, path)
