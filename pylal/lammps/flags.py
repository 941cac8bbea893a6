"""Writing flagged configurations: gathered to rank 0, one extxyz file per flag."""
from __future__ import annotations

import io
import os

import ase.io
import numpy as np
from ase import Atoms

from pylal.files import atomic_write


def lammps_cell(box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """box = (xlo, ylo, zlo, xhi, yhi, zhi, xy, xz, yz, px, py, pz) -> origin, cell rows, pbc."""
    lo, hi = box[0:3], box[3:6]
    xy, xz, yz = box[6:9]
    cell = np.array([[hi[0] - lo[0], 0.0, 0.0],
                     [xy, hi[1] - lo[1], 0.0],
                     [xz, yz, hi[2] - lo[2]]])
    return lo.copy(), cell, box[9:12].astype(bool)


def build_atoms(tags, types, positions, box, elements, arrays: dict, info: dict) -> Atoms:
    """Configuration in LAMMPS atom-ID order, positions relative to the box origin."""
    order = np.argsort(tags)
    origin, cell, pbc = lammps_cell(box)
    atoms = Atoms(symbols=[elements[t - 1] for t in np.asarray(types)[order]],
                  positions=np.asarray(positions)[order] - origin, cell=cell, pbc=pbc)
    atoms.arrays["id"] = np.asarray(tags)[order].astype(int)
    for name, values in arrays.items():
        atoms.arrays[name] = np.asarray(values, dtype=float)[order]
    atoms.info.update(info)
    return atoms


def write_flag(atoms: Atoms, flag_dir: str, step: int, region: int | None = None) -> str:
    """Atomic write of flag_dir/flag_<step>.xyz (a carved region: flag_<step>_r<region>.xyz)."""
    name = f"flag_{step:010d}" + ("" if region is None else f"_r{region}")
    path = os.path.join(flag_dir, name + ".xyz")
    text = io.StringIO()
    # parallel=False: ASE would otherwise make this a collective call on MPI_COMM_WORLD, but only
    # rank 0 writes (a deadlock under mpirun)
    ase.io.write(text, atoms, format="extxyz", parallel=False)
    atomic_write(path, text.getvalue().encode())
    return path
