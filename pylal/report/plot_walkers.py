"""Per-walker traces from walkers/<name>/trace.csv: the uncertainty criteria (HAL Fig. 3 style)
and the bias strength tau.

Uncertainty figure, against MD step: top max_i f_i (HAL eqs. 6-7) with f_tol, bottom the softmax
score (eq. 8) with s_tol; check steps that raised a flag are red crosses; a parameter-version
change (the `version` column changes) is a grey dotted line."""
from __future__ import annotations

import numpy as np

from pylal.report._figure import log_helps, new_figure, plain_log_ticks, save
from pylal.report.data import finite

MAX_VERSION_LABELS = 12


def version_changes(trace: dict) -> list[tuple[float, int]]:
    """(step, new version) wherever the version column changes from one row to the next."""
    v, s = trace["version"], trace["step"]
    ok = np.isfinite(v)
    v, s = v[ok], s[ok]
    idx = np.nonzero(np.diff(v) != 0)[0] + 1
    return [(float(s[i]), int(v[i])) for i in idx]


def plot_uncertainty(walker, path):
    t = walker.trace
    if t is None or walker.n_rows == 0:
        return None
    step = t["step"]
    flagged = t["flagged"] == 1
    tol = walker.tolerance or {}
    changes = version_changes(t)
    fig, axes = new_figure(2, 1, size=(9.0, 5.2), sharex=True)
    for ax, key, tol_key, ylabel in ((axes[0, 0], "f_max", "f_tol", "max$_i$ $f_i$ (eq. 7)"),
                                     (axes[1, 0], "softmax", "s_tol", "softmax score (eq. 8)")):
        y = t[key]
        ax.plot(step, y, "-", color="C0", lw=0.8, label=key)
        if flagged.any():
            ax.plot(step[flagged], y[flagged], "x", color="C3", ms=7, mew=1.5,
                    label=f"flag ({int(flagged.sum())})")
        values = list(y)
        if tol.get(tol_key) is not None:
            ax.axhline(tol[tol_key], color="C3", ls="--", lw=1.2, label=f"{tol_key} = {tol[tol_key]:g}")
            values.append(tol[tol_key])
        if log_helps(values, 10.0):
            ax.set_yscale("log")
            plain_log_ticks(ax)
        for i, (s, v) in enumerate(changes):
            ax.axvline(s, color="0.5", ls=":", lw=0.9, label="new version" if i == 0 else None)
            if ax is axes[0, 0] and len(changes) <= MAX_VERSION_LABELS:
                ax.annotate(f"v{v}", (s, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                            color="0.35", ha="left", va="bottom")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[1, 0].set_xlabel("MD step")
    info = walker.info
    where = ", ".join(x for x in (f"{info['temperature']:g} K" if finite(info.get("temperature")) else "",
                                  f"{info['pressure']:g} bar" if finite(info.get("pressure")) else "",
                                  f"{info['ranks']} MPI ranks" if finite(info.get("ranks")) else "") if x)
    fig.suptitle(f"walker {walker.name}" + (f" ({where})" if where else "")
                 + ("" if walker.tolerance else " - no tolerance.json"), fontsize=11)
    return save(fig, path)


def plot_tau(walkers, path):
    """tau (HAL eqs. 1, 12) against step, one line per walker."""
    walkers = [w for w in walkers if w.trace is not None and w.n_rows and np.isfinite(w.trace["tau"]).any()]
    if not walkers:
        return None
    fig, axes = new_figure(1, 1, size=(8.0, 3.6))
    ax = axes[0, 0]
    for w in walkers:
        ax.plot(w.trace["step"], w.trace["tau"], "-", lw=1.0, label=w.name)
    ax.set_xlabel("MD step")
    ax.set_ylabel("bias strength tau (eV)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=max(1, len(walkers) // 8))
    ax.set_title("tau per walker (adaptive tau, HAL eq. 12)", fontsize=11)
    return save(fig, path)
