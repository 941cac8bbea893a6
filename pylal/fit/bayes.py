"""Bayesian linear regression of the committee (HAL sec. 2.2), solved stably from a QR factor.

Prior c ~ N(c0, (alpha Gamma)^-1), noise precision lambda; the posterior is Gaussian with
    Sigma^-1 = alpha Gamma + lambda Psi^T Psi,   c_bar = c0 + lambda Sigma Psi^T (y - Psi c0)   (HAL eqs. 4, 22)
alpha and lambda maximise the evidence (eqs. 25-27, MacKay's fixed point). Gamma is a smoothness
prior (`pylal.model.basis.basis_degrees`): precision (1 + degree)^p, so rough basis functions
(high radial order, high l) are damped, as ACE fits do; p is chosen by the evidence among
`smoothness` candidates. c0 holds per-species reference energies (the constant features),
from a least-squares fit of the energies per atom to the composition.

Numerics: never the normal equations. Psi enters only through the R factor of the QR
decomposition of [Psi | y] (accumulated row block by row block, `Factor`), whose columns are
scaled to unit RMS and divided by sqrt(Gamma); one SVD of that D x D matrix gives the posterior for
every alpha, lambda (O(D) per evidence iteration). ARD (eq. 28, one alpha_j per coefficient) runs
on the same factor with a time bound (`ard_fit`).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
from scipy.linalg import lapack


# ---- the R factor of [Psi | y] ----------------------------------------------------------------
class Factor:
    """Upper-triangular R ((D+1) x (D+1)) of the QR decomposition of [Psi | y], with the row count.
    R^T R = [Psi | y]^T [Psi | y]; R[:D, D] = Q^T y; R[D, D]^2 = least-squares residual."""

    def __init__(self, d: int):
        self.r = np.zeros((d + 1, d + 1))
        self.n_rows = 0

    def add(self, rows: np.ndarray, y: np.ndarray):
        self.r = _stacked_triangular(self.r, np.column_stack([rows, y]))
        self.n_rows += len(y)

    def scaled(self, s: float) -> "Factor":
        """The factor of the same rows multiplied by s (a weight sqrt(w) on every row and target)."""
        out = Factor(self.r.shape[0] - 1)
        out.r, out.n_rows = s * self.r, self.n_rows
        return out

    @classmethod
    def combine(cls, factors) -> "Factor":
        out = cls(factors[0].r.shape[0] - 1)
        out.r = factors[0].r
        for f in factors[1:]:
            out.r = _stacked_triangular(out.r, f.r, triangular=True)
        out.n_rows = sum(f.n_rows for f in factors)
        return out

    @classmethod
    def of(cls, psi: np.ndarray, y: np.ndarray) -> "Factor":
        out = cls(psi.shape[1])
        out.add(psi, y)
        return out


def _stacked_triangular(r: np.ndarray, b: np.ndarray, triangular: bool = False) -> np.ndarray:
    """R' with R'^T R' = R^T R + B^T B, for upper-triangular R (m x m) and B (k x m, or upper-triangular
    m x m when `triangular`): LAPACK's triangular-pentagonal QR (dtpqrt) uses the zeros below R's (and B's)
    diagonal, 3-4x fewer operations than a QR of the stacked matrix."""
    m = r.shape[0]
    out, _, _, info = lapack.dtpqrt(m if triangular else 0, max(1, min(32, m)), r, b)
    if info != 0:
        raise np.linalg.LinAlgError(f"dtpqrt failed (info {info})")
    return np.triu(out)


# ---- evidence maximisation --------------------------------------------------------------------
@dataclasses.dataclass
class Posterior:
    mean: np.ndarray  # c_bar (D,)
    root: np.ndarray  # (D, D) with Sigma = root @ root.T
    noise_precision: float  # lambda
    prior_precision: float | list  # alpha (BRR, scaled units) or alpha_j (ARD)
    log_evidence: float
    smoothness: float  # exponent p of the smoothness prior
    n_effective: float  # number of well-determined parameters (gamma of MacKay)
    iterations: int

    @property
    def cov(self) -> np.ndarray:
        return self.root @ self.root.T


def column_scale(factor: Factor) -> np.ndarray:
    """RMS of each design column (from R: ||Psi_j||^2 = ||R_j||^2), at least the median column's.

    The prior N(0, 1/alpha) acts on unit-RMS columns, so a column of RMS s gets prior variance 1/(alpha s^2)
    in its own units. A column the data rarely touch (the environments of a dilute species: 3 Be among 54 W)
    has a tiny RMS over the training rows, hence an almost unbounded prior exactly where the data say least,
    and a configuration that does touch it is predicted wildly (W-Be SNAP, 37 labels: cross-validation force
    RMSE 32 eV/A, against 2.2 for zero force). Floored at the median column RMS, rare columns keep the prior
    of a typical feature (0.43 eV/A there; Ni-Al-H, Al-Si-Mg-Cu-Fe, CdTe unchanged within 0.5%)."""
    d = factor.r.shape[0] - 1
    return floored_rms(np.sum(factor.r[:, :d] ** 2, axis=0), factor.n_rows)


def floored_rms(sq_norms: np.ndarray, n_rows: int) -> np.ndarray:
    """Column RMS from the columns' squared norms over n_rows rows, floored at the median nonzero one
    (`column_scale`); all ones when every column is zero."""
    s = np.sqrt(np.clip(sq_norms, 0.0, None) / max(n_rows, 1))
    seen = s[s > 0]
    return np.maximum(s, np.median(seen)) if len(seen) else np.ones(len(s))


def evidence_fit(factor: Factor, degrees: np.ndarray | None = None, smoothness=(2.0,),
                 prior_mean: np.ndarray | None = None, max_iter: int = 1000, tol: float = 1e-10) -> Posterior:
    """Bayesian ridge with the smoothness prior alpha (1 + degree)^p in unit-RMS columns, the
    exponent p the candidate of largest evidence. degrees None: isotropic prior (p irrelevant)."""
    d = factor.r.shape[0] - 1
    r, z = factor.r[:d, :d], factor.r[:d, d].copy()
    rho2 = factor.r[d, d] ** 2
    c0 = np.zeros(d) if prior_mean is None else np.asarray(prior_mean, dtype=np.float64)
    z -= r @ c0  # targets relative to the prior mean: y - Psi c0
    scale = column_scale(factor)
    candidates = (0.0,) if degrees is None else tuple(smoothness)
    best = None
    for p in candidates:
        t = scale * (1.0 if degrees is None else (1.0 + np.asarray(degrees)) ** (p / 2))
        post = _mackay(r / t, z, rho2, factor.n_rows, max_iter, tol)
        if best is None or post[-1] > best[1][-1]:
            best = (p, post, t)
    p, (u_mean, v, s2, alpha, lam, gamma, it, logev), t = best
    mean = c0 + (v @ u_mean) / t
    root = (v / t[:, None]) / np.sqrt(alpha + lam * s2)[None, :]
    return Posterior(mean, root, float(lam), float(alpha), float(logev), float(p), float(gamma), it)


def _mackay(a, z, rho2, n, max_iter, tol):
    """Evidence maximisation for y ~ A c, c ~ N(0, 1/alpha), noise 1/lam, from A's SVD only.
    Returns (mean in V coordinates, V, s^2, alpha, lam, gamma, iterations, log evidence)."""
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    s2 = s**2
    zt = u.T @ z
    yy = float(z @ z + rho2)
    d = len(s)
    alpha, lam = 1.0, max(n, 1) / max(yy, 1e-300)
    tiny = 1e-300
    it = 0
    for it in range(1, max_iter + 1):
        denom = alpha + lam * s2
        mu = lam * s * zt / denom
        gamma = float(np.sum(lam * s2 / denom))
        res2 = float(np.sum((zt - s * mu) ** 2) + rho2)
        new_alpha = gamma / max(float(mu @ mu), tiny)
        new_lam = max(n - gamma, 1e-6) / max(res2, tiny)
        new_lam = min(new_lam, 1e14 * max(n, 1) / max(yy, tiny))  # exact data: bound the noise precision
        done = abs(np.log(new_alpha / alpha)) < tol and abs(np.log(new_lam / lam)) < tol
        alpha, lam = max(new_alpha, tiny), new_lam
        if done:
            break
    denom = alpha + lam * s2
    mu = lam * s * zt / denom
    res2 = float(np.sum((zt - s * mu) ** 2) + rho2)
    logev = 0.5 * (d * np.log(alpha) + n * np.log(lam) - lam * res2 - alpha * float(mu @ mu)
                   - np.sum(np.log(denom)) - n * np.log(2 * np.pi))
    return mu, vt.T, s2, alpha, lam, float(np.sum(lam * s2 / denom)), it, float(logev)


# ---- ARD (HAL eq. 28) ---------------------------------------------------------------------------
class FitTimeout(RuntimeError):
    """A fit did not finish within its time bound."""


def ard_fit(factor: Factor, prior_mean=None, threshold: float = 1e6, max_iter: int = 300, tol: float = 1e-6,
            seconds: float = 600.0, progress=None) -> Posterior:
    """ARD: one prior precision alpha_j per (unit-RMS) coefficient, MacKay updates
    alpha_j = gamma_j / m_j^2; coefficients with alpha_j > threshold are pruned. Each iteration
    solves the regularised problem by QR of [sqrt(lam) R; diag(sqrt(alpha))] (no normal equations).
    Raises FitTimeout after `seconds`; progress(iteration, n_kept, seconds) is called every 10 s."""
    d = factor.r.shape[0] - 1
    scale = column_scale(factor)
    c0 = np.zeros(d) if prior_mean is None else np.asarray(prior_mean, dtype=np.float64)
    r = factor.r[:d, :d] / scale
    z = factor.r[:d, d] - factor.r[:d, :d] @ c0
    rho2 = factor.r[d, d] ** 2
    start = evidence_fit(factor, prior_mean=prior_mean)
    alpha = np.full(d, start.prior_precision)
    lam = start.noise_precision
    keep = np.ones(d, bool)
    t0 = last = time.perf_counter()
    m = np.zeros(d)
    root = np.zeros((d, d))
    for it in range(1, max_iter + 1):
        k = np.flatnonzero(keep)
        a = np.vstack([np.sqrt(lam) * r[:, k], np.diag(np.sqrt(alpha[k]))])
        q, rr = np.linalg.qr(a)
        rhs = np.concatenate([np.sqrt(lam) * z, np.zeros(len(k))])
        m_k = np.linalg.solve(rr, q.T @ rhs)
        inv = np.linalg.solve(rr, np.eye(len(k)))  # Sigma_k = inv inv^T
        diag = np.sum(inv**2, axis=1)
        gamma = 1.0 - alpha[k] * diag
        res2 = float(np.sum((z - r[:, k] @ m_k) ** 2) + rho2)
        new_alpha = gamma / np.maximum(m_k**2, 1e-300)
        new_lam = max(factor.n_rows - gamma.sum(), 1e-6) / max(res2, 1e-300)
        change = np.max(np.abs(np.log(np.maximum(new_alpha, 1e-300) / alpha[k])))
        alpha[k], lam = new_alpha, new_lam
        m = np.zeros(d)
        m[k] = m_k
        root = np.zeros((d, d))
        root[np.ix_(k, k)] = inv
        keep = keep & (alpha < threshold)
        now = time.perf_counter()
        if progress is not None and now - last > 10.0:
            progress(it, int(keep.sum()), now - t0)
            last = now
        if now - t0 > seconds:
            raise FitTimeout(f"ARD did not converge within {seconds:g} s ({it} iterations, {int(keep.sum())} of {d} "
                             f"coefficients kept)")
        if change < tol:
            break
    mean = c0 + m / scale
    return Posterior(mean, root / scale[:, None], float(lam), alpha.tolist(), float("nan"), 0.0,
                     float(keep.sum()), it)


# ---- compatibility: a plain (psi, y) fit, as pylal.select uses it --------------------------------
def bayesian_fit(psi: np.ndarray, y: np.ndarray, method: str = "brr"):
    """Posterior mean (D,), covariance (D, D), noise precision, prior precision(s) of an isotropic
    BRR (unit-RMS columns) or ARD fit of the rows psi to y."""
    factor = Factor.of(np.asarray(psi, dtype=np.float64), np.asarray(y, dtype=np.float64))
    if method == "brr":
        post = evidence_fit(factor)
    elif method == "ard":
        post = ard_fit(factor)
    else:
        raise ValueError(f"fit method {method!r}: expected 'brr' or 'ard'")
    return post.mean, post.cov, post.noise_precision, post.prior_precision


def sample_committee(mean: np.ndarray, cov: np.ndarray, n_members: int = 32, seed: int = 0):
    """K samples c^k ~ N(c_bar, Sigma) (HAL eq. 5), via the eigendecomposition (Sigma is PSD)."""
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    return sample_from_root(mean, vecs * np.sqrt(np.clip(vals, 0.0, None)), n_members, seed)


def sample_from_root(mean: np.ndarray, root: np.ndarray, n_members: int = 32, seed: int = 0):
    """K samples c^k = c_bar + root xi_k, xi_k ~ N(0, I): covariance root root^T."""
    z = np.random.default_rng(seed).standard_normal((n_members, root.shape[1]))
    return mean + z @ root.T
