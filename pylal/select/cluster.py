"""Uncertainty + clustering (Ghosh et al. 2024): keep the most uncertain half of the pool, cluster it
into b clusters (k-means in posterior feature space), take the member nearest each cluster centre.

Uncertainty is k(x, x | D) = |phi_GP(x)|^2. Cost: O(n d + n log n) for the ranking plus k-means on
n/2 points, O(I n b d / 2) for I Lloyd iterations (scikit-learn, k-means++ start).
"""
from __future__ import annotations

import warnings

import numpy as np
from pylal.select.geometry import sq_norms
from pylal.select.uncertainty import fill_random, top_scores


def unc_cluster(features: np.ndarray, b: int, rng: np.random.Generator, keep_fraction: float = 0.5,
                n_init: int = 2) -> np.ndarray:
    """One index per cluster from the uncertain top `keep_fraction` (at least b points kept)."""
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    b = min(b, n)
    if b == 0:
        return np.zeros(0, dtype=np.int64)
    keep = top_scores(sq_norms(x), max(b, int(np.ceil(keep_fraction * n))))
    if len(keep) == b:
        return keep
    from sklearn.cluster import KMeans  # imported here: keeps `pylal` CLI start-up light

    xs = x[keep]
    with warnings.catch_warnings():  # duplicate points: fewer distinct clusters than b
        warnings.simplefilter("ignore")
        km = KMeans(n_clusters=b, n_init=n_init, random_state=int(rng.integers(2**31 - 1))).fit(xs)
    chosen = []
    for c in range(b):
        members = np.flatnonzero(km.labels_ == c)
        if len(members) == 0:
            continue
        d2 = sq_norms(xs[members] - km.cluster_centers_[c])
        chosen.append(int(keep[members[np.argmin(d2)]]))
    chosen = list(dict.fromkeys(chosen))
    return fill_random(chosen, n, b, rng)
