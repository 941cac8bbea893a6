"""Per-walker traces from walkers/<name>/trace.csv: the uncertainty criteria (HAL Fig. 3 style)
and the bias strength tau.

Uncertainty figure, against MD step: top max_i f_i (HAL eqs. 6-7) with f_tol, then the softmax
score (eq. 8) with s_tol, then the committee energy sigma (eq. 5) per atom with sigma_tol (per atom
when tolerance.json gives n_atoms, else the total in eV); check steps that raised a flag are red crosses; a parameter-version
change (the `version` column changes) is a grey dotted line. A walker that was restarted appends
to the same trace with its step counter starting again: each such segment is drawn after the
previous one (x = MD steps summed over the segments) and the restart marked by a solid line."""
from __future__ import annotations

import numpy as np

from pylal.campaign.density import TOLERANCE
from pylal.report._figure import log_helps, new_figure, save, set_log
from pylal.report.data import finite

MAX_VERSION_LABELS = 12


def timeline(trace: dict) -> tuple[np.ndarray, np.ndarray]:
    """(x, restarts): the step column made continuous across restarts (wherever the step decreases,
    the rest is shifted to follow the previous row by one typical check interval) and the row
    indices where a new segment starts."""
    s = np.asarray(trace["step"], dtype=float)
    d = np.diff(s)
    gap = float(np.median(d[d > 0])) if (d > 0).any() else 1.0
    restarts = np.nonzero(d < 0)[0] + 1
    x = s.copy()
    for b in restarts:
        x[b:] += x[b - 1] + gap - x[b]
    return x, restarts


def version_changes(trace: dict, x=None) -> list[tuple[float, int]]:
    """(x, new version) wherever the version column changes from one row to the next (x: step)."""
    x = trace["step"] if x is None else x
    v = trace["version"]
    ok = np.isfinite(v)
    v, x = v[ok], x[ok]
    idx = np.nonzero(np.diff(v) != 0)[0] + 1
    return [(float(x[i]), int(v[i])) for i in idx]


def _broken(x, y, restarts):
    """Insert NaN before every restart so the line is not drawn across it."""
    return np.insert(x.astype(float), restarts, np.nan), np.insert(np.asarray(y, dtype=float), restarts, np.nan)


def plot_uncertainty(walker, path):
    t = walker.trace
    if t is None or walker.n_rows == 0:
        return None
    step, restarts = timeline(t)
    flagged = t["flagged"] == 1
    tol = walker.tolerance or {}
    changes = version_changes(t, step)
    n_atoms = tol.get("n_atoms")
    sigma = t["sigma"] / n_atoms if n_atoms else t["sigma"]
    fig, axes = new_figure(3, 1, size=(9.0, 7.2), sharex=True)
    for ax, y, key, tol_key, ylabel in (
            (axes[0, 0], t["f_max"], "f_max", "f_tol", "max$_i$ $f_i$ (eq. 7)"),
            (axes[1, 0], t["softmax"], "softmax", "s_tol", "softmax score (eq. 8)"),
            (axes[2, 0], sigma, "sigma", "sigma_tol" if n_atoms else None,
             "sigma~ / atom (eV, eq. 5)" if n_atoms else "sigma~ (eV, eq. 5)")):
        ax.plot(*_broken(step, y, restarts), "-", color="C0", lw=0.8, label=key)
        if flagged.any():
            ax.plot(step[flagged], y[flagged], "x", color="C3", ms=7, mew=1.5,
                    label=f"flag ({int(flagged.sum())})")
        values = list(y)
        if tol_key is not None and tol.get(tol_key) is not None:
            ax.axhline(tol[tol_key], color="C3", ls="--", lw=1.2, label=f"{tol_key} = {tol[tol_key]:g}")
            values.append(tol[tol_key])
        if log_helps(values, 10.0):
            set_log(ax)
        for i, (s, v) in enumerate(changes):
            ax.axvline(s, color="0.5", ls=":", lw=0.9, label="new version" if i == 0 else None)
            if ax is axes[0, 0] and len(changes) <= MAX_VERSION_LABELS:
                ax.annotate(f"v{v}", (s, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                            color="0.35", ha="left", va="bottom")
        for i, b in enumerate(restarts):
            ax.axvline(step[b], color="C2", ls="-", lw=1.2, alpha=0.7, label="walker restart" if i == 0 else None)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[2, 0].set_xlabel(_xlabel(restarts))
    info = walker.info
    where = ", ".join(x for x in (f"{info['temperature']:g} K" if finite(info.get("temperature")) else "",
                                  f"{info['pressure']:g} bar" if finite(info.get("pressure")) else "",
                                  f"{info['ranks']} MPI rank{'s' if info['ranks'] != 1 else ''}" if finite(info.get("ranks")) else "") if x)
    fig.suptitle(f"walker {walker.name}" + (f" ({where})" if where else "")
                 + ("" if walker.tolerance else " - no tolerance.json"), fontsize=11)
    return save(fig, path)


def plot_tau(walkers, path):
    """tau (HAL eqs. 1, 12) against step, one line per walker."""
    return _per_walker(walkers, "tau", "bias strength tau (eV)", "tau per walker (adaptive tau, HAL eq. 12)", path)


def plot_volume(walkers, path, held: tuple[float, float] | None):
    """Box volume per atom against step, one line per walker, over the held-out set's range (grey band,
    with the 15% margin of pylal.campaign.density dashed): a walker outside has left the held-out states."""

    def band(ax):
        if held is not None:
            ax.axhspan(*held, color="0.85", label="held-out set")
            for v in (held[0] * (1 - TOLERANCE), held[1] * (1 + TOLERANCE)):
                ax.axhline(v, color="0.5", ls="--", lw=0.9)

    return _per_walker(walkers, "volume_per_atom", "volume per atom (A$^3$)", "box volume per atom per walker",
                       path, band)


def _per_walker(walkers, column, ylabel, title, path, decorate=None):
    """One trace column against step, a line per walker (None when no trace has a finite value)."""
    walkers = [w for w in walkers if w.trace is not None and w.n_rows and np.isfinite(w.trace[column]).any()]
    if not walkers:
        return None
    fig, axes = new_figure(1, 1, size=(8.0, 3.6))
    ax = axes[0, 0]
    n_restarts = 0
    for w in walkers:
        x, restarts = timeline(w.trace)
        n_restarts += len(restarts)
        ax.plot(*_broken(x, w.trace[column], restarts), "-", lw=1.0, label=w.name)
    if decorate is not None:
        decorate(ax)
    ax.set_xlabel(_xlabel(n_restarts))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=max(1, len(walkers) // 8))
    ax.set_title(title, fontsize=11)
    return save(fig, path)


def _xlabel(restarts) -> str:
    n = restarts if isinstance(restarts, int) else len(restarts)
    return "MD step" + (f" (segments of {n} restart{'s' if n > 1 else ''} joined)" if n else "")
