"""Bayesian linear regression of the committee (HAL sec. 2.2) with scikit-learn.

Prior c ~ N(0, alpha^-1 I), noise precision lambda; the posterior is N(c_bar, Sigma) with
    c_bar = lambda Sigma Psi^T y,   Sigma^-1 = alpha I + lambda Psi^T Psi        (HAL eqs. 4, 22)
alpha and lambda maximise the evidence (eqs. 25-27): scikit-learn's BayesianRidge (BRR).
ARD gives each coefficient its own precision and prunes irrelevant ones (eq. 28): ARDRegression.
(scikit-learn names them the other way round: its alpha_ is the noise precision, lambda_ the
prior precision.) The columns of Psi are scaled to unit RMS before the fit, so the isotropic
prior acts on comparable coefficients; mean and covariance are scaled back afterwards.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import ARDRegression, BayesianRidge

from pylal.fit.design import Weights, build_design
from pylal.model.basis import BasisSpec
from pylal.model.params import Parameters


def bayesian_fit(psi: np.ndarray, y: np.ndarray, method: str = "brr"):
    """Posterior mean (D,), covariance (D, D), noise precision, prior precision(s)."""
    scale = np.sqrt(np.mean(psi**2, axis=0))
    scale[scale == 0] = 1.0
    x = psi / scale
    if method == "brr":
        reg = BayesianRidge(fit_intercept=False, max_iter=500, tol=1e-8)
        reg.fit(x, y)
        cov = reg.sigma_
        prior_precision = float(reg.lambda_)
    elif method == "ard":
        reg = ARDRegression(fit_intercept=False, max_iter=300, tol=1e-6, threshold_lambda=1e6)
        reg.fit(x, y)
        keep = reg.lambda_ < reg.threshold_lambda  # coefficients ARD kept (eq. 28)
        cov = np.zeros((x.shape[1], x.shape[1]))
        cov[np.ix_(keep, keep)] = reg.sigma_
        prior_precision = reg.lambda_.tolist()
    else:
        raise ValueError(f"fit method {method!r}: expected 'brr' or 'ard'")
    mean = reg.coef_ / scale
    cov = cov / np.outer(scale, scale)
    return mean, cov, float(reg.alpha_), prior_precision


def sample_committee(mean: np.ndarray, cov: np.ndarray, n_members: int = 32, seed: int = 0):
    """K samples c^k ~ N(c_bar, Sigma) (HAL eq. 5), via the eigendecomposition (Sigma is PSD)."""
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))
    z = np.random.default_rng(seed).standard_normal((n_members, len(mean)))
    return mean + z @ root.T


def fit_parameters(spec: BasisSpec, configurations, weights: Weights = Weights(), method: str = "brr",
                   n_members: int = 32, seed: int = 0, version: int = 0, prior=None) -> Parameters:
    """Fit labelled configurations and draw the committee: the whole refit in one call. prior: a
    pylal.prior.LammpsPrior; the fit targets the labels minus the prior (Delta-learning) and the
    prior is written into the parameters."""
    psi, y, kinds = build_design(spec, configurations, weights, prior)
    return fit_design(spec, psi, y, kinds, weights, method, n_members, seed, version,
                      prior=getattr(prior, "prior", prior))


def fit_design(spec, psi, y, kinds, weights=Weights(), method="brr", n_members=32, seed=0, version=0, prior=None):
    """prior: the LammpsPrior the targets y were taken relative to (stored with the parameters)."""
    mean, cov, noise_precision, prior_precision = bayesian_fit(psi, y, method)
    committee = sample_committee(mean, cov, n_members, seed)
    residual = psi @ mean - y
    rmse = {k: float(np.sqrt(np.mean(residual[kinds == k] ** 2))) for k in ("E", "F", "V") if (kinds == k).any()}
    hyper = {"method": method, "weights": [weights.energy, weights.forces, weights.virial],
             "prior_precision": prior_precision, "seed": seed, "n_rows": int(len(y)),
             "train_rmse_weighted": rmse}
    return Parameters(spec, mean, committee, noise_precision, version=version, hyper=hyper, lammps_prior=prior)
