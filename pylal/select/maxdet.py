"""MAXDET: greedy maximum determinant of the posterior kernel over the batch (Zaverkin et al. 2022).

Greedily maximise det k(X_batch, X_batch | D), with no noise added on the batch block, by a
partially pivoted Cholesky decomposition of the pool kernel K = Phi Phi^T, never formed:
    r = diag K;  repeat b times: j = argmax r (stop if r_j <= tol * max diag);
    l = (Phi phi_j - L L_j^T) / sqrt(r_j);  r <- r - l * l.
r_i is the posterior variance of point i conditioned on the training set and on the points chosen
so far, so a point in the span of the chosen ones (a duplicate, or a linear combination) has
r_i = 0 and is never picked while anything new remains. Each step multiplies the determinant by
r_j, so the greedy choice is exact for one step. Cost O(b n (d + b)) time, O(n b) memory.
"""
from __future__ import annotations

import numpy as np

from pylal.select.geometry import sq_norms
from pylal.select.uncertainty import fill_random


def maxdet(features: np.ndarray, b: int, rng: np.random.Generator | None = None, tol: float = 1e-10,
           fill: bool = True) -> np.ndarray:
    """Indices of the greedy MAXDET batch in selection order. When every residual variance is
    <= tol * max diag (the pool's posterior span is exhausted) the batch is completed at random
    (fill=True) or returned short (fill=False)."""
    phi = np.asarray(features, dtype=np.float64)
    n = len(phi)
    b = min(b, n)
    r = sq_norms(phi)
    floor = tol * (r.max() if n else 0.0)
    lower = np.zeros((n, b))
    chosen: list[int] = []
    available = np.ones(n, dtype=bool)
    for t in range(b):
        masked = np.where(available, r, -np.inf)
        j = int(np.argmax(masked))
        if not masked[j] > floor:
            break
        col = phi @ phi[j] - lower[:, :t] @ lower[j, :t]
        lower[:, t] = col / np.sqrt(r[j])
        r = np.clip(r - lower[:, t] ** 2, 0.0, None)
        available[j] = False
        chosen.append(j)
    if fill and len(chosen) < b:
        return fill_random(chosen, n, b, rng if rng is not None else np.random.default_rng(0))
    return np.asarray(chosen, dtype=np.int64)
