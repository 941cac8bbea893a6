"""Sanity checks of labels and of fitted versions before they may reach walkers.

Labels: `label_problem` is the one filter every labelled configuration passes before it enters a
design (flags the server labels, `[fit] initial_data`, rows already in the store at a restart,
`pylal fit`): a label that is not finite, has forces above `max_label_force` or an unphysical
contact is kept out of the fit and reported with its reason.
Versions: a fit whose cross-validation errors cannot be right (energies off by eV per atom, forces by
many eV/A), whose coefficients are not finite, or whose forces are worse than the prior alone is held
back, with the reasons in words, the worst configurations and the setting that would change it (the
refit server logs and prints them, `pylal status` shows them, the campaign stops on them)."""
from __future__ import annotations

import dataclasses

import numpy as np


MAX_LABEL_FORCE = 50.0  # eV/A ([fit] max_label_force): larger reference forces are kept out of fits
# [fit] min_contact: a pair of atoms closer than this fraction of the sum of their covalent radii
# (ase.data.covalent_radii; Si-Si 0.5 x 2.22 = 1.11 A against a 2.35 A bond, H-H 0.31 A against 0.74 A)
# is a broken configuration (a blow-up, overlapping atoms), not a label to fit. 0 disables the check.
MIN_CONTACT = 0.5
# [fit] max_cv_prior_ratio: a fit whose cross-validation force RMSE exceeds this times the force error
# of the prior alone (predicting a zero correction) is not published. 0 disables the check. Not 1: a fit
# that learnt nothing and fell back to its prior (BRR shrinks to it on uninformative labels) scores
# 1.00-1.01 from the noise of the cross-validation estimate; it is the prior, and may be published.
MAX_CV_PRIOR_RATIO = 1.05


def closest_contact(atoms, min_contact: float = MIN_CONTACT):
    """(i, j, distance, threshold) of the closest pair closer than min_contact x (r_cov_i + r_cov_j),
    or None when there is no such pair."""
    from ase.data import covalent_radii
    from ase.neighborlist import neighbor_list

    if not min_contact or len(atoms) < 2:
        return None
    radii = min_contact * covalent_radii[atoms.numbers]
    i, j, d = neighbor_list("ijd", atoms, radii.tolist(), self_interaction=False)
    if len(d) == 0:
        return None
    k = int(np.argmin(d))
    return int(i[k]), int(j[k]), float(d[k]), float(radii[i[k]] + radii[j[k]])


def label_problem(atoms, max_force: float | None = MAX_LABEL_FORCE, min_contact: float | None = MIN_CONTACT) -> str | None:
    """Why a labelled configuration must stay out of the fit (None: it may enter). A configuration
    from a blow-up (a guard event of fix pylal: atoms 0.4 A apart, +70 eV/atom) gets a label like
    any flag, but labels that large would dominate a least-squares fit whose other rows are
    eV-scale; it is stored (status 'filtered', with this reason) and never fitted. Forces count
    only on atoms whose forces are fitted (a carved cell's core, pylal.fit.design.FORCE_WEIGHTS)."""
    from pylal.fit.design import FORCE_WEIGHTS

    calc = getattr(atoms, "calc", None)
    if calc is None:  # no label to judge
        return None
    results = dict(calc.results)
    for name, get in (("energy", atoms.get_potential_energy), ("forces", atoms.get_forces)):
        if name not in results:
            try:
                results[name] = get()
            except Exception:  # not labelled with it
                pass
    energy, forces = results.get("energy"), results.get("forces")
    if energy is None and forces is None:
        return None
    if energy is not None and not np.all(np.isfinite(energy)):
        return "the reference energy is not finite"
    if forces is not None:
        forces = np.asarray(forces, dtype=float).reshape(len(atoms), 3)
        if not np.all(np.isfinite(forces)):
            return "the reference forces are not finite"
        norms = np.sqrt(np.sum(forces ** 2, axis=1))
        weights = atoms.arrays.get(FORCE_WEIGHTS)
        if weights is not None:
            norms = norms[np.asarray(weights) > 0]
        f_max = float(np.max(norms, initial=0.0))
        if max_force and f_max > max_force:
            return f"reference forces up to {f_max:.3g} eV/A exceed max_label_force {max_force:g} eV/A"
    contact = closest_contact(atoms, min_contact or 0.0)
    if contact is not None:
        i, j, d, limit = contact
        sym = atoms.get_chemical_symbols()
        return (f"atoms {i} and {j} ({sym[i]}-{sym[j]}) are {d:.2f} A apart, closer than min_contact {min_contact:g} "
                f"x their covalent radii sum ({limit:.2f} A): a broken configuration")
    return None


@dataclasses.dataclass(frozen=True)
class FitLimits:
    """[fit] max_cv_energy_rmse (eV/atom) and max_cv_force_rmse (eV/A): cross-validation errors
    above these mean the fit cannot be used; max_cv_prior_ratio: the cross-validation force RMSE
    may be at most this times the prior's force error (docs/server.md)."""

    max_cv_energy_rmse: float = 1.0
    max_cv_force_rmse: float = 5.0
    max_cv_prior_ratio: float = MAX_CV_PRIOR_RATIO


def prior_force_rmse(design) -> float | None:
    """Force RMSE (eV/A) of the prior alone, predicting a zero correction: the rms of the force targets
    (labels minus the physics prior) of a pylal.fit.design.DesignSet; None without force rows."""
    total, n = 0.0, 0
    for _rows, y, kinds in design.blocks:
        f = y[kinds == "F"]
        total += float(np.sum(f ** 2))
        n += len(f)
    if n == 0 or design.weights.forces <= 0:
        return None
    return float(np.sqrt(total / n / design.weights.forces))


def fit_problems(params, limits: FitLimits = FitLimits(), prior_force_rmse: float | None = None) -> list[str]:
    """Reasons why `params` must not be published (empty: fine). prior_force_rmse: the force error of
    the prior alone (`prior_force_rmse(design)`); a fit with a larger cross-validation force RMSE
    (times limits.max_cv_prior_ratio) is worse than no fit."""
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
    ratio = limits.max_cv_prior_ratio
    if f is not None and prior_force_rmse and ratio and f > ratio * prior_force_rmse:
        problems.append(f"the fit's cross-validation force error {f:.3g} eV/A exceeds the prior's {prior_force_rmse:.3g}"
                        f" eV/A (the error of no correction to the prior; max_cv_prior_ratio {ratio:g}): it is worse "
                        f"than no fit")
    return problems


def worst_configurations(design, params, names=None, n: int = 3) -> list[dict]:
    """The `n` configurations of `design` (a pylal.fit.design.DesignSet) with the largest force error
    of params.mean on their own labels (training error, eV/A), with their largest force target |F|
    (label minus prior, eV/A). names[i]: how to find configuration i (store row, file and index).
    One matrix-vector product per configuration: cheap next to a fit."""
    w_f = design.weights.forces
    if w_f <= 0 or not len(design):
        return []
    out = []
    for i, (rows, y, kinds) in enumerate(design.blocks):
        sel = kinds == "F"
        if not sel.any():
            continue
        err = (rows[sel] @ params.mean - y[sel]) / np.sqrt(w_f)
        f = y[sel].reshape(-1, 3) / np.sqrt(w_f)
        out.append(dict(name=names[i] if names is not None and i < len(names) else f"configuration {i}",
                        force_rmse=float(np.sqrt(np.mean(err ** 2))),
                        max_force=float(np.sqrt(np.max(np.sum(f ** 2, axis=1))))))
    out.sort(key=lambda c: -c["force_rmse"] if np.isfinite(c["force_rmse"]) else -np.inf)
    return out[:n]


def describe_worst(worst: list[dict]) -> str:
    return ", ".join(f"{c['name']} (force RMSE {c['force_rmse']:.3g} eV/A, max |F - F_prior| {c['max_force']:.3g} "
                     f"eV/A)" for c in worst)


def advice(problems: list[str], worst: list[dict] = (), limits: FitLimits = FitLimits(),
           max_label_force: float = MAX_LABEL_FORCE) -> str:
    """What to change so that a refit with these problems passes (one sentence per kind of problem)."""
    out = []
    top = worst[0] if worst else None
    if any("max_cv_force_rmse" in p or "max_cv_energy_rmse" in p for p in problems):
        remove = f", or remove {top['name']} from the data" if top else ""
        lower = ""
        if top and not max_label_force:
            lower = ", set [fit] max_label_force (off now) to filter labels with large forces"
        elif top and top["max_force"] < max_label_force:
            lower = (f", lower [fit] max_label_force (now {max_label_force:g} eV/A; the worst configuration's |F - "
                     f"F_prior| reaches {top['max_force']:.3g}) to filter such labels")
        out.append(f"raise [fit] max_cv_force_rmse (now {limits.max_cv_force_rmse:g}) or max_cv_energy_rmse (now "
                   f"{limits.max_cv_energy_rmse:g}){lower}{remove}")
    if any("worse than no fit" in p for p in problems):
        out.append("add labelled configurations ([fit] initial_data / the campaign's [initial] count), use a smaller "
                   "basis (n_max/l_max, max_degree) or a better physics prior ([fit] lammps_prior); "
                   "[fit] max_cv_prior_ratio = 0 publishes such fits anyway")
    if any("not finite" in p for p in problems):
        out.append("check the reference's output for the configurations named and that every species of the "
                   "labels is in [fit] species")
    return "; ".join(out)


def likely_cause(problems: list[str]) -> str:
    """A hint for the user when no usable fit is possible."""
    if any("not finite" in p for p in problems):
        return ("the labels contain NaN/inf or the design is degenerate: check the reference's output for the "
                "flagged configurations (RUN/store.db) and that every species of the labels is in [fit] species")
    if problems and all("worse than no fit" in p for p in problems):
        return ("too few labelled configurations for the basis: with them the fit predicts forces worse than the "
                "prior alone")
    return ("the basis cannot represent the labels: the reference may give energies in other units or with "
            "another zero per species, a label may come from a broken configuration (atoms too close, lost "
            "atoms), or r_cut/n_max/l_max are too small for the chemistry; inspect the labels with the largest "
            "errors (RUN/store.db) and the [fit] section")
