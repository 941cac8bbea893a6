"""The one fit entry point: labelled design rows -> calibrated committee -> Parameters.

Used by the refit server, the campaign's final fit, the ASE loop and `pylal fit`:
1. per-species reference energies c0 (constant features) by least squares of the energies per
   atom on the composition;
2. the Bayesian posterior N(c_bar, Sigma) (pylal.fit.bayes: BRR with a smoothness prior, or ARD),
   with energy and force rows at their own noise level (from cross-validation);
3. calibration (z-scores of held-out errors; Tran et al., Mach. Learn.: Sci. Technol. 1, 025006,
   2020): the posterior spread measures the noise of near-exact labels, not the error of a model
   that cannot represent them (misspecification), so it is 3-10x too narrow. K-fold cross-validation
   by configuration gives, for every left-out force component, z = (F_pred - F_ref) / s with s the
   posterior std of that component; the committee is drawn
   from N(c_bar, kappa^2 Sigma) with kappa = rms(z) (`calibrate = "cv"`), so that its spread
   matches the errors it makes on configurations it was not fitted to;
4. a fit whose cross-validation force error exceeds its prior's (too few data for the basis) is
   shrunk toward the prior (`prior_shrinkage`), so it is never worse than no fit on unseen data;
5. K committee members c^k and the sanity record (cross-validation errors) that decides whether
   a version may be published (pylal.fit.checks).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from pylal.fit.bayes import Posterior, ard_fit, evidence_fit, sample_from_root
from pylal.fit.design import DesignSet, Weights
from pylal.fit.holdout import calibration_stats
from pylal.model.basis import BasisSpec
from pylal.model.params import Parameters


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Fit keywords (docs/keywords.md): method 'brr' or 'ard'; smoothness: candidate exponents p of
    the prior precision (1 + degree)^p, the evidence picks one; calibrate 'cv' or 'none';
    energy_noise 'cv' (energy rows re-weighted so their cross-validation error matches the force
    rows', in weighted units) or 'weights' (the given w_E/w_F only);
    cv_rows: force components per fold used for calibration (a random subset; bounds the cost)."""

    method: str = "brr"
    n_members: int = 32
    smoothness: tuple = (0.0, 1.0, 2.0, 3.0, 4.0)
    calibrate: str = "cv"
    energy_noise: str = "cv"
    cv_rows: int = 3000
    ard_seconds: float = 600.0

    def __post_init__(self):
        if self.method not in ("brr", "ard"):
            raise ValueError(f"fit method {self.method!r}: expected 'brr' or 'ard'")
        if self.calibrate not in ("cv", "none"):
            raise ValueError(f"fit calibrate {self.calibrate!r}: expected 'cv' or 'none'")
        if self.energy_noise not in ("cv", "weights"):
            raise ValueError(f"fit energy_noise {self.energy_noise!r}: expected 'cv' or 'weights'")


def reference_energies(spec: BasisSpec, design: DesignSet, indices=None) -> np.ndarray:
    """Prior mean c0 (D,): per-species energies per atom in the constant features, least squares
    of E/N on the composition (minimum norm when one composition cannot separate the species)."""
    cols = spec.constant_columns()
    c0 = np.zeros(spec.size)
    rows, y, kinds = design.arrays(indices)
    e = kinds == "E"
    if e.any():
        c0[cols] = np.linalg.lstsq(rows[e][:, cols], y[e], rcond=None)[0]
    return c0


def posterior(design: DesignSet, settings: FitSettings, leave_out: int | None = None, smoothness=None,
              progress=None, deadline: float | None = None, energy_scale: float = 1.0) -> Posterior:
    """The posterior of all configurations, or of those outside fold `leave_out`, energy rows
    weighted by energy_scale^2 more. ARD stops with FitTimeout at `deadline` (time.perf_counter()
    value; default: ard_seconds from now)."""
    spec = design.spec
    keep = None if leave_out is None else [i for i in range(len(design)) if design.fold_of(i) != leave_out]
    c0 = reference_energies(spec, design, keep)
    factor = design.factor(leave_out, energy_scale)
    if settings.method == "ard":
        seconds = settings.ard_seconds if deadline is None else deadline - time.perf_counter()
        return ard_fit(factor, prior_mean=c0, seconds=seconds, progress=progress)
    return evidence_fit(factor, spec.degrees(), smoothness or settings.smoothness, prior_mean=c0)


def cross_validation(design: DesignSet, settings: FitSettings, smoothness: tuple | None, seed: int = 0,
                     deadline: float | None = None, energy_scale: float = 1.0, progress=None) -> dict:
    """z-scores of left-out force (and energy) components under each fold's posterior.
    Returns raw arrays: err_F (eV/A), std_F, err_E (eV/atom), std_E, the targets ref_F, ref_E and the
    prior mean's share of the prediction base_F, base_E (the reference energies c0; zero for forces).
    progress: as `posterior`'s (ARD)."""
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("err_F", "std_F", "err_E", "std_E", "ref_F", "ref_E", "base_F", "base_E")}
    n_folds = len(design.folds)
    for f in range(n_folds):
        idx = [i for i in range(len(design)) if design.fold_of(i) == f]
        if not idx or len(idx) == len(design):
            continue
        post = posterior(design, settings, leave_out=f, smoothness=smoothness, deadline=deadline,
                         energy_scale=energy_scale, progress=progress)
        rows, y, kinds = design.arrays(idx)
        c0 = reference_energies(design.spec, design, [i for i in range(len(design)) if design.fold_of(i) != f])
        for kind, w in (("F", design.weights.forces), ("E", design.weights.energy)):
            sel = np.flatnonzero(kinds == kind)
            if len(sel) == 0 or w <= 0:
                continue
            if len(sel) > settings.cv_rows:
                sel = rng.choice(sel, settings.cv_rows, replace=False)
            x = rows[sel]
            out[f"err_{kind}"].append((x @ post.mean - y[sel]) / np.sqrt(w))
            out[f"std_{kind}"].append(np.sqrt(np.sum((x @ post.root) ** 2, axis=1)) / np.sqrt(w))
            out[f"ref_{kind}"].append(y[sel] / np.sqrt(w))
            out[f"base_{kind}"].append(x @ c0 / np.sqrt(w))
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def fit_design(design: DesignSet, settings: FitSettings = FitSettings(), seed: int = 0, version: int = 0,
               progress=None) -> Parameters:
    """Fit the design's configurations; draw the calibrated committee; record everything in hyper."""
    t0 = time.perf_counter()
    deadline = t0 + settings.ard_seconds  # ARD: the whole fit, cross-validation included
    energy_scale, smoothness = 1.0, None
    if settings.energy_noise == "cv" and len(design) >= 2 and design.weights.energy > 0:
        # one noise level for energy and force rows (eq. 19) lets force misspecification set the
        # energies' noise too: energies come out loosely fitted and their committee spread 10-30x
        # their errors. The cross-validation errors of each kind (of a BRR fit, also before ARD)
        # set their relative weight instead, within a factor 1e-4..1e6.
        brr = dataclasses.replace(settings, method="brr")
        p0 = posterior(design, brr).smoothness
        cv0 = cross_validation(design, brr, (p0,), seed)
        if len(cv0["err_E"]) and len(cv0["err_F"]):
            sigma_e = np.sqrt(np.mean(cv0["err_E"] ** 2) * design.weights.energy)  # weighted-row units
            sigma_f = np.sqrt(np.mean(cv0["err_F"] ** 2) * design.weights.forces)
            energy_scale = float(np.clip(sigma_f / max(sigma_e, 1e-300), 1e-2, 1e3))
        # the re-weighted fit chooses its smoothness next to this pass's (one SVD per candidate)
        candidates = sorted(settings.smoothness)
        k = min(range(len(candidates)), key=lambda i: abs(candidates[i] - p0))
        smoothness = tuple(candidates[max(k - 1, 0):k + 2])
    if progress is not None:  # one clock for the whole fit: ARD runs again in each cross-validation fold
        report = progress

        def progress(it, kept, _seconds):
            report(it, kept, time.perf_counter() - t0)
    post = posterior(design, settings, smoothness=smoothness, progress=progress, deadline=deadline,
                     energy_scale=energy_scale)
    p = post.smoothness
    hyper = {"method": settings.method, "weights": [design.weights.energy, design.weights.forces,
                                                    design.weights.virial],
             "energy_weight_factor": energy_scale**2, "prior_precision": post.prior_precision, "smoothness": p,
             "log_evidence": post.log_evidence, "n_effective": post.n_effective, "seed": seed,
             "n_rows": design.n_rows, "n_configs": len(design)}
    scale, mean = 1.0, post.mean
    calibration = {"method": settings.calibrate}
    if len(design) >= 2:
        cv = cross_validation(design, settings, (p,), seed, deadline, energy_scale, progress)
        shrink = prior_shrinkage(cv)
        if shrink is not None:  # worse than its prior alone: the fit falls back toward the prior
            hyper["shrink"] = shrink
            s = shrink["factor"]
            for kind in ("F", "E"):  # the cross-validation predictions of the shrunk mean
                pred = cv[f"err_{kind}"] + cv[f"ref_{kind}"]
                cv[f"err_{kind}"] = cv[f"base_{kind}"] + s * (pred - cv[f"base_{kind}"]) - cv[f"ref_{kind}"]
            c0 = reference_energies(design.spec, design)
            mean = c0 + s * (post.mean - c0)
        raw_f = calibration_stats(cv["err_F"], cv["std_F"])
        if settings.calibrate == "cv" and raw_f:
            scale = raw_f["rms_z"]
        calibration.update(
            scale=scale, folds=len(design.folds), raw_forces=raw_f,
            forces=calibration_stats(cv["err_F"], scale * cv["std_F"]),
            energy=calibration_stats(cv["err_E"], scale * cv["std_E"]))
    hyper["calibration"] = calibration
    committee = sample_from_root(mean, scale * post.root, settings.n_members, seed)
    hyper["seconds"] = round(time.perf_counter() - t0, 3)
    return Parameters(design.spec, mean, committee, post.noise_precision, version=version, hyper=hyper,
                      lammps_prior=design.prior)


def prior_shrinkage(cv: dict) -> dict | None:
    """A fit must not go beyond its prior on data it has not seen: when the cross-validation force RMSE
    of the posterior mean exceeds that of the prior alone (no correction: the rms of the force targets,
    labels minus the physics prior), the correction is scaled by the factor s in [0, 1] that minimises
    the cross-validation force error, mean = c0 + s (c_bar - c0) (s = 0: the prior and the reference
    energies alone). A least-squares shrinkage estimate, set by cross-validation like the committee's
    spread. None when the fit is better than its prior (nothing changes)."""
    ref, err = cv["ref_F"], cv["err_F"]
    if len(ref) == 0:
        return None
    fit_rmse, prior_rmse = float(np.sqrt(np.mean(err**2))), float(np.sqrt(np.mean(ref**2)))
    if fit_rmse <= prior_rmse:
        return None
    pred = err + ref
    s = float(np.clip(pred @ ref / max(float(pred @ pred), 1e-300), 0.0, 1.0))
    return dict(factor=s, cv_force_rmse=fit_rmse, prior_force_rmse=prior_rmse,
                shrunk_force_rmse=float(np.sqrt(np.mean((s * pred - ref) ** 2))))


def fit_parameters(spec: BasisSpec, configurations, weights: Weights = Weights(), method: str = "brr",
                   n_members: int = 32, seed: int = 0, version: int = 0, prior=None,
                   settings: FitSettings | None = None) -> Parameters:
    """Fit labelled ase.Atoms: the whole refit in one call. prior: a pylal.prior.LammpsPrior; the fit
    targets the labels minus the prior (Delta-learning) and the prior is written into the parameters."""
    design = DesignSet(spec, weights, prior)
    for atoms in configurations:
        design.add(atoms)
    if settings is None:
        settings = FitSettings(method=method, n_members=n_members)
    return fit_design(design, settings, seed=seed, version=version)

