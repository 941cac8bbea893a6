"""One entry point for batch selection: `select_batch(method, features_pool, features_train, b, rng)`.

Features are rows of phi_GP (pylal.select.posterior): the posterior-transformed summed basis
vectors of the pool and of the training configurations. Returns b distinct pool indices (fewer
only if the pool is smaller), in selection order.

| method      | picks                                              | cost                   |
|-------------|----------------------------------------------------|------------------------|
| random      | uniformly                                          | O(n)                   |
| maxdiag     | top-b posterior variance k(x, x / D)               | O(n d + n log n)       |
| maxdet      | greedy max det of the batch's posterior kernel     | O(b n (d + b))         |
| maxdist     | greedy max of min distance to training u batch     | O((m + b) n d)         |
| lcmd        | farthest point of the largest cluster              | O((m + b) n d)         |
| unc_cluster | top half by sigma, k-means into b, nearest members | O(n d + I n b d / 2)   |
| greedy_fi   | top-b of given scores (HAL: max_i f_i per config)  | O(n log n)             |
(n pool points, m training points, d features, I k-means iterations.)
"""
from __future__ import annotations

import numpy as np

from pylal.select.cluster import unc_cluster
from pylal.select.distance import lcmd, maxdist
from pylal.select.maxdet import maxdet
from pylal.select.uncertainty import maxdiag, random_batch, top_scores

FEATURE_METHODS = ("random", "maxdiag", "maxdet", "maxdist", "lcmd", "unc_cluster")
METHODS = ("greedy_fi",) + FEATURE_METHODS


def select_batch(method: str, features_pool, features_train, b: int, rng: np.random.Generator | int | None = None,
                 scores=None) -> np.ndarray:
    """Indices into the pool of a batch of b chosen by `method` (see the module table).

    features_pool (n, d), features_train (m, d) or None; greedy_fi needs `scores` (n,) instead
    of features (features_pool may then be None)."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if method == "greedy_fi":
        if scores is None:
            raise ValueError("select_batch: greedy_fi needs scores (max f_i of each pool configuration)")
        return top_scores(scores, b)
    x = np.asarray(features_pool, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"select_batch: features_pool must be (n, d), got shape {x.shape}")
    train = None if features_train is None else np.asarray(features_train, dtype=np.float64).reshape(-1, x.shape[1])
    if method == "random":
        return random_batch(len(x), b, rng)
    if method == "maxdiag":
        return maxdiag(x, b)
    if method == "maxdet":
        return maxdet(x, b, rng)
    if method == "maxdist":
        return maxdist(x, train, b, rng)
    if method == "lcmd":
        return lcmd(x, train, b, rng)
    if method == "unc_cluster":
        return unc_cluster(x, b, rng)
    raise ValueError(f"select_batch: unknown method {method!r}; expected one of {METHODS}")
