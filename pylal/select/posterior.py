"""Posterior feature transform (Zaverkin et al. 2022, eqs. 22-23) on plain feature matrices.

For a linear model E = c . B with training design Psi (rows: energies, forces, virials of the
labelled configurations) the GP posterior kernel between two configurations with summed basis
vectors B, B' is
    k(B, B' | D) = sigma^2 B^T (Psi^T Psi + sigma^2 I)^-1 B'                            (eq. 22)
and the same kernel is the plain dot product of the transformed features
    phi_GP(B) = sigma (Psi^T Psi + sigma^2 I)^(-1/2) B                                  (eq. 23)
so that Euclidean distances between phi_GP are posterior distances. Default noise:
sigma^2 = tr(Psi^T Psi) / (N_rows d) (Zaverkin's heuristic). With sigma^2 = alpha / lambda
(prior / noise precision of the Bayesian ridge fit, Sigma^-1 = alpha I + lambda Psi^T Psi) the kernel
is alpha B^T Sigma B', i.e. the fit's posterior energy covariance in units of the prior variance
1/alpha (no selection method depends on a constant factor).

Columns can be scaled first (B -> B / s, Psi -> Psi / s), as pylal.fit.bayes does (s = RMS of
each design column) so that the isotropic prior acts on comparable coefficients; without it the
constant feature (= number of atoms) and the 3-body features differ by orders of magnitude.

Cost: forming Psi^T Psi is O(N_rows d^2) (or given), the eigendecomposition O(d^3); transforming
n features O(n d^2). For d ~ 200 that is milliseconds.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class PosteriorTransform:
    """phi_GP = B @ matrix (matrix = diag(1/s) sigma (G_s + sigma^2 I)^(-1/2), symmetric part)."""

    matrix: np.ndarray  # (d, d)
    sigma2: float  # sigma^2 in scaled coordinates
    scale: np.ndarray  # (d,) column scaling s (ones if none)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, dtype=np.float64) @ self.matrix

    def kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Posterior kernel k(a, b | D) of eq. 22 through the transformed features."""
        return self(a) @ self(b).T


def column_scale(gram: np.ndarray, n_rows: int) -> np.ndarray:
    """RMS of each design column from the Gram diagonal, at least the median column's, as in the fit
    (pylal.fit.bayes.column_scale)."""
    from pylal.fit.bayes import floored_rms

    return floored_rms(np.diag(gram), n_rows)


def posterior_transform(gram: np.ndarray | None, n_rows: int, sigma2: float | None = None,
                        scale: np.ndarray | None = None, d: int | None = None) -> PosteriorTransform:
    """Transform of eq. 23 from the training Gram matrix G = Psi^T Psi (d, d) of n_rows rows.

    scale: column scaling s (None: no scaling); sigma2: noise in scaled coordinates (None: the
    trace heuristic tr(G_s) / (n_rows d)). gram None or n_rows == 0 (no training data): the prior
    kernel, phi = B / s. Cost O(d^3)."""
    if gram is None or n_rows == 0:
        if d is None:
            raise ValueError("posterior_transform: give d when there is no training Gram matrix")
        s = np.ones(d) if scale is None else np.asarray(scale, dtype=np.float64)
        return PosteriorTransform(np.diag(1.0 / s), 1.0 if sigma2 is None else float(sigma2), s)
    gram = np.asarray(gram, dtype=np.float64)
    d = gram.shape[0]
    s = np.ones(d) if scale is None else np.asarray(scale, dtype=np.float64)
    g = gram / np.outer(s, s)
    if sigma2 is None:
        sigma2 = float(np.trace(g) / (n_rows * d))
    if not sigma2 > 0:
        raise ValueError(f"posterior_transform: sigma^2 = {sigma2} must be positive")
    w, v = np.linalg.eigh((g + g.T) / 2)
    w = np.clip(w, 0.0, None)
    root = (v * np.sqrt(sigma2 / (w + sigma2))) @ v.T  # sigma (G + sigma^2 I)^(-1/2)
    return PosteriorTransform(root / s[:, None], float(sigma2), s)


def posterior_kernel(features_a, features_b, psi_train, sigma2: float | None = None):
    """Direct eq. 22 (for checks; O(N_rows d^2 + d^3)): sigma^2 a^T (Psi^T Psi + sigma^2 I)^-1 b."""
    psi_train = np.asarray(psi_train, dtype=np.float64)
    g = psi_train.T @ psi_train
    d = g.shape[0]
    if sigma2 is None:
        sigma2 = float(np.trace(g) / (len(psi_train) * d))
    return sigma2 * np.asarray(features_a) @ np.linalg.solve(g + sigma2 * np.eye(d), np.asarray(features_b).T)
