"""ASE Calculator for the committee potential with the HAL bias, so HAL-MD also runs in plain ASE.

results:
  energy, free_energy   E_HAL = E - tau sigma~ (HAL eq. 1); equals E when tau = 0
  forces, stress        of E_HAL (stress in ASE convention, eV/A^3)
  energy_mean           unbiased E = prior + c_bar . B
  energies_committee    (K,) prior + c^k . B
  sigma, tau            sigma~ (eq. 5) and the bias strength used
  f_i, softmax, f_max   relative force uncertainty (eq. 6) and criteria (eq. 8), on check steps

A parameter file with a LAMMPS prior (Parameters.lammps_prior, pylal.prior) gets it added here,
evaluated through LAMMPS exactly as the deck's pair style evaluates it: E = E_prior + E_ML
(Shuaibi eq. 4), and every result above includes it. The prior is common to all committee members,
so sigma, the HAL bias and the numerator of f_i come from the learned committee alone; the
denominator |F_bar_i| + eps of f_i (eps = mean |F_bar_i|) and adaptive tau's sum |F_bar| use the
total mean force (prior + learned), as `fix pylal` does, where LAMMPS's force array already holds the
pair style's prior when the fix adds the learned part.
"""
from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from pylal.hal import physics as hal
from pylal.model.committee import CommitteeModel
from pylal.model.neighbors import ase_pairs
from pylal.model.params import Parameters


class PylalCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "forces", "stress", "energy_mean",
                              "energies_committee", "sigma", "tau", "f_i", "softmax", "f_max"]

    def __init__(self, params: Parameters | str, tau: float = 0.0, tau_rel: float | None = None,
                 tau_window: int = 100, eps: float | None = None, check_every: int = 1, **kwargs):
        """tau: fixed bias strength (eV), or tau_rel: adaptive tau (HAL eq. 12) over `tau_window`
        steps. f_i is computed every `check_every` calls (0: never); eps defaults to mean |F_bar|."""
        super().__init__(**kwargs)
        if isinstance(params, (str, bytes)) or hasattr(params, "__fspath__"):
            params = Parameters.load(params)
        self.model = CommitteeModel(params)
        self._prior = None  # pylal.prior.evaluate.PriorEvaluator of params.lammps_prior
        self.fixed_tau = float(tau)
        self.adaptive = hal.AdaptiveTau(tau_rel, tau_window) if tau_rel is not None else None
        self.eps = eps
        self.check_every = int(check_every)
        self.n_calls = 0

    @property
    def params(self) -> Parameters:
        return self.model.params

    def set_parameters(self, params: Parameters):
        """Swap in a new committee (same or new basis) without creating a new calculator."""
        self.model.set_parameters(params)
        if self._prior is not None and self._prior.prior != params.lammps_prior:
            self._prior = None
        self.reset()

    def _prior_result(self):
        """Energy, forces, virial of the LAMMPS prior for self.atoms (None without a prior)."""
        prior = self.model.params.lammps_prior
        if prior is None:
            return None
        if self._prior is None:
            from pylal.prior.evaluate import PriorEvaluator

            self._prior = PriorEvaluator(prior, self.model.spec.species, self.model.spec.r_cut)
        return self._prior.evaluate(self.atoms)

    @property
    def tau(self) -> float:
        return self.adaptive.tau if self.adaptive is not None else self.fixed_tau

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        pairs = ase_pairs(self.atoms, self.model.spec.r_cut, self.model.spec.species)
        check = self.check_every > 0 and self.n_calls % self.check_every == 0
        tau = self.tau
        biased = self.adaptive is not None or self.fixed_tau != 0.0  # else skip the grad-sigma pass
        res = self.model.step(pairs, tau=tau, members=check, bias=biased or check)
        self.n_calls += 1
        lp = self._prior_result()
        e_lp, f_lp, w_lp = (lp.energy, lp.forces, lp.virial) if lp is not None else (0.0, 0.0, 0.0)
        f_mean = res.forces_mean + f_lp  # total unbiased force: prior + learned (+ internal ZBL)
        if self.adaptive is not None:
            self.adaptive.update(np.linalg.norm(f_mean, axis=1).sum(),
                                 np.linalg.norm(res.grad_sigma, axis=1).sum())
        r = self.results
        r["energy"] = r["free_energy"] = res.energy_hal + e_lp
        r["energy_mean"] = res.energy + e_lp
        r["energies_committee"] = res.e_members + res.e_prior + e_lp
        r["forces"] = res.forces + f_lp
        r["sigma"], r["tau"] = res.sigma, tau
        if self.atoms.pbc.all():
            w = res.virial.reshape(3, 3) + w_lp
            r["stress"] = -w[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]] / self.atoms.get_volume()
        if check:
            # member forces differ from the mean by the learned part only (the prior is common),
            # so f_i = (1/K) sum_k |F^k - F_bar| / (|F_bar| + eps) with the total F_bar (HAL eq. 6)
            eps = self.eps if self.eps is not None else hal.mean_force_norm(f_mean)
            f = hal.relative_force_uncertainty(res.member_forces + f_lp, f_mean, eps)
            r["f_i"] = f
            r["softmax"], r["f_max"] = hal.softmax_score(f)
