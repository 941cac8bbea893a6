"""Distance-based batch selection in posterior feature space (Zaverkin et al. 2022).

Distances are kernel distances Delta(x, y) = |phi_GP(x) - phi_GP(y)|. Training points (and, as the
batch grows, the chosen points) act as centres. Without training data the origin (phi = 0, the
prior mean function) is the only initial centre, so the first pick is the MAXDIAG point.

MAXDIST: repeatedly pick the pool point farthest from its nearest centre, then make it a centre.
  Cost O((m + b) n d) time for m training points (one O(n m d) pass, then O(n d) per pick).
LCMD (largest-cluster maximum distance): every pool point belongs to its nearest centre; a
  cluster's size is the sum of squared distances of its pool points to the centre; from the
  largest cluster pick the point farthest from the centre, make it a centre (which splits that
  cluster and may take points from neighbouring ones), repeat. Same cost as MAXDIST.
"""
from __future__ import annotations

import numpy as np

from pylal.select.geometry import min_sq_dist, sq_dist_to, sq_norms
from pylal.select.uncertainty import fill_random


def _initial_centres(x, x_sq, train):
    """Squared distance to the nearest initial centre, its id, and the number of centres."""
    if train is not None and len(train):
        d2, owner = min_sq_dist(x, x_sq, np.asarray(train, dtype=np.float64))
        return d2, owner, len(train)
    return x_sq.copy(), np.zeros(len(x), dtype=np.int64), 1  # the origin is centre 0


def maxdist(features: np.ndarray, train: np.ndarray | None, b: int,
            rng: np.random.Generator | None = None) -> np.ndarray:
    """Greedy max-min distance batch (indices into features, in selection order)."""
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    x_sq = sq_norms(x)
    d2, _, _ = _initial_centres(x, x_sq, train)
    chosen: list[int] = []
    for _ in range(min(b, n)):
        masked = d2.copy()
        masked[chosen] = -np.inf
        j = int(np.argmax(masked))
        if not masked[j] > 0:  # everything left coincides with a centre
            break
        chosen.append(j)
        d2 = np.minimum(d2, sq_dist_to(x, x_sq, x[j]))
    return fill_random(chosen, n, b, rng if rng is not None else np.random.default_rng(0))


def lcmd(features: np.ndarray, train: np.ndarray | None, b: int,
         rng: np.random.Generator | None = None) -> np.ndarray:
    """Largest-cluster maximum-distance batch (indices into features, in selection order)."""
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    x_sq = sq_norms(x)
    d2, owner, next_id = _initial_centres(x, x_sq, train)
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    for _ in range(min(b, n)):
        live = ~taken
        sizes = np.bincount(owner[live], weights=d2[live], minlength=next_id)
        c = int(np.argmax(sizes))
        if not sizes[c] > 0:
            break
        members = np.flatnonzero(live & (owner == c))
        j = int(members[np.argmax(d2[members])])
        chosen.append(j)
        taken[j] = True
        new = sq_dist_to(x, x_sq, x[j])
        closer = new < d2
        d2[closer], owner[closer] = new[closer], next_id
        d2[j], owner[j] = 0.0, next_id
        next_id += 1
    return fill_random(chosen, n, b, rng if rng is not None else np.random.default_rng(0))
