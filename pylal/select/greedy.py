"""HAL's filtering score: max_i f_i of a labelled configuration under the current committee.

f_i = ((1/K) sum_k |F_i^k - F_bar_i|) / (|F_bar_i| + eps), eps = mean_i |F_bar_i|  (HAL eq. 6),
with F^k = F_prior + (-dB/dx) c^k from the cached force columns: no basis evaluation per round.
Cost per configuration O(N D K) (3N x D columns times D x (K + 1) coefficients).
"""
from __future__ import annotations

import numpy as np

from pylal.fit.design import Weights
from pylal.hal.physics import mean_force_norm, relative_force_uncertainty
from pylal.select.features import LabelledConfig


def max_relative_force_uncertainty(config: LabelledConfig, mean: np.ndarray, committee: np.ndarray,
                                   weights: Weights = Weights()) -> float:
    if config.f_prior is None:
        raise ValueError("greedy_fi needs force labels (force rows) for every pool configuration")
    cols = config.force_columns(weights)
    n = config.n_atoms
    coefs = np.vstack([mean[None], committee])  # (K + 1, D)
    forces = config.f_prior[None] + (coefs @ cols.T).reshape(len(coefs), n, 3)
    f = relative_force_uncertainty(forces[1:], forces[0], mean_force_norm(forces[0]))
    return float(np.max(f))


def fi_scores(configs, mean, committee, weights: Weights = Weights()) -> np.ndarray:
    return np.array([max_relative_force_uncertainty(c, mean, committee, weights) for c in configs])
