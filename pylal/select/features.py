"""From ase.Atoms to selection features: summed basis vectors B and the posterior transform.

B of a configuration is sum_i B_i (the energy design row before its sqrt(w_E)/N weighting,
pylal.fit.design). The posterior uses the full training design Psi (energy, force and virial rows,
as in the fit), with the fit's column scaling (RMS of each design column), so phi_GP distances
are distances under the model's own posterior (pylal.select.posterior).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pylal.fit.design import Weights, configuration_blocks, configuration_rows
from pylal.model.basis import BasisSpec
from pylal.select.posterior import PosteriorTransform, column_scale, posterior_transform


@dataclasses.dataclass
class LabelledConfig:
    """Design rows of one labelled configuration plus what selection needs from it."""

    basis: np.ndarray  # (D,) summed basis vector B
    rows: np.ndarray  # (rows, D) weighted design rows (pylal.fit.design.configuration_rows)
    targets: np.ndarray  # (rows,)
    kinds: np.ndarray  # (rows,) 'E', 'F', 'V'
    f_prior: np.ndarray | None  # (N, 3) forces of the repulsive prior (None if no force rows)
    n_atoms: int

    def force_columns(self, weights: Weights) -> np.ndarray:
        """-dB/dx as (3N, D) (the force rows without their sqrt(w_F) weight)."""
        return self.rows[self.kinds == "F"] / np.sqrt(weights.forces)


def labelled_config(spec: BasisSpec, atoms, weights: Weights = Weights()) -> LabelledConfig:
    """One basis evaluation per configuration: B and the prior forces are recovered from the
    weighted rows (energy row = sqrt(w_E) B / N; force target = sqrt(w_F) (F_ref - F_prior));
    without an energy label (or a zero weight) the basis is evaluated a second time."""
    rows, targets, kinds = configuration_rows(spec, atoms, weights)
    n = len(atoms)
    has_e, has_f = (kinds == "E").any(), (kinds == "F").any()
    if has_e and weights.energy > 0 and (not has_f or weights.forces > 0):
        basis = rows[kinds == "E"][0] * n / np.sqrt(weights.energy)
        f_prior = None
        if has_f:
            f_prior = atoms.get_forces() - targets[kinds == "F"].reshape(n, 3) / np.sqrt(weights.forces)
    else:
        basis, _, _, _, f_prior, _ = configuration_blocks(spec, atoms)
        f_prior = f_prior if has_f else None
    return LabelledConfig(np.asarray(basis, dtype=np.float64), rows, targets, kinds, f_prior, n)


def labelled_configs(spec: BasisSpec, atoms_list, weights: Weights = Weights()) -> list[LabelledConfig]:
    """labelled_config of each configuration, evaluated in order of decreasing pair count: the
    padded pair capacity of the jitted step then grows once instead of recompiling as hotter,
    denser configurations come along (results are returned in input order)."""
    order = _largest_first(spec, atoms_list)
    out = [None] * len(atoms_list)
    for i in order:
        out[i] = labelled_config(spec, atoms_list[i], weights)
    return out


def _largest_first(spec: BasisSpec, atoms_list) -> list[int]:
    from pylal.model.neighbors import ase_pairs

    counts = [ase_pairs(a, spec.r_cut, spec.species).n_pairs for a in atoms_list]
    return sorted(range(len(atoms_list)), key=lambda i: -counts[i])


def basis_vectors(spec: BasisSpec, atoms_list) -> np.ndarray:
    """B (n, D) of unlabelled configurations (e.g. flagged ones waiting for the oracle)."""
    out = np.zeros((len(atoms_list), spec.size))
    for i in _largest_first(spec, atoms_list):
        out[i] = np.asarray(configuration_blocks(spec, atoms_list[i])[0])
    return out


def gram_of(rows_list) -> tuple[np.ndarray, int]:
    """Psi^T Psi and the row count of the stacked training rows. O(N_rows d^2)."""
    d = rows_list[0].shape[1]
    g = np.zeros((d, d))
    n = 0
    for r in rows_list:
        g += r.T @ r
        n += len(r)
    return g, n


def training_transform(rows_list, sigma2: float | None = None) -> PosteriorTransform:
    """Eq. 23 transform for a training set given as design row blocks, with the fit's column
    scaling. sigma2 None: trace heuristic; or alpha/lambda of the fit (evidence_sigma2)."""
    g, n = gram_of(rows_list)
    return posterior_transform(g, n, sigma2=sigma2, scale=column_scale(g, n))


def evidence_sigma2(params) -> float:
    """sigma^2 = alpha / lambda (prior / noise precision of the BRR fit, in its scaled coordinates):
    then phi_GP . phi_GP' = alpha B^T Sigma B', the fit's own posterior energy covariance in units
    of the prior variance 1/alpha."""
    prior = params.hyper.get("prior_precision")
    if not isinstance(prior, (int, float)):
        raise ValueError("evidence_sigma2: needs a BRR fit (scalar hyper['prior_precision'])")
    return float(prior) / float(params.noise_precision)


def posterior_features(spec: BasisSpec, pool_atoms, train_atoms, weights: Weights = Weights(),
                       params=None, noise: str = "trace"):
    """phi_GP of the pool (unlabelled ok) and of the training configurations (labelled).
    noise 'trace' (Zaverkin's heuristic) or 'evidence' (from `params`, the current fit)."""
    train = labelled_configs(spec, train_atoms, weights)
    sigma2 = evidence_sigma2(params) if noise == "evidence" else None
    t = training_transform([c.rows for c in train], sigma2)
    return t(basis_vectors(spec, pool_atoms)), t(np.array([c.basis for c in train]))


def basis_from_block(rows: np.ndarray, kinds: np.ndarray, weights: Weights) -> np.ndarray | None:
    """B of a configuration from its design block (energy row = sqrt(w_E) B / N, N = force rows / 3);
    None without an energy row, force rows or energy weight."""
    e, n_f = rows[kinds == "E"], int((kinds == "F").sum())
    if len(e) == 0 or n_f == 0 or weights.energy <= 0:
        return None
    return e[0] * (n_f // 3) / np.sqrt(weights.energy)


def design_features(design, pool_basis: np.ndarray, params=None, noise: str = "trace"):
    """For the refit server: phi_GP of candidate configurations (their B, e.g. from basis_vectors)
    and of the training set held in a pylal.fit.design.DesignSet (`Refitter.design`), without
    evaluating the basis of any training configuration again. Training configurations whose B
    cannot be recovered (no energy or force rows) still enter the posterior, not the centres."""
    rows = [blk[0] for blk in design.blocks]
    t = training_transform(rows, evidence_sigma2(params) if noise == "evidence" else None)
    train = [basis_from_block(r, k, design.weights) for r, _, k in design.blocks]
    train = np.array([b for b in train if b is not None]).reshape(-1, design.spec.size)
    return t(np.asarray(pool_basis, dtype=np.float64)), t(train)
