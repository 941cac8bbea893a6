"""Short-range repulsive prior: the ZBL universal screened-Coulomb pair potential.

Ziegler, Biersack, Littmark (1985). phi(r) = Z1 Z2 e^2 / (4 pi eps0 r) sum_k c_k exp(-d_k r / a),
a = 0.46850 / (Z1^0.23 + Z2^0.23) Angstrom. It is switched off smoothly (C2 quintic) between r_on
and r_off, so that the learned part describes bonding and only unexplored close contacts feel the
prior (HAL uses an auxiliary repulsive pair basis for the same purpose). Same constants as LAMMPS
`pair_style zbl`.
"""
import jax.numpy as jnp
import numpy as np
from ase.data import atomic_numbers

COULOMB = 14.399645  # e^2 / (4 pi eps0) in eV Angstrom (LAMMPS metal units)
_C = (0.18175, 0.50986, 0.28022, 0.02817)
_D = (3.19980, 0.94229, 0.40290, 0.20162)


def species_charges(species) -> np.ndarray:
    return np.array([atomic_numbers[s] for s in species], dtype=np.float64)


def smooth_switch(r, r_on, r_off):
    """1 below r_on, 0 above r_off, C2 quintic in between."""
    t = jnp.clip((r - r_on) / (r_off - r_on), 0.0, 1.0)
    return 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t**2)


def zbl_pair_energy(r, z1, z2, r_on, r_off):
    """Switched ZBL energy of each pair (eV). r must be > 0 (padded pairs sit beyond r_off)."""
    a = 0.46850 / (z1**0.23 + z2**0.23)
    screening = sum(c * jnp.exp(-d * r / a) for c, d in zip(_C, _D))
    return COULOMB * z1 * z2 / r * screening * smooth_switch(r, r_on, r_off)
