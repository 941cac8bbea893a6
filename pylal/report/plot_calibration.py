"""Reliability plot (held-out z-scores, Tran et al. 2020): held-out force components binned by the committee's
predicted std; observed rms error against predicted std per phase; the diagonal is calibrated."""
from __future__ import annotations

from pathlib import Path

from pylal.report._figure import new_figure, save


def calibration_data(run) -> dict | None:
    """Reliability bins and summary of the final model (else the newest version) on holdout.xyz."""
    from pylal.fit.holdout import HeldOut
    from pylal.model.params import ParameterFileError, Parameters

    if run.holdout is None:
        return None
    paths = ([run.final_params] if run.final_params is not None else []) + list(reversed(list(run.versions.values())))
    for path in paths:
        try:
            params = Parameters.load(path)
        except ParameterFileError:
            continue
        held = HeldOut(params.spec, run.holdout, params.lammps_prior)
        return dict(file=str(path), bins=held.reliability(params), errors=held.errors(params))
    return None


def plot_reliability(data: dict, path: Path) -> Path:
    fig, axes = new_figure(size=(5.0, 4.5))
    ax = axes[0, 0]
    top = 0.0
    phases = data["errors"].get("phases") or {}
    for phase, b in data["bins"].items():
        e = phases.get(phase, data["errors"])
        label = (f"{phase} K" if phase != "all" else "held-out") + f": rms z {e.get('force_rms_z', float('nan')):.2f}"
        ax.loglog(b["predicted"], b["observed"], "o-", label=label)
        top = max(top, *b["predicted"], *b["observed"])
    lo = min(min(b["predicted"] + b["observed"]) for b in data["bins"].values())
    ax.plot([lo, top], [lo, top], "k--", lw=1, label="calibrated")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("committee std of a force component (eV/$\\AA$)")
    ax.set_ylabel("observed rms error (eV/$\\AA$)")
    ax.legend(fontsize=8)
    return save(fig, path)
