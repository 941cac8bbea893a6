"""Parity plots on holdout.xyz: model (committee mean, tau = 0) against reference, energy per
atom and every force component, with the RMSE in each title."""
from __future__ import annotations

import numpy as np

from pylal.report._figure import new_figure, save


def _panel(ax, ref, pred, label, unit, title):
    ok = np.isfinite(ref) & np.isfinite(pred)
    ref, pred = ref[ok], pred[ok]
    ax.plot(ref, pred, "o", ms=3 if len(ref) > 200 else 5, alpha=0.5 if len(ref) > 200 else 0.8, color="C0")
    if len(ref):
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "-", color="0.4", lw=0.8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(f"reference {label} ({unit})")
    ax.set_ylabel(f"model {label} ({unit})")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


def plot_parity(parity: dict, path):
    fig, axes = new_figure(1, 2, size=(9.0, 4.4))
    e = parity.get("energy_rmse")
    _panel(axes[0, 0], parity["ref_e"], parity["pred_e"], "energy", "eV/atom",
           f"energy: RMSE {e * 1e3:.3g} meV/atom" if e is not None else "energy: no reference energies")
    _panel(axes[0, 1], parity["ref_f"], parity["pred_f"], "force component", "eV/$\\AA$",
           f"forces: RMSE {parity['force_rmse']:.3g} eV/$\\AA$")
    fig.suptitle(f"{parity['label']} ({parity['file']}) on holdout.xyz ({len(parity['ref_e'])} configurations)",
                 fontsize=11)
    return save(fig, path)
