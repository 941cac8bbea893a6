"""Squared norms and squared distances between feature rows, chunked to bound memory."""
from __future__ import annotations

import numpy as np

CHUNK = 2048  # centres per block in min_sq_dist: n x CHUNK doubles at a time


def sq_norms(x: np.ndarray) -> np.ndarray:
    """|x_i|^2 = k(x_i, x_i) for every row. O(n d)."""
    return np.einsum("ij,ij->i", x, x)


def sq_dist_to(x: np.ndarray, x_sq: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|x_i - y|^2 for one point y, clipped at 0 against rounding. O(n d)."""
    return np.clip(x_sq + y @ y - 2.0 * (x @ y), 0.0, None)


def min_sq_dist(x: np.ndarray, x_sq: np.ndarray, centres: np.ndarray):
    """For each row of x: min over centres of the squared distance, and that centre's index.
    O(n m d) time, O(n CHUNK) memory."""
    n = len(x)
    best = np.full(n, np.inf)
    arg = np.full(n, -1, dtype=np.int64)
    c_sq = sq_norms(centres)
    for start in range(0, len(centres), CHUNK):
        c = centres[start:start + CHUNK]
        d2 = np.clip(x_sq[:, None] + c_sq[None, start:start + CHUNK] - 2.0 * (x @ c.T), 0.0, None)
        j = np.argmin(d2, axis=1)
        v = d2[np.arange(n), j]
        better = v < best
        best[better], arg[better] = v[better], j[better] + start
    return best, arg
