import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT
from scipy.spatial.transform import Rotation

from pylal.reference import Label, LabelFailure, LammpsCalculator, label, make_calculator


def fd_forces(atoms, calc, h=1e-4):
    """Central-difference forces -dE/dx (independent of ASE's helpers)."""
    forces = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for d in range(3):
            e = []
            for sign in (1, -1):
                a = atoms.copy()
                a.positions[i, d] += sign * h
                a.calc = calc
                e.append(a.get_potential_energy())
            forces[i, d] = -(e[0] - e[1]) / (2 * h)
    return forces


def fd_stress(atoms, calc, h=1e-5):
    """Stress as (1/V) dE/d(strain), central differences on symmetric strains (Voigt order)."""
    stress = np.zeros((3, 3))
    for i in range(3):
        for j in range(i, 3):
            e = []
            for sign in (1, -1):
                strain = np.eye(3)
                strain[i, j] += sign * h / (1 if i == j else 2)
                strain[j, i] = strain[i, j]
                a = atoms.copy()
                a.set_cell(atoms.cell.array @ strain, scale_atoms=True)
                a.calc = calc
                e.append(a.get_potential_energy())
            stress[i, j] = stress[j, i] = (e[0] - e[1]) / (2 * h) / atoms.get_volume()
    return stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]


def check_derivatives(atoms, calc, stress=True):
    atoms = atoms.copy()
    atoms.calc = calc
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 0.01  # not trivially zero
    np.testing.assert_allclose(forces, fd_forces(atoms, calc), atol=1e-5 * np.abs(forces).max())
    if stress:
        s = atoms.get_stress()
        np.testing.assert_allclose(s, fd_stress(atoms, calc), atol=1e-5 * np.abs(s).max() + 1e-9)


@pytest.fixture(scope="module")
def sw():
    return make_calculator("lammps")


@pytest.fixture
def si8():
    atoms = bulk("Si", "diamond", 5.431, cubic=True)
    atoms.rattle(0.1, seed=1)
    return atoms


def triclinic(atoms, seed=0):
    """Sheared and arbitrarily rotated copy (cell no longer lower triangular)."""
    a = atoms.copy()
    shear = np.array([[1.0, 0.05, -0.08], [0.12, 0.97, 0.06], [-0.1, 0.15, 1.04]])
    a.set_cell(a.cell.array @ shear, scale_atoms=True)
    rot = Rotation.random(random_state=seed).as_matrix()
    a.set_cell(a.cell.array @ rot.T, scale_atoms=True)
    return a


def test_sw_si_energy(sw):
    atoms = bulk("Si", "diamond", 5.431, cubic=True)
    atoms.calc = sw
    assert atoms.get_potential_energy() / len(atoms) == pytest.approx(-4.3366, abs=1e-3)
    assert np.abs(atoms.get_forces()).max() < 1e-8
    primitive = bulk("Si", "diamond", 5.431)  # triclinic 2-atom cell
    primitive.calc = sw
    assert primitive.get_potential_energy() / 2 == pytest.approx(-4.3366, abs=1e-3)


def test_sw_derivatives_orthogonal(sw, si8):
    check_derivatives(si8, sw)


def test_sw_derivatives_triclinic(sw, si8):
    check_derivatives(triclinic(si8), sw)


def test_frame_invariance(sw, si8):
    """Rotation, cell-vector permutation (left-handed), large tilts and supercells agree."""
    si8 = triclinic(si8, seed=1)
    si8.calc = sw
    e, f, s = si8.get_potential_energy(), si8.get_forces(), si8.get_stress(voigt=False)
    rot = Rotation.random(random_state=2).as_matrix()
    variants = []
    a = si8.copy()
    a.set_cell(a.cell.array @ rot.T, scale_atoms=True)
    variants.append((a, rot))
    a = si8.copy()
    a.set_cell(a.cell.array[[1, 0, 2]], scale_atoms=False)  # same lattice, left-handed
    variants.append((a, np.eye(3)))
    a = si8.copy()
    a.set_cell(a.cell.array + [[0, 0, 0], [2, 0, 0], [-1, 3, 0]] @ a.cell.array,
               scale_atoms=False)  # same lattice, heavily tilted basis
    variants.append((a, np.eye(3)))
    for a, r in variants:
        a.calc = sw
        assert a.get_potential_energy() == pytest.approx(e, abs=1e-9)
        np.testing.assert_allclose(a.get_forces(), f @ r.T, atol=1e-8)
        np.testing.assert_allclose(a.get_stress(voigt=False), r @ s @ r.T, atol=1e-8)
    big = si8.repeat((2, 1, 1))
    big.calc = sw
    assert big.get_potential_energy() == pytest.approx(2 * e, abs=1e-8)


def test_non_periodic(sw):
    cluster = bulk("Si", "diamond", 5.431, cubic=True)
    cluster.rattle(0.1, seed=5)
    cluster.pbc = False
    cluster.calc = sw
    assert cluster.get_potential_energy() / len(cluster) > -4.0  # surface atoms: less bound
    check_derivatives(cluster, sw, stress=False)
    no_cell = Atoms(cluster.symbols, cluster.positions + 100.0)  # far outside, zero cell
    no_cell.calc = sw
    assert no_cell.get_potential_energy() == pytest.approx(cluster.get_potential_energy(), abs=1e-9)
    slab = cluster.copy()
    slab.pbc = (True, False, True)  # periodic in x and z only
    slab.calc = sw
    slab.get_potential_energy()
    check_derivatives(slab, sw, stress=False)
    with pytest.raises(Exception):
        slab.get_stress()


def test_eam_alcu_derivatives():
    atoms = bulk("Al", "fcc", 4.05, cubic=True).repeat((2, 1, 1))
    rng = np.random.default_rng(0)
    atoms.symbols[rng.choice(len(atoms), 3, replace=False)] = "Cu"
    atoms = triclinic(atoms)
    atoms.rattle(0.08, seed=2)
    calc = make_calculator("lammps", potential="eam-alcu")
    check_derivatives(atoms, calc)
    with pytest.raises(ValueError, match="species"):
        make_calculator("lammps", potential="eam-alcu").get_potential_energy(bulk("Si"))


def test_generic_pair_style():
    atoms = bulk("Ar", "fcc", 5.26, cubic=True)
    atoms.rattle(0.05, seed=0)
    calc = make_calculator("lammps", pair_style="lj/cut 8.5", pair_coeff="* * 0.0104 3.4")
    atoms.calc = calc
    assert -0.1 < atoms.get_potential_energy() / len(atoms) < -0.05
    check_derivatives(atoms, calc)


def test_emt_and_module_factory():
    atoms = bulk("Cu", "fcc", 3.6)
    assert isinstance(make_calculator("emt"), EMT)
    calc = make_calculator("ase.calculators.emt:EMT")
    assert isinstance(calc, EMT)
    custom = make_calculator(f"{__name__}:my_factory", potential="sw-si")
    assert isinstance(custom, LammpsCalculator) and custom.parameters.pair_style == "sw"
    with pytest.raises(TypeError):
        make_calculator(f"{__name__}:not_a_calculator")
    assert label(atoms, calc).ok


def my_factory(**options):
    return LammpsCalculator(**options)


def not_a_calculator():
    return object()


def test_unknown_name():
    with pytest.raises(ValueError, match="lammps.*tblite"):
        make_calculator("nonsense")
    with pytest.raises(ValueError, match="sw-si"):
        make_calculator("lammps", potential="nonsense")


class Raising(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        raise RuntimeError("SCF not converged")


class NaNForces(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        forces = np.zeros((len(atoms), 3))
        forces[0, 1] = np.nan
        self.results = {"energy": -1.0, "forces": forces}


def test_label_success(sw, si8):
    result = label(si8, sw)
    assert isinstance(result, Label) and result.ok and result.wall_time >= 0
    assert result.atoms is not si8 and si8.calc is None
    si8.calc = sw
    assert result.atoms.get_potential_energy() == pytest.approx(si8.get_potential_energy())
    np.testing.assert_allclose(result.atoms.get_forces(), si8.get_forces())
    np.testing.assert_allclose(result.atoms.get_stress(), si8.get_stress())
    cluster = si8.copy()
    cluster.pbc = False  # stress skipped, not a failure
    result = label(cluster, sw)
    assert result.ok and "stress" not in result.results


def test_label_failures(si8):
    failure = label(si8, Raising())
    assert isinstance(failure, LabelFailure) and not failure.ok
    assert failure.error_type == "RuntimeError" and "not converged" in failure.message
    failure = label(si8, NaNForces())
    assert not failure.ok and failure.error_type == "NonFiniteResult" and "forces" in failure.message
    failure = label(bulk("Cu"), make_calculator("lammps"))  # Cu not in SW species
    assert not failure.ok and failure.error_type == "ValueError"


def test_tblite_water():
    pytest.importorskip("tblite")
    calc = make_calculator("tblite")
    water = molecule("H2O")
    water.positions[0] += [0.05, -0.03, 0.02]
    result = label(water, calc)
    assert result.ok and "stress" not in result.results
    energy, forces = result.results["energy"], result.results["forces"]
    assert np.isfinite(energy) and np.all(np.isfinite(forces)) and np.abs(forces).max() > 0.01
    h = 1e-3
    e = []
    for sign in (1, -1):
        a = water.copy()
        a.positions[1, 2] += sign * h
        a.calc = calc
        e.append(a.get_potential_energy())
    assert forces[1, 2] == pytest.approx(-(e[0] - e[1]) / (2 * h), rel=1e-2, abs=1e-3)


def test_oracle_md_inside_lammps_labels_what_calculate_gives_and_samples_the_temperature(sw):
    """A LAMMPS reference's oracle MD runs inside LAMMPS: each snapshot's labels equal a fresh `calculate`
    at its positions (triclinic cell too: frame rotation round trip), and the kinetic temperature of the
    snapshots averages to the target (canonical sampling, 64 atoms: std ~ T sqrt(2 / 3N) per snapshot)."""
    from pylal.sampling import diamond_si, oracle_md

    tilted = bulk("Si", "diamond", 5.431).repeat(3)  # primitive fcc vectors: a triclinic box in LAMMPS
    for atoms in (diamond_si(2), tilted):
        for snap in oracle_md(atoms, sw, 1200.0, 2, stride=20, equilibrate=50, seed=1):
            fresh = snap.copy()
            fresh.calc = make_calculator("lammps")
            assert fresh.get_potential_energy() == pytest.approx(snap.get_potential_energy(), abs=1e-9)
            np.testing.assert_allclose(fresh.get_forces(), snap.get_forces(), atol=1e-9)
            np.testing.assert_allclose(fresh.get_stress(), snap.get_stress(), atol=1e-12)
            assert np.abs(snap.get_forces()).max() > 0.1  # moved off the lattice
    temperatures = [a.get_temperature() for a in oracle_md(diamond_si(2), sw, 1200.0, 60, stride=20, seed=2)]
    assert np.mean(temperatures) == pytest.approx(1200.0, rel=0.05)
