"""Selection without diversity: random, MAXDIAG (top-b posterior variance), top-b of any score.

With posterior features phi_GP (pylal.select.posterior), |phi_GP(S)|^2 = k(S, S | D) is the
posterior variance of the configuration's energy (up to the constant noise scale), so MAXDIAG
picks the b most uncertain configurations. It ignores redundancy inside the batch: Zaverkin et
al. (2022) found it can do worse than random for larger b on MD data.
"""
from __future__ import annotations

import numpy as np

from pylal.select.geometry import sq_norms


def random_batch(n: int, b: int, rng: np.random.Generator) -> np.ndarray:
    """b distinct indices of range(n), uniformly. O(n)."""
    return rng.choice(n, size=min(b, n), replace=False)


def fill_random(chosen: list, n: int, b: int, rng: np.random.Generator) -> np.ndarray:
    """Complete `chosen` to min(b, n) distinct indices with random unchosen ones (used when a
    method has nothing left to gain, e.g. MAXDET once the pool's span is exhausted)."""
    chosen = list(chosen)
    need = min(b, n) - len(chosen)
    if need > 0:
        rest = np.setdiff1d(np.arange(n), np.asarray(chosen, dtype=np.int64))
        chosen.extend(rng.choice(rest, size=need, replace=False).tolist())
    return np.asarray(chosen, dtype=np.int64)


def top_scores(scores: np.ndarray, b: int) -> np.ndarray:
    """Indices of the b largest scores, largest first (stable for ties). O(n log n)."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.argsort(-scores, kind="stable")[: min(b, len(scores))]


def maxdiag(features: np.ndarray, b: int) -> np.ndarray:
    """MAXDIAG: the b pool points with the largest k(x, x | D) = |phi_GP(x)|^2. O(n d + n log n)."""
    return top_scores(sq_norms(features), b)
