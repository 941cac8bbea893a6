"""Design matrix Psi and targets y of the weighted least-squares problem (HAL eqs. 18-19).

Rows per labelled configuration R with N atoms:
    energy   sqrt(w_E) * B(R) / N                  target sqrt(w_E) * (E_R - E_prior) / N
    forces   sqrt(w_F) * (-dB/dx)  (3N rows)        target sqrt(w_F) * (F_R - F_prior)
    virial   sqrt(w_V) * W_B(R) / N (6 rows)        target sqrt(w_V) * (W_R - W_prior) / N
Energies and virials are per atom so that cells of different size weigh alike. Per-atom force
weights w_i (array FORCE_WEIGHTS, default 1) scale atom i's three force rows by sqrt(w_i); rows with
w_i = 0 are left out. A carved cell (pylal.select.carve, info PARTIAL) has w_i = 1 on its core and
0 on its margin, and no energy or virial rows: those belong to the carved cell, not to the parent.
The priors are
subtracted from the labels, so the linear model learns the remainder (Delta-learning, Shuaibi
eqs. 1-3): the model-internal ZBL of BasisSpec.prior and, if given, a LAMMPS pair-style prior
(pylal.prior.LammpsPrior, evaluated through LAMMPS by pylal.prior.evaluate.PriorEvaluator).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from pylal.fit.bayes import Factor
from pylal.model.basis import BasisSpec
from pylal.model.committee import CommitteeModel
from pylal.model.neighbors import ase_pairs
from pylal.model.params import Parameters

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
FORCE_WEIGHTS = "force_weights"  # per-atom array: weight of the atom's force rows
PARTIAL = "partial"  # info key: only some forces of this cell are labels (no energy, no virial rows)


def mask_forces(atoms, core):
    """Marks a carved cell in place: force weight 1 on the `core` atoms (bool mask or indices), 0 elsewhere."""
    w = np.zeros(len(atoms))
    w[np.asarray(core)] = 1.0
    atoms.arrays[FORCE_WEIGHTS] = w
    atoms.info[PARTIAL] = True
    return atoms


@dataclasses.dataclass(frozen=True)
class Weights:
    """Relative weights of energy, force and virial rows (HAL uses 5/1/1 for Si, 15/1/1 for AlSi10)."""

    energy: float = 5.0
    forces: float = 1.0
    virial: float = 1.0


def _identity_parameters(spec: BasisSpec) -> Parameters:
    """Coefficients = identity, so the model's 'member forces' are the columns -dB/dx."""
    d = spec.size
    return Parameters(spec, np.zeros(d), np.eye(d), noise_precision=1.0)


# Design rows are computed once per label, off the MD path, so padding costs little there (64 Si atoms, ACE D 180:
# 0.06 -> 0.08 s per configuration at 1.75x), while each new padded size compiles the D-member step again (about
# 20 s for that basis). Labels differ more in size than MD steps do: in `make demo` the 2500 K liquid's flag had 14
# neighbours on its most crowded atom against 10-12 in the rattled crystals, beyond 1.25x: a 38 s refit while the
# walker waited. 1.75x covers the crystal -> liquid step of covalent solids (coordination 4 -> 6-7 within r_cut)
# and costs 1.75x the memory of the member step (large carved cells with a large ACE basis: hundreds of MB).
DESIGN_HEADROOM = 1.75


@functools.lru_cache(maxsize=8)
def _basis_model(spec: BasisSpec) -> CommitteeModel:
    # exact features (no radial table)
    return CommitteeModel(_identity_parameters(spec), ace_kernel=False, headroom=DESIGN_HEADROOM)


def configuration_blocks(spec: BasisSpec, atoms):
    """Basis blocks of one configuration: B (D,), -dB/dx (N, 3, D), W_B (3, 3, D) and the prior's
    energy, forces (N, 3), virial (3, 3). Uses the committee step with identity coefficients."""
    model = _basis_model(spec)
    pairs = ase_pairs(atoms, spec.r_cut, spec.species)
    res = model.step(pairs, tau=0.0, members=True)
    # With committee = I: e_members = B, member_forces[d] = F_prior - dB_d/dx.
    f_prior = res.forces_mean  # mean = 0, so this is the prior alone
    force_cols = np.moveaxis(res.member_forces - f_prior[None], 0, -1)
    virial_cols = np.moveaxis(res.member_virials - res.virial[None], 0, -1)
    return res.e_members, force_cols, virial_cols, res.e_prior, f_prior, res.virial


def stress_to_virial(atoms) -> np.ndarray:
    """ASE stress (eV/A^3, sigma = (1/V) dE/d(strain)) -> LAMMPS virial W = -sigma V (eV)."""
    return -atoms.get_stress(voigt=False) * atoms.get_volume()


def prior_evaluator(spec: BasisSpec, prior):
    """None, a PriorEvaluator, or a LammpsPrior (-> an evaluator with the model's species as types)."""
    if prior is None or hasattr(prior, "evaluate"):
        return prior
    from pylal.prior.evaluate import PriorEvaluator

    return PriorEvaluator(prior, spec.species, spec.r_cut)


def configuration_rows(spec: BasisSpec, atoms, weights: Weights = Weights(), prior=None):
    """Rows, targets and row kinds ('E', 'F', 'V') of one labelled ase.Atoms. prior: a LAMMPS prior
    (LammpsPrior or PriorEvaluator) whose energy, forces and virial are taken off the labels."""
    n = len(atoms)
    b, f_cols, w_cols, e_prior, f_prior, w_prior = configuration_blocks(spec, atoms)
    results = atoms.calc.results if atoms.calc is not None else {}
    evaluator = prior_evaluator(spec, prior)
    if evaluator is not None:  # E = E_prior + E_ML (Shuaibi eq. 4): targets are the residuals
        lp = evaluator.evaluate(atoms)
        e_prior, f_prior, w_prior = e_prior + lp.energy, f_prior + lp.forces, w_prior + lp.virial
    rows, targets, kinds = [], [], []
    partial = bool(atoms.info.get(PARTIAL, False))
    if "energy" in results and not partial:
        s = np.sqrt(weights.energy) / n
        rows.append(s * b[None])
        targets.append([s * (atoms.get_potential_energy() - e_prior)])
        kinds.append("E")
    if "forces" in results:
        w = np.repeat(atoms.arrays.get(FORCE_WEIGHTS, np.ones(n)), 3)
        keep = w > 0
        s = np.sqrt(weights.forces * w[keep])
        rows.append(s[:, None] * f_cols.reshape(3 * n, -1)[keep])
        targets.append(s * (atoms.get_forces() - f_prior).reshape(-1)[keep])
        kinds.extend("F" * int(keep.sum()))
    if "stress" in results and weights.virial > 0 and atoms.pbc.all() and not partial:
        s = np.sqrt(weights.virial) / n
        w_ref = stress_to_virial(atoms) - w_prior
        rows.append(s * np.stack([w_cols[i, j] for i, j in VOIGT]))
        targets.append(s * np.array([w_ref[i, j] for i, j in VOIGT]))
        kinds.extend("V" * 6)
    if not rows:
        raise ValueError("configuration has no energy, forces or stress results to fit")
    return np.concatenate(rows), np.concatenate([np.ravel(t) for t in targets]), np.array(kinds)


class DesignSet:
    """Design rows accumulated configuration by configuration (each basis evaluation done once).
    Configurations are dealt round-robin into `n_folds` folds; each fold keeps one R factor
    (pylal.fit.bayes.Factor) for its energy rows and one for its force and virial rows, so a fit,
    its cross-validation and a re-weighting of energies against forces never refactor all rows."""

    KINDS = ("E", "FV")  # row groups with their own noise level (pylal.fit.committee)

    def __init__(self, spec: BasisSpec, weights: Weights = Weights(), prior=None, n_folds: int = 5):
        """prior: a LammpsPrior subtracted from every configuration's labels (None: none)."""
        self.spec, self.weights = spec, weights
        self.prior = prior if prior is None or not hasattr(prior, "evaluate") else prior.prior
        self._evaluator = prior_evaluator(spec, prior)
        self.blocks: list = []
        self.folds = [{g: Factor(spec.size) for g in self.KINDS} for _ in range(n_folds)]
        self._partials = None  # (key, prefix, suffix) of `_partial_factors`

    def add(self, atoms):
        self.add_block(*configuration_rows(self.spec, atoms, self.weights, self._evaluator))

    def add_block(self, rows, y, kinds):
        fold = self.folds[len(self.blocks) % len(self.folds)]
        for group, factor in fold.items():
            sel = np.isin(kinds, list(group))
            if sel.any():
                factor.add(rows[sel], y[sel])
        self.blocks.append((rows, y, kinds))

    def __len__(self):
        return len(self.blocks)

    @property
    def n_rows(self) -> int:
        return sum(f.n_rows for fold in self.folds for f in fold.values())

    def fold_of(self, i: int) -> int:
        return i % len(self.folds)

    def factor(self, leave_out: int | None = None, energy_scale: float = 1.0) -> Factor:
        """R factor of all rows (or of all outside fold `leave_out`), energy rows times energy_scale.

        A fit asks for the full factor and every leave-one-fold-out factor (cross-validation) at one
        energy_scale: the per-fold factors are combined once into prefix and suffix factors, so each
        is one QR of two stacked triangles ((2D x D), not (2 n_folds D x D))."""
        prefix, suffix = self._partial_factors(energy_scale)
        if leave_out is None:
            parts = [prefix[-1]]
        else:
            parts = [prefix[leave_out], suffix[leave_out + 1]]
        parts = [p for p in parts if p is not None]
        if not parts:
            raise ValueError("no labelled configurations to fit")
        return parts[0] if len(parts) == 1 else Factor.combine(parts)

    def _partial_factors(self, energy_scale: float):
        """prefix[k]: factor of folds < k; suffix[k]: of folds >= k (None: no rows); cached per scale
        until the next add."""
        key = (len(self.blocks), float(energy_scale))
        if self._partials is None or self._partials[0] != key:
            folds = []
            for fold in self.folds:
                used = [f.scaled(energy_scale if g == "E" else 1.0) for g, f in fold.items() if f.n_rows]
                folds.append(None if not used else used[0] if len(used) == 1 else Factor.combine(used))

            def join(a, b):
                return b if a is None else a if b is None else Factor.combine([a, b])

            n = len(folds)
            prefix, suffix = [None] * (n + 1), [None] * (n + 1)
            for k in range(n):
                prefix[k + 1] = join(prefix[k], folds[k])
                suffix[n - 1 - k] = join(folds[n - 1 - k], suffix[n - k])
            self._partials = (key, prefix, suffix)
        return self._partials[1], self._partials[2]

    def arrays(self, indices=None):
        """Rows, targets, kinds of all configurations (or of `indices`)."""
        blocks = self.blocks if indices is None else [self.blocks[i] for i in indices]
        if not blocks:
            raise ValueError("no labelled configurations to fit")
        psi, y, kinds = zip(*blocks)
        return np.concatenate(psi), np.concatenate(y), np.concatenate(kinds)


def build_design(spec: BasisSpec, configurations, weights: Weights = Weights(), prior=None):
    """Psi (rows, D), y (rows,), row kinds for a list of labelled ase.Atoms (targets minus `prior`)."""
    design = DesignSet(spec, weights, prior)
    for atoms in configurations:
        design.add(atoms)
    return design.arrays()
