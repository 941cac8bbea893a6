"""Filtering a labelled pool (HAL sec. 'filtering an existing database'; Zaverkin/Ghosh batch modes).

Loop: fit (Bayesian ridge, pylal.fit.bayes) on the selected configurations, record the force RMSE
on a held-out set, then add a batch of b configurations chosen from the rest of the pool by
`method`, until `budget` configurations are selected:
  greedy_fi  the b with the largest max_i f_i under a K-member committee of the current fit
             (HAL: b = 1, start from one configuration);
  others     pylal.select.batch on phi_GP of the pool, with the selected ones as training set.
Every configuration's design rows are computed once (the pool is labelled); a round costs one
fit, O(N_rows D^2), plus the selection (pylal.select.batch).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pylal.fit.bayes import bayesian_fit, sample_committee
from pylal.fit.design import Weights
from pylal.select.batch import METHODS, select_batch
from pylal.select.features import LabelledConfig, training_transform
from pylal.select.greedy import fi_scores


@dataclasses.dataclass
class HeldOut:
    """Force rows of the held-out set, stacked once."""

    rows: np.ndarray
    targets: np.ndarray
    w_forces: float

    @classmethod
    def from_configs(cls, configs, weights: Weights = Weights()):
        rows = np.concatenate([c.rows[c.kinds == "F"] for c in configs])
        targets = np.concatenate([c.targets[c.kinds == "F"] for c in configs])
        if len(rows) == 0:
            raise ValueError("held-out set has no force labels")
        return cls(rows, targets, weights.forces)

    def force_rmse(self, mean: np.ndarray) -> float:
        """RMSE over force components (eV/A)."""
        return float(np.sqrt(np.mean((self.rows @ mean - self.targets) ** 2) / self.w_forces))


@dataclasses.dataclass
class Fit:
    mean: np.ndarray
    cov: np.ndarray
    noise_precision: float
    prior_precision: float


def fit_configs(configs) -> Fit:
    psi = np.concatenate([c.rows for c in configs])
    y = np.concatenate([c.targets for c in configs])
    return Fit(*bayesian_fit(psi, y, "brr"))


@dataclasses.dataclass
class SelectionRun:
    method: str
    order: list  # pool indices in the order selected (initial ones first)
    curve: list  # [(number of labels, held-out force RMSE)] after each refit
    rounds: list  # pool indices added in each round


def run_selection(pool: list[LabelledConfig], method: str, budget: int, initial, held_out: HeldOut,
                  batch: int = 1, seed: int = 0, weights: Weights = Weights(), n_members: int = 32,
                  noise: str = "trace", log=None) -> SelectionRun:
    """Select up to `budget` pool configurations (including the `initial` indices)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if noise not in ("trace", "evidence"):
        raise ValueError(f"noise {noise!r}: expected 'trace' or 'evidence'")
    rng = np.random.default_rng(seed)
    budget = min(budget, len(pool))
    order = list(dict.fromkeys(int(i) for i in initial))
    if not order:
        raise ValueError("run_selection: need at least one initial configuration")
    basis = np.array([c.basis for c in pool])
    curve, rounds = [], []
    fit_round = 0
    while True:
        chosen = [pool[i] for i in order]
        fit = fit_configs(chosen)
        curve.append((len(order), held_out.force_rmse(fit.mean)))
        if log is not None:
            log(f"{method}: {len(order)} labels, held-out force RMSE {curve[-1][1]:.4f} eV/A")
        if len(order) >= budget:
            break
        rest = np.setdiff1d(np.arange(len(pool)), order)
        b = min(batch, budget - len(order))
        if method == "greedy_fi":
            committee = sample_committee(fit.mean, fit.cov, n_members, seed=seed * 7919 + fit_round)
            picks = select_batch("greedy_fi", None, None, b, rng,
                                 scores=fi_scores([pool[i] for i in rest], fit.mean, committee, weights))
        elif method == "random":
            picks = select_batch("random", np.zeros((len(rest), 1)), None, b, rng)
        else:
            sigma2 = fit.prior_precision / fit.noise_precision if noise == "evidence" else None
            t = training_transform([c.rows for c in chosen], sigma2)
            picks = select_batch(method, t(basis[rest]), t(basis[order]), b, rng)
        added = [int(rest[j]) for j in picks]
        rounds.append(added)
        order.extend(added)
        fit_round += 1
    return SelectionRun(method, order, curve, rounds)


def labels_to_reach(curve, target: float):
    """Smallest (linearly interpolated) number of labels at which a learning curve [(n, rmse)]
    first reaches rmse <= target; None if it never does."""
    n = np.array([c[0] for c in curve], dtype=float)
    r = np.array([c[1] for c in curve], dtype=float)
    hit = np.flatnonzero(r <= target)
    if len(hit) == 0:
        return None
    k = hit[0]
    if k == 0:
        return float(n[0])
    # interpolate between the last point above target and the first at/below it
    return float(n[k - 1] + (n[k] - n[k - 1]) * (r[k - 1] - target) / (r[k - 1] - r[k]))


def mean_curve(curves):
    """Average several curves with the same label counts: [(n, mean rmse, std rmse)]."""
    counts = [c[0] for c in curves[0]]
    vals = np.array([[p[1] for p in c] for c in curves])
    return [(n, float(m), float(s)) for n, m, s in zip(counts, vals.mean(0), vals.std(0))]
