"""Sanity checks of a fitted version before it may reach walkers: a fit whose cross-validation
errors cannot be right (energies off by eV per atom, forces by many eV/A) or whose coefficients are
not finite is held back, with the reasons in words (the refit server logs them, `pylal status`
shows them, the campaign stops on them)."""
from __future__ import annotations

import dataclasses

import numpy as np


MAX_LABEL_FORCE = 50.0  # eV/A ([fit] max_label_force): larger reference forces are kept out of fits


def label_problem(atoms, max_force: float | None = MAX_LABEL_FORCE) -> str | None:
    """Why a labelled configuration must stay out of the fit (None: it may enter). A configuration
    from a blow-up (a guard event of fix pylal: atoms 0.4 A apart, +70 eV/atom) gets a label like
    any flag, but labels that large would dominate a least-squares fit whose other rows are
    eV-scale; it is stored (status 'filtered', with this reason) and never fitted."""
    try:
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    except Exception:  # no label to judge
        return None
    if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
        return "the reference energy or forces are not finite"
    f_max = float(np.sqrt(np.max(np.sum(np.asarray(forces) ** 2, axis=1), initial=0.0)))
    if max_force and f_max > max_force:
        return f"reference forces up to {f_max:.3g} eV/A exceed max_label_force {max_force:g} eV/A"
    return None


@dataclasses.dataclass(frozen=True)
class FitLimits:
    """[fit] max_cv_energy_rmse (eV/atom) and max_cv_force_rmse (eV/A): cross-validation errors
    above these mean the fit cannot be used (docs/server.md)."""

    max_cv_energy_rmse: float = 1.0
    max_cv_force_rmse: float = 5.0


def fit_problems(params, limits: FitLimits = FitLimits()) -> list[str]:
    """Reasons why `params` must not be published (empty: fine)."""
    problems = []
    if not (np.all(np.isfinite(params.mean)) and np.all(np.isfinite(params.committee))):
        problems.append("coefficients are not finite (NaN or inf in the fit)")
    cal = params.hyper.get("calibration", {})
    e = cal.get("energy", {}).get("rmse")
    f = cal.get("forces", {}).get("rmse")
    if e is not None and not e <= limits.max_cv_energy_rmse:
        problems.append(f"cross-validation energy RMSE {e:.3g} eV/atom > max_cv_energy_rmse "
                        f"{limits.max_cv_energy_rmse:g}")
    if f is not None and not f <= limits.max_cv_force_rmse:
        problems.append(f"cross-validation force RMSE {f:.3g} eV/A > max_cv_force_rmse {limits.max_cv_force_rmse:g}")
    return problems


def likely_cause(problems: list[str]) -> str:
    """A hint for the user when no usable fit is possible."""
    if any("not finite" in p for p in problems):
        return ("the labels contain NaN/inf or the design is degenerate: check the reference's output for the "
                "flagged configurations (RUN/store.db) and that every species of the labels is in [fit] species")
    return ("the basis cannot represent the labels: the reference may give energies in other units or with "
            "another zero per species, a label may come from a broken configuration (atoms too close, lost "
            "atoms), or r_cut/n_max/l_max are too small for the chemistry; inspect the labels with the largest "
            "errors (RUN/store.db) and the [fit] section")
