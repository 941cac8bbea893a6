"""ASE Calculator for the committee potential with the HAL bias, so HAL-MD also runs in plain ASE.

results:
  energy, free_energy   E_HAL = E - tau sigma~ (HAL eq. 1); equals E when tau = 0
  forces, stress        of E_HAL (stress in ASE convention, eV/A^3)
  energy_mean           unbiased E = prior + c_bar . B
  energies_committee    (K,) prior + c^k . B
  sigma, tau            sigma~ (eq. 5) and the bias strength used
  f_i, softmax, f_max   relative force uncertainty (eq. 6) and criteria (eq. 8), on check steps
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
        self.reset()

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
        if self.adaptive is not None:
            self.adaptive.update(np.linalg.norm(res.forces_mean, axis=1).sum(),
                                 np.linalg.norm(res.grad_sigma, axis=1).sum())
        r = self.results
        r["energy"] = r["free_energy"] = res.energy_hal
        r["energy_mean"] = res.energy
        r["energies_committee"] = res.e_members + res.e_prior
        r["forces"] = res.forces
        r["sigma"], r["tau"] = res.sigma, tau
        if self.atoms.pbc.all():
            r["stress"] = -res.virial.reshape(3, 3)[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]] / self.atoms.get_volume()
        if check:
            eps = self.eps if self.eps is not None else hal.mean_force_norm(res.forces_mean)
            f = hal.relative_force_uncertainty(res.member_forces, res.forces_mean, eps)
            r["f_i"] = f
            r["softmax"], r["f_max"] = hal.softmax_score(f)
