"""The blow-up guard: decides, every step, whether a configuration is broken beyond what a refit can
learn from in place (exploding or non-finite forces, atoms on top of each other, a committee spread
that jumps, atoms that moved more than half the neighbour skin in one step). `fix pylal`
(pylal/lammps/engine.py, which then rolls the run back) and the ASE loop (pylal/ase_loop.py) both
ask `Guard.check`, so both paths trip on the same rule.

It uses only what the step already has (no extra model call):
  f_max      max_i |F_i| of the forces the integrator will use (HAL forces, prior included), eV/A;
             NaN or inf anywhere trips it too
  r_min      shortest distance among the pairs built for the model, A
  sigma      the committee's energy spread (HAL eq. 5), global; trips when it exceeds
             `sigma_jump` times that of the last accepted step (a smooth MD step changes it by a
             few percent; a blow-up by orders of magnitude)
  step       max_i |x_i(t) - x_i(t - dt)|, A; trips above half the neighbour skin: beyond that a
             neighbour list built at the last step may already miss pairs (LAMMPS's own criterion
             for rebuilding, `neigh_modify check yes`) and atoms can be lost between ranks

Each process computes its part (`local_figures`); the HAL controller (pylal/hal/controller.py)
packs it into the one reduction it makes per step anyway (entries combined with MAX), so every
rank decides the same and the guard costs no extra MPI call. `Guard.check` takes the reduced figures.
"""
from __future__ import annotations

import dataclasses

import numpy as np

# order of the reduced vector; r_min enters as -r_min so that MAX reduces all of them
GUARD_FIELDS = ("f_max", "neg_r_min", "step", "non_finite")
NEUTRAL = (0.0, -np.inf, 0.0, 0.0)  # a process with no atoms
REASONS = ("forces", "close_contact", "sigma_jump", "displacement", "non_finite")


@dataclasses.dataclass(frozen=True)
class GuardRule:
    """Thresholds (docs/fix_pylal.md: guard_fmax, guard_rmin, guard_sigma_jump; 0 or None: off)."""

    f_max: float | None = 50.0  # eV/A; |F| of a hot liquid is a few eV/A
    r_min: float | None = 0.6  # A; below any bond (H2: 0.74 A)
    sigma_jump: float | None = 10.0  # ratio of sigma to the last accepted step's sigma
    skin: float | None = None  # neighbour skin (A); the step limit is skin / 2; None: not checked

    @property
    def step_limit(self) -> float | None:
        return 0.5 * self.skin if self.skin else None


@dataclasses.dataclass
class GuardEvent:
    """Why a step was rejected (reason in REASONS), with the global figures that tripped it."""

    reason: str
    f_max: float
    r_min: float
    sigma: float
    sigma_ref: float | None
    step_length: float

    def describe(self) -> str:
        return (f"{self.reason} (max |F| {self.f_max:.4g} eV/A, shortest pair {self.r_min:.3g} A, "
                f"sigma {self.sigma:.4g} eV vs {self.sigma_ref if self.sigma_ref is not None else float('nan'):.4g} "
                f"before, largest step {self.step_length:.3g} A)")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def local_figures(forces, pair_vectors=None, step_length: float = 0.0) -> np.ndarray:
    """This process's part of the guard vector (GUARD_FIELDS) from its atoms' forces (n, 3), its
    pair vectors (m, 3) and its largest step length."""
    forces = np.asarray(forces, dtype=float)
    finite = bool(np.isfinite(forces).all())
    f_max = float(np.sqrt(np.max(np.einsum("ij,ij->i", forces, forces)))) if forces.size and finite else 0.0
    r_min = np.inf
    if pair_vectors is not None and len(pair_vectors):
        v = np.asarray(pair_vectors, dtype=float)
        r_min = float(np.sqrt(np.min(np.einsum("ij,ij->i", v, v))))
    if not np.isfinite(step_length):
        finite = False
    return np.array([f_max, -r_min, float(step_length) if finite else 0.0, 0.0 if finite else 1.0])


class Guard:
    def __init__(self, rule: GuardRule):
        self.rule = rule
        self.sigma_ref: float | None = None  # sigma of the last accepted step
        self.n_events = 0

    def reset(self):
        """After a rollback or a parameter swap: sigma's reference belongs to the old state."""
        self.sigma_ref = None

    def check(self, figures, sigma: float) -> GuardEvent | None:
        """figures: local_figures(...) reduced with MAX over every process; sigma: global."""
        g = np.asarray(figures, dtype=float)
        f_max, r_min, step_length, non_finite = float(g[0]), float(-g[1]), float(g[2]), g[3] > 0
        rule, reason = self.rule, None
        if non_finite or not np.isfinite(sigma):
            reason = "non_finite"
        elif rule.f_max and f_max > rule.f_max:
            reason = "forces"
        elif rule.r_min and r_min < rule.r_min:
            reason = "close_contact"
        elif rule.step_limit and step_length > rule.step_limit:
            reason = "displacement"
        elif rule.sigma_jump and self.sigma_ref and sigma > rule.sigma_jump * self.sigma_ref:
            reason = "sigma_jump"
        if reason is None:
            self.sigma_ref = float(sigma) if sigma > 0 else self.sigma_ref
            return None
        self.n_events += 1
        return GuardEvent(reason, f_max, r_min, float(sigma), self.sigma_ref, step_length)
