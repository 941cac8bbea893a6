"""Pair lists. LAMMPS supplies its own (owned + ghost atoms, full list); ASE users get one from vesin."""
from __future__ import annotations

import dataclasses

import numpy as np
import vesin


@dataclasses.dataclass
class PairList:
    """Full list of (centre, neighbour) pairs with displacement vectors r_j - r_i (+ image shift).

    Centres are atoms 0..n_centers-1 (owned atoms in LAMMPS); neighbours index all n_atoms
    (owned + ghost in LAMMPS, periodic images folded back onto their atom in ASE).
    """

    vectors: np.ndarray  # (P, 3) float64
    centers: np.ndarray  # (P,) int
    neighbors: np.ndarray  # (P,) int
    species: np.ndarray  # (n_atoms,) species index of every atom
    n_centers: int

    @property
    def n_atoms(self) -> int:
        return len(self.species)

    @property
    def n_pairs(self) -> int:
        return len(self.centers)


def species_indices(symbols, species) -> np.ndarray:
    lookup = {s: k for k, s in enumerate(species)}
    unknown = sorted(set(symbols) - set(lookup))
    if unknown:
        raise ValueError(f"elements {unknown} are not in the model's species {list(species)}")
    return np.array([lookup[s] for s in symbols], dtype=np.int32)


def ase_pairs(atoms, r_cut: float, species) -> PairList:
    """Full neighbour list of an ase.Atoms with vesin (cell lists, O(N))."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if not pbc.any():
        cell = np.zeros((3, 3))
    calculator = vesin.NeighborList(cutoff=float(r_cut), full_list=True)
    i, j, d = calculator.compute(positions, cell, pbc if pbc.any() else False, quantities="ijD")
    return PairList(
        vectors=np.asarray(d, dtype=np.float64),
        centers=np.asarray(i, dtype=np.int32),
        neighbors=np.asarray(j, dtype=np.int32),
        species=species_indices(atoms.get_chemical_symbols(), species),
        n_centers=len(atoms),
    )
