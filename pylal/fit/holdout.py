"""Errors and calibration of a parameter set on held-out labelled configurations: the one place
they are computed (refit server, campaign, benchmarks).

The model is linear in its coefficients, so the held-out configurations' design rows (energy per
atom and force components, unweighted, targets minus the priors; pylal.fit.design) are built once
and every version is judged by matrix products: predictions rows @ c_bar, committee spread
std_k(rows @ c^k). z = error / spread per component (z-scores of held-out errors; Tran et al.,
Mach. Learn.: Sci. Technol. 1, 025006, 2020).
"""
from __future__ import annotations

import numpy as np

from pylal.fit.design import DesignSet, Weights


def calibration_stats(err: np.ndarray, std: np.ndarray) -> dict:
    """rms z, the fraction inside the 95% interval |z| <= 1.96, and the RMSE (Tran et al. 2020).

    Components the committee cannot move (std below 1e-6 of the rms std: forces fixed by symmetry, e.g.
    in a perfect crystal) say nothing about calibration and are left out of z: their reference error is
    numerical noise (a DFT grid's 1e-4 eV/A against a std of 1e-16 made one such configuration turn the
    cross-validation scale into 1e10). The RMSE counts every component."""
    if len(err) == 0:
        return {}
    err, std = np.asarray(err), np.asarray(std)
    movable = std > 1e-6 * np.sqrt(np.mean(std**2))
    z = err[movable] / std[movable] if movable.any() else np.zeros(1)
    return dict(rms_z=float(np.sqrt(np.mean(z**2))), coverage95=float(np.mean(np.abs(z) <= 1.96)),
                rmse=float(np.sqrt(np.mean(err**2))), n=int(len(err)))


class HeldOut:
    """Held-out configurations, grouped by phase (atoms.info[phase_key], e.g. the temperature)."""

    def __init__(self, spec, frames, prior=None, phase_key: str = "holdout_temperature"):
        self.spec = spec
        self.design = DesignSet(spec, Weights(1.0, 1.0, 0.0), prior)
        self.phase = []
        for atoms in frames:
            self.design.add(atoms)
            self.phase.append(str(atoms.info.get(phase_key, "all")))
        self.rows, self.y, self.kinds = self.design.arrays()
        n_rows = [len(b[1]) for b in self.design.blocks]
        self.row_phase = np.repeat(self.phase, n_rows)

    def __len__(self):
        return len(self.phase)

    def predictions(self, params):
        """Mean prediction and committee std of every row."""
        return self.rows @ params.mean, (self.rows @ params.committee.T).std(axis=1)

    def errors(self, params) -> dict:
        """energy_rmse (eV/atom), force_rmse (eV/A), force/energy rms z and 95% coverage, overall
        and per phase ("phases": {phase: {...}})."""
        pred, std = self.predictions(params)
        err = pred - self.y

        def summary(mask):
            f, e = mask & (self.kinds == "F"), mask & (self.kinds == "E")
            out = {}
            for name, sel in (("force", f), ("energy", e)):
                s = calibration_stats(err[sel], std[sel])
                if s:
                    out.update({f"{name}_rmse": s["rmse"], f"{name}_rms_z": s["rms_z"],
                                f"{name}_coverage95": s["coverage95"]})
            return out

        result = summary(np.ones(len(err), bool))
        phases = sorted(set(self.phase))
        if len(phases) > 1:
            result["phases"] = {p: summary(self.row_phase == p) for p in phases}
        return result

    def reliability(self, params, n_bins: int = 10) -> dict:
        """Force components binned by predicted std (quantile bins), per phase: predicted std (rms in
        the bin) against the observed rms error; the diagonal is calibrated."""
        pred, std = self.predictions(params)
        err = pred - self.y
        out = {}
        for p in sorted(set(self.phase)):
            sel = (self.row_phase == p) & (self.kinds == "F")
            s, e = std[sel], err[sel]
            edges = np.quantile(s, np.linspace(0, 1, n_bins + 1))
            idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, n_bins - 1)
            bins = [(float(np.sqrt(np.mean(s[idx == b] ** 2))), float(np.sqrt(np.mean(e[idx == b] ** 2))))
                    for b in range(n_bins) if (idx == b).any()]
            out[p] = dict(predicted=[b[0] for b in bins], observed=[b[1] for b in bins])
        return out
