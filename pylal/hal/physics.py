"""HAL quantities as pure functions over per-process arrays (van der Oord et al. 2022).

Global sums and maxima are passed in (`reduce_sum`, `reduce_max`) so that the LAMMPS engine can
supply MPI allreduce; the defaults are the identity (one process holds everything).
"""
from __future__ import annotations

from collections import deque

import jax.numpy as jnp
import numpy as np


def _identity(x):
    return x


def committee_spread(e_members, e_mean):
    """sqrt((1/K) sum_k (E^k - E_bar)^2): the committee's part of sigma~ (HAL eq. 5 without the
    noise 1/lambda, which more data do not reduce)."""
    return jnp.sqrt(jnp.mean((e_members - e_mean) ** 2))


def sigma_from_spread(spread, noise_precision):
    """sigma~ = sqrt(1/lambda + spread^2)                                  (HAL eq. 5)"""
    return jnp.sqrt(1.0 / noise_precision + spread**2)


def committee_sigma(e_members, e_mean, noise_precision):
    """sigma~ = sqrt(1/lambda + (1/K) sum_k (E^k - E_bar)^2)            (HAL eq. 5)"""
    return sigma_from_spread(committee_spread(e_members, e_mean), noise_precision)


def bias_coefficients(committee, mean, e_members, e_mean, sigma):
    """w with grad sigma~ = w . grad B:
    grad sigma~ = (1/(K sigma~)) sum_k (E^k - E_bar) grad(E^k - E_bar)   (HAL eqs. 9-10)
    and E^k - E_bar = (c^k - c_bar) . B by linearity."""
    k = committee.shape[0]
    return ((e_members - e_mean) / (k * sigma)) @ (committee - mean)


def hal_energy(energy, tau, sigma):
    """E_HAL = E - tau sigma~                                            (HAL eq. 1)"""
    return energy - tau * sigma


def hal_forces(forces_mean, grad_sigma, tau):
    """F_HAL = F_bar + tau grad sigma~ (minus the gradient of HAL eq. 1): the one place where the
    applied force is assembled from the unbiased force and the bias direction."""
    return forces_mean if grad_sigma is None else forces_mean + tau * grad_sigma


def mean_force_norm(forces_mean, reduce_sum=_identity):
    """Global mean |F_bar_i|: the default regulariser eps of f_i."""
    local = np.array([np.linalg.norm(forces_mean, axis=1).sum(), len(forces_mean)], dtype=float)
    total, count = reduce_sum(local)
    return total / max(count, 1.0)


def relative_force_uncertainty(member_forces, forces_mean, eps):
    """f_i = ((1/K) sum_k |F_i^k - F_bar_i|) / (|F_bar_i| + eps)          (HAL eq. 6)"""
    spread = np.linalg.norm(member_forces - forces_mean[None], axis=2).mean(axis=0)
    return spread / np.maximum(np.linalg.norm(forces_mean, axis=1) + eps, 1e-300)


def softmax_score(f, reduce_sum=_identity, reduce_max=_identity):
    """s = max_i exp(f_i) / sum_j exp(f_j)                             (HAL eq. 8)

    Computed as 1 / sum_j exp(f_j - f_max), stable for large f. For N atoms with similar f_i,
    s tends to 1/N: with s_tol = 0.5 (HAL's 32-atom cells) a large cell never triggers, so use the
    size-independent max f_i > f_tol (HAL eq. 7) there.
    """
    f_max = float(reduce_max(np.max(f, initial=-np.inf)))
    return 1.0 / float(reduce_sum(np.sum(np.exp(f - f_max)))), f_max


def softmax_partials(f) -> tuple[float, float]:
    """(m, s) = (max_i f_i, sum_i exp(f_i - m)) of this process's atoms; partials of two processes
    combine exactly by `combine_softmax_partials`, so eq. 8 needs one reduction, not two."""
    m = float(np.max(f, initial=-np.inf))
    return m, (float(np.sum(np.exp(f - m))) if np.isfinite(m) else 0.0)


def combine_softmax_partials(m1, s1, m2, s2) -> tuple[float, float]:
    if np.isnan(m1) or np.isnan(m2):  # a non-finite f_i stays visible on every process
        return np.nan, np.nan
    m = max(m1, m2)
    if not np.isfinite(m):
        return m, s1 + s2
    return m, s1 * np.exp(m1 - m) + s2 * np.exp(m2 - m)


def triggered(s: float, f_max: float, s_tol: float | None = 0.5, f_tol: float | None = None,
              sigma_per_atom: float | None = None, sigma_tol: float | None = None) -> bool:
    """Stopping criterion: softmax s > s_tol (eq. 8) and/or max f_i > f_tol (eq. 7), and/or
    (pylal's addition) sigma / N > sigma_tol (eV/atom): the committee's energy spread (eq. 5 without
    the noise term 1/lambda, which more data do not reduce) per atom.
    f_i is relative: where forces are large (a liquid) the committee's force spread can stay below
    f_tol while sigma~ is 100x its value in the training region; sigma_tol catches that."""
    return bool((s_tol is not None and s > s_tol) or (f_tol is not None and f_max > f_tol)
                or (sigma_tol is not None and sigma_per_atom is not None and sigma_per_atom > sigma_tol))


class AdaptiveTau:
    """tau = tau_rel * sum_m |F_bar(t - m)| / sum_m |F_bias(t - m)| over the last `window`
    steps (HAL eq. 12), F_bias = grad sigma~. tau is 0 until `window` samples are in (burn-in).
    The sums over atoms are global (callers reduce them over processes).

    Cap (pylal's addition): tau <= tau_rel |F_bar(t-1)| / |F_bias(t-1)|, i.e. the bias of the last
    step never exceeded tau_rel times the physical force. Eq. 12's window average lags by `window`
    steps; outside the data sigma~ of a linear committee grows fast, and the lagging tau let the
    bias run away (a campaign walker: tau ~ 2000 eV, sigma~ 0.005 -> 0.23 eV within 20 steps and
    E up by 45 eV before f_i flagged). The cap keeps eq. 12's intent, a bias that is a fixed
    fraction of the physical force, at every step."""

    def __init__(self, tau_rel: float = 0.1, window: int = 100):
        if tau_rel < 0 or window < 1:
            raise ValueError(f"AdaptiveTau: need tau_rel >= 0 and window >= 1, got {tau_rel}, {window}")
        self.tau_rel = tau_rel
        self.window = window
        self.history: deque = deque(maxlen=window)

    @property
    def tau(self) -> float:
        if len(self.history) < self.window or self.tau_rel == 0.0:
            return 0.0
        f_mean, f_bias = np.sum(self.history, axis=0)
        if f_bias <= 0:
            return 0.0
        last_mean, last_bias = self.history[-1]
        window_tau = self.tau_rel * f_mean / f_bias
        return min(window_tau, self.tau_rel * last_mean / last_bias) if last_bias > 0 else window_tau

    def update(self, sum_abs_force_mean: float, sum_abs_grad_sigma: float) -> float:
        self.history.append((float(sum_abs_force_mean), float(sum_abs_grad_sigma)))
        return self.tau

    def state(self) -> dict:
        return {"tau_rel": self.tau_rel, "window": self.window, "history": [list(h) for h in self.history]}

    @classmethod
    def from_state(cls, state: dict) -> "AdaptiveTau":
        t = cls(state["tau_rel"], state["window"])
        t.history.extend(tuple(h) for h in state["history"])
        return t
