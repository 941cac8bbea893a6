"""`fix pylal` inside LAMMPS (the C++ plugin + engine) against the ASE calculator and physics."""
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from conftest import random_parameters
from lammps_util import NKTV2P, read_dump, run_driver, run_lmp, thermo, write_data
from pylal.calculator import PylalCalculator
from pylal.model.basis import BasisSpec

SPEC = BasisSpec(species=("Si", "C"), r_cut=3.5, n_max=4, l_max=2, prior=(1.0, 1.6))
ELEMENTS = ("Si", "C")


def sic_cell() -> Atoms:
    """64 atoms, two species, triclinic in LAMMPS's own orientation (rows a, b, c lower-triangular)."""
    atoms = bulk("Si", "diamond", 5.2, cubic=True) * (2, 2, 2)
    atoms.symbols[[1, 4, 6, 17, 30, 41, 55]] = "C"
    cell = atoms.cell.array.copy()
    cell[1, 0] = 0.6  # xy tilt
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.12, seed=4)
    atoms.wrap()
    return atoms


def deck(fix_args: str, run: str = "run 0", extra: str = "", pair: str = "pair_style zero 4.0\npair_coeff * *") -> str:
    return f"""units metal
atom_style atomic
boundary p p p
read_data cell.data
{pair}
fix ml all pylal params.npz elements {' '.join(ELEMENTS)} {fix_args}
compute vir all pressure NULL virial
thermo_style custom step pe c_vir[1] c_vir[2] c_vir[3] c_vir[4] c_vir[5] c_vir[6] vol f_ml[1] f_ml[2] f_ml[3] f_ml[4] f_ml[5] f_ml[6] f_ml[7]
thermo_modify format float %22.16g
{extra}
{run}
"""


@pytest.fixture
def system(tmp_path):
    params = random_parameters(SPEC, n_members=8, seed=1)
    params.save(tmp_path / "params.npz")
    atoms = sic_cell()
    write_data(atoms, tmp_path / "cell.data", ELEMENTS)
    return tmp_path, params, atoms


def reference(params, atoms, tau=0.0):
    atoms = atoms.copy()
    atoms.calc = PylalCalculator(params, tau=tau)
    energy = atoms.get_potential_energy()
    virial = -atoms.get_stress(voigt=True) * atoms.get_volume()  # ASE voigt: xx yy zz yz xz xy
    return energy, atoms.get_forces(), virial[[0, 1, 2, 5, 4, 3]]  # -> LAMMPS order xx yy zz xy xz yz


def virial_of(row):
    return np.array([row[f"c_vir[{k}]"] for k in range(1, 7)]) * row["Volume"] / NKTV2P


@pytest.mark.parametrize("ranks", [1, pytest.param(2, marks=pytest.mark.mpi), pytest.param(4, marks=pytest.mark.mpi)])
def test_lmp_matches_ase_calculator(system, ranks):
    """tau = 0: energy, forces and virial of `lmp` + fix pylal equal the ASE calculator's (1e-9)."""
    tmp, params, _ = system
    extra = "dump d all custom 1 forces.dump id type x y z fx fy fz\ndump_modify d format float %22.16g"
    run_lmp(deck("tau 0", extra=extra), tmp, ranks=ranks)
    row = thermo((tmp / "log.lammps").read_text())[-1]
    frame = read_dump(tmp / "forces.dump")[0]
    atoms = sic_cell()
    atoms.positions = frame[:, 2:5]  # exactly the positions LAMMPS used
    energy, forces, virial = reference(params, atoms)
    assert abs(row["PotEng"] - energy) < 1e-9
    assert np.abs(frame[:, 5:8] - forces).max() < 1e-9
    assert np.abs(virial_of(row) - virial).max() < 1e-9
    assert row["f_ml[7]"] == params.version


@pytest.mark.parametrize("ranks", [1, pytest.param(2, marks=pytest.mark.mpi), pytest.param(4, marks=pytest.mark.mpi)])
def test_python_driver_matches_ase_calculator(system, ranks):
    tmp, params, atoms = system
    commands = deck("tau 0", run="").splitlines()
    commands = [c for c in commands if c and not c.startswith(("compute vir", "thermo"))]
    out = run_driver({"commands": commands, "tasks": ["state"]}, tmp, ranks=ranks)
    assert out["ranks"] == ranks
    energy, forces, virial = reference(params, atoms)
    state = out["state"]
    assert abs(state["energy"] - energy) < 1e-9
    assert np.abs(np.array(state["forces"]) - forces).max() < 1e-9
    assert np.abs(np.array(state["virial"]) - virial).max() < 1e-9
