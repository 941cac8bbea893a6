"""Near-duplicate filter of flagged configurations, used by the refit server when more is flagged
than the labelling budget allows."""
from __future__ import annotations

import numpy as np


def descriptor(atoms, r_cut: float) -> tuple:
    """Energy-independent summary of a configuration: per species, the sorted smooth coordination
    numbers s_i = sum_j (1 - r_ij/r_cut)^2 over neighbours within r_cut. Invariant to translation,
    rotation and permutation; coarse on purpose (a near-duplicate test, not an identity)."""
    from pylal.model.neighbors import ase_pairs

    symbols = sorted(set(atoms.get_chemical_symbols()))
    pairs = ase_pairs(atoms, r_cut, tuple(symbols))
    r = np.linalg.norm(pairs.vectors, axis=1)
    s = np.bincount(pairs.centers, weights=(1 - r / r_cut) ** 2, minlength=len(atoms))
    species = np.asarray(atoms.get_chemical_symbols())
    return tuple((sym, np.sort(s[species == sym])) for sym in symbols)


def near_duplicate(a: tuple, b: tuple, tol: float) -> bool:
    """Same composition and every sorted per-atom value within tol."""
    if [s for s, _ in a] != [s for s, _ in b]:
        return False
    return all(len(x) == len(y) and (len(x) == 0 or np.max(np.abs(x - y)) <= tol) for (_, x), (_, y) in zip(a, b))


def select_batch(candidates: list, references: list, budget: int, tol: float):
    """candidates: [(row id, descriptor)] ordered by priority (largest max f_i first); references:
    descriptors already labelled or being labelled. Returns (chosen ids, dropped [(id, id_or_None)]):
    near-duplicates of a reference or of a chosen candidate are dropped; at most `budget` chosen;
    the rest stay queued for the next round."""
    chosen, dropped, kept = [], [], []
    for row_id, d in candidates:
        if len(chosen) >= budget:
            break
        if any(near_duplicate(d, r, tol) for r in references):
            dropped.append((row_id, None))
            continue
        twin = next((cid for cid, cd in kept if near_duplicate(d, cd, tol)), None)
        if twin is not None:
            dropped.append((row_id, twin))
            continue
        chosen.append(row_id)
        kept.append((row_id, d))
    return chosen, dropped
