"""Sanity checks that turn an unstable potential into a recorded failure instead of a crash."""
from __future__ import annotations

import numpy as np


class UnstableError(RuntimeError):
    """The calculator gave unphysical results (NaN, atoms collapsing, a relaxation that diverges)."""


def check_finite(name: str, value) -> None:
    if not np.all(np.isfinite(np.asarray(value, dtype=float))):
        raise UnstableError(f"non-finite {name}")


def min_distance(atoms) -> tuple[float, int, int]:
    """Shortest interatomic distance (minimum image over periodic directions) and its atom pair."""
    d = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
    np.fill_diagonal(d, np.inf)
    i, j = np.unravel_index(np.argmin(d), d.shape)
    return float(d[i, j]), int(i), int(j)


def check_configuration(atoms, shortest: float, where: str = "") -> None:
    """Raise UnstableError if positions are not finite or two atoms are closer than `shortest` (A)."""
    check_finite(f"positions{where}", atoms.positions)
    r, i, j = min_distance(atoms)
    if r < shortest:
        raise UnstableError(f"atoms {i} and {j} at {r:.2f} A < {shortest} A{where}")
