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

import dataclasses

from ase.calculators.calculator import Calculator, all_changes

import numpy as np

from pylal.hal.controller import Decision, HalController, HalRule
from pylal.hal.guard import Guard, GuardRule, local_figures
from pylal.model.committee import CommitteeModel
from pylal.model.neighbors import ase_pairs
from pylal.model.params import Parameters

_RULE_KEYS = {f.name for f in dataclasses.fields(HalRule)}


class PylalCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "forces", "stress", "energy_mean",
                              "energies_committee", "sigma", "tau", "f_i", "softmax", "f_max", "flag"]

    def __init__(self, params: Parameters | str, rule: HalRule | None = None, guard: GuardRule | None = None,
                 **kwargs):
        """rule: the HAL policy (pylal.hal.controller.HalRule), or its fields as keywords: tau
        (fixed bias strength, eV) or tau_rel (adaptive tau, HAL eq. 12, over tau_window steps),
        check_every (f_i every that many calls, 0: never; default 1), eps (default mean |F_bar|),
        s_tol, f_tol, sigma_tol, cooldown (the flag rule). Each call is one step.
        guard: the blow-up guard's thresholds (pylal.hal.guard; None: no guard); its verdict of
        each call is `decision.guard` (the step length is measured from the previous call)."""
        rule_keywords = {k: kwargs.pop(k) for k in list(kwargs) if k in _RULE_KEYS}
        super().__init__(**kwargs)
        if rule is not None and rule_keywords:
            raise TypeError(f"PylalCalculator: give a rule or its keywords {sorted(rule_keywords)}, not both")
        if isinstance(params, (str, bytes)) or hasattr(params, "__fspath__"):
            params = Parameters.load(params)
        self.model = CommitteeModel(params)
        self._prior = None  # pylal.prior.evaluate.PriorEvaluator of params.lammps_prior
        self.controller = HalController(rule if rule is not None else HalRule(**rule_keywords),
                                        guard=Guard(guard) if guard is not None else None)
        self.decision: Decision | None = None  # of the last call
        self.n_calls = 0
        self._x_prev = None  # positions of the previous call (the guard's step length)

    @property
    def params(self) -> Parameters:
        return self.model.params

    @property
    def adaptive(self):
        """Adaptive tau (physics.AdaptiveTau), None with a fixed tau."""
        return self.controller.adaptive

    @property
    def tau(self) -> float:
        """tau of the next call."""
        return self.controller.current_tau()

    def set_parameters(self, params: Parameters, burn_in: bool = True):
        """Swap in a new committee (same or new basis) without creating a new calculator; adaptive
        tau burns in again (as `fix pylal` after a swap) unless burn_in is False."""
        self.model.set_parameters(params)
        if self._prior is not None and self._prior.prior != params.lammps_prior:
            self._prior = None
        if burn_in:
            self.controller.burn_in()
        self.new_trajectory()
        self.reset()

    def new_trajectory(self):
        """The next call does not continue the last one (positions restored or reset): the guard
        measures no step length and forgets its sigma reference."""
        self._x_prev = None
        if self.controller.guard is not None:
            self.controller.guard.reset()

    def _prior_result(self):
        """Energy, forces, virial of the LAMMPS prior for self.atoms (None without a prior)."""
        prior = self.model.params.lammps_prior
        if prior is None:
            return None
        if self._prior is None:
            from pylal.prior.evaluate import PriorEvaluator

            self._prior = PriorEvaluator(prior, self.model.spec.species, self.model.spec.r_cut)
        return self._prior.evaluate(self.atoms)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        pairs = ase_pairs(self.atoms, self.model.spec.r_cut, self.model.spec.species)
        step, hal = self.n_calls, self.controller
        check = hal.wants_members(step)
        res = self.model.step(pairs, tau=hal.tau_at(step), members=check, bias=hal.rule.biased or check)
        self.n_calls += 1
        lp = self._prior_result()
        e_lp, f_lp, w_lp = (lp.energy, lp.forces, lp.virial) if lp is not None else (0.0, 0.0, 0.0)
        # the prior is common to all members: it enters F_bar (f_i's denominator, adaptive tau's
        # sum |F_bar|) and every F^k, not the committee's spread (HAL eq. 6)
        figures = None
        if hal.guard is not None:
            x = self.atoms.positions
            step_length = 0.0
            if self._x_prev is not None and self._x_prev.shape == x.shape:
                step_length = float(np.sqrt(np.max(np.sum((x - self._x_prev) ** 2, axis=1), initial=0.0)))
            self._x_prev = x.copy()
            figures = local_figures(res.forces + f_lp, pairs.vectors, step_length)
        d = self.decision = hal.decide(step, res.forces_mean + f_lp, res.grad_sigma if hal.rule.biased or check else None,
                                       res.member_forces + f_lp if check else None, res.spread, guard_figures=figures)
        r = self.results
        r["energy"] = r["free_energy"] = res.energy_hal + e_lp
        r["energy_mean"] = res.energy + e_lp
        r["energies_committee"] = res.e_members + res.e_prior + e_lp
        r["forces"] = res.forces + f_lp
        r["sigma"], r["tau"] = res.sigma, res.tau
        if self.atoms.pbc.all():
            w = res.virial.reshape(3, 3) + w_lp
            r["stress"] = -w[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]] / self.atoms.get_volume()
        if d.check:
            r["f_i"], r["softmax"], r["f_max"], r["flag"] = d.f_i, d.softmax, d.f_max, d.flag
