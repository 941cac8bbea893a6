"""`fix pylal` inside LAMMPS (the C++ plugin + engine) against the ASE calculator and physics."""
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from conftest import random_parameters
from lammps_util import NKTV2P, read_dump, run_driver, run_lmp, thermo, write_data
from pylal.calculator import PylalCalculator
from pylal.model.ace import AceSpec
from pylal.model.basis import BasisSpec

SPEC = BasisSpec(species=("Si", "C"), r_cut=3.5, n_max=4, l_max=2, prior=(1.0, 1.6))
ACE_SPEC = AceSpec(species=("Si", "C"), r_cut=3.5, order=2, max_degree=6, prior=(1.0, 1.6))
ELEMENTS = ("Si", "C")


def sic_cell(tilt: float = 0.6) -> Atoms:
    """64 atoms, two species, triclinic in LAMMPS's own orientation (rows a, b, c lower-triangular)."""
    atoms = bulk("Si", "diamond", 5.2, cubic=True) * (2, 2, 2)
    atoms.symbols[[1, 4, 6, 17, 30, 41, 55]] = "C"
    cell = atoms.cell.array.copy()
    cell[1, 0] = tilt  # xy
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.12, seed=4)
    atoms.wrap()
    return atoms


def deck(fix_args: str, run: str = "run 0", extra: str = "", pair: str = "pair_style zero 4.0\npair_coeff * *") -> str:
    return f"""units metal
atom_style atomic
atom_modify map array
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
    return tmp_path, write_system(tmp_path, SPEC), sic_cell()


def write_system(tmp, spec):
    """params.npz (random committee of `spec`, K = 8) and cell.data (sic_cell) in tmp; returns the parameters."""
    params = random_parameters(spec, n_members=8, seed=1)
    params.save(tmp / "params.npz")
    write_data(sic_cell(), tmp / "cell.data", ELEMENTS)
    return params


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
    check_lmp_matches_ase(*system[:2], ranks)


@pytest.mark.parametrize("ranks", [1, pytest.param(2, marks=pytest.mark.mpi), pytest.param(4, marks=pytest.mark.mpi)])
def test_lmp_matches_ase_calculator_with_the_ace_basis(tmp_path, ranks):
    """The same for ace-jax's ACE basis (pylal.model.ace)."""
    check_lmp_matches_ase(tmp_path, write_system(tmp_path, ACE_SPEC), ranks)


def check_lmp_matches_ase(tmp, params, ranks):
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


def test_bias_forces_are_finite_differences_of_e_hal(system):
    """tau > 0: total forces through LAMMPS are -dE_HAL/dx (E_HAL = E - tau sigma, HAL eq. 1)."""
    tmp, params, atoms = system
    commands = [c for c in deck("tau 0.5", run="").splitlines() if c and not c.startswith(("compute vir", "thermo"))]
    out = run_driver({"commands": commands, "tasks": ["state", {"fd": True, "atoms": [0, 7, 30], "h": 1e-4}]}, tmp)
    forces = np.array(out["state"]["forces"])[[0, 7, 30]].reshape(-1)
    energy, ref_forces, _ = reference(params, atoms, tau=0.5)
    assert abs(out["state"]["energy"] - energy) < 1e-9  # E_HAL, not E
    assert np.abs(forces - ref_forces[[0, 7, 30]].reshape(-1)).max() < 1e-9
    assert np.abs(forces - np.array(out["fd"])).max() < 1e-6


@pytest.mark.mpi
def test_one_vs_two_ranks_same_thermo(system):
    """Bias on, adaptive tau: the first 100 steps print the same thermo on 1 and 2 ranks (10 digits)."""
    tmp, _, _ = system
    md = "velocity all create 1200 5 loop geom\nfix nve all nve\nthermo 10"
    rows = {}
    for ranks in (1, 2):
        run_lmp(deck("tau_rel 0.1 tau_window 20 check_every 10 f_tol 100", run="run 100", extra=md), tmp, ranks=ranks)
        rows[ranks] = thermo((tmp / "log.lammps").read_text())
    assert len(rows[1]) == len(rows[2]) == 11
    assert rows[1][-1]["f_ml[3]"] > 0  # tau switched on after its 20-step window
    for a, b in zip(rows[1], rows[2]):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-10, abs=1e-12), (a["Step"], key)


def _f_i_by_atom(tmp, fix_args):
    """Serial run 0 dumping the per-atom array (f_i, atom sigma, |F_bias|)."""
    extra = "dump d all custom 1 fi.dump id x y z f_ml[1] f_ml[2] f_ml[3]\ndump_modify d format float %22.16g"
    run_lmp(deck(fix_args, extra=extra), tmp)
    return read_dump(tmp / "fi.dump")[0]


@pytest.mark.mpi
def test_flag_raised_by_one_rank_is_seen_by_all(tmp_path):
    """Only atoms owned by rank 1 exceed f_tol: the flag is raised, written once by rank 0, and
    `on_flag stop` ends the run on every rank (no deadlock)."""
    params = random_parameters(SPEC, n_members=8, seed=1)
    params.save(tmp_path / "params.npz")
    atoms = sic_cell(tilt=0.0)
    write_data(atoms, tmp_path / "cell.data", ELEMENTS)
    frame = _f_i_by_atom(tmp_path, "tau 0 check_every 1")
    f_i, x = frame[:, 4], frame[:, 1]
    half = x >= atoms.cell[0, 0] / 2  # rank 1 of `processors 2 1 1`
    m0, m1 = f_i[~half].max(), f_i[half].max()
    shift = "" if m1 > m0 else f"displace_atoms all move {atoms.cell[0, 0] / 2} 0 0 units box"
    f_tol = (m0 + m1) / 2
    extra = f"{shift}\nvelocity all create 300 1\nfix nve all nve\nthermo 1"
    args = f"tau 0 check_every 5 f_tol {f_tol} on_flag stop flag_dir flags"
    text = deck(args, run="run 50", extra=extra).replace("read_data", "processors 2 1 1\nread_data")
    out = run_lmp(text, tmp_path, ranks=2, timeout=300)
    rows = thermo((tmp_path / "log.lammps").read_text())
    assert rows[-1]["Step"] == 0 and rows[-1]["f_ml[6]"] == 1  # stopped at the flag, one flag
    flags = sorted((tmp_path / "flags").glob("flag_*.xyz"))
    assert len(flags) == 1
    flagged = ase.io.read(flags[0])
    assert len(flagged) == len(atoms) and flagged.info["step"] == 0
    assert np.argmax(flagged.arrays["f_i"]) == np.argmax(f_i)
    assert flagged.info["f_max"] == pytest.approx(max(m0, m1), rel=1e-9)
    assert "flag 1" in out.stdout


@pytest.mark.mpi
@pytest.mark.parametrize("spec", [SPEC, ACE_SPEC], ids=["power", "ace"])
def test_twenty_hot_swaps_in_one_two_rank_run(tmp_path, spec):
    """A new parameter version at every check step (10 steps), swapped in on the same step on both ranks,
    without compiling the committee step again (ACE: the kernel readouts of the new committee are new
    arguments, not new code)."""
    tmp, swaps = tmp_path, 20
    write_system(tmp, spec)
    # no integrator: the atoms stay put, so the padded sizes cannot grow (under MD at 600 K the second
    # shell, 3.68 A, crosses r_cut 3.5 A: 7 compilations) and a compilation after step 1 could only come from a swap
    args = "tau 0 check_every 10 f_tol 100 engine swapping_engine:SwappingEngine"
    extra = "thermo_style custom step pe fnorm f_ml[7]\nthermo_modify format float %22.16g\nthermo 10"
    out = run_lmp(deck(args, run=f"run {10 * swaps}", extra=extra), tmp, ranks=2,
                  PYTHONPATH=str(Path(__file__).parent / "lammps"))
    logs = [np.loadtxt(tmp / f"versions_{r}.txt", dtype=int) for r in (0, 1)]
    assert np.array_equal(logs[0], logs[1])  # every rank on the same version at every step
    steps, versions = logs[0][:, 0], logs[0][:, 1]
    assert versions.max() == swaps and np.all(np.diff(versions) >= 0)
    assert np.all(versions == steps // 10)  # swapped exactly at the check steps
    rows = thermo((tmp / "log.lammps").read_text())
    assert rows[-1]["f_ml[7]"] == swaps
    # version v is the first committee times 1.001^v (linear model, no ZBL pair inside 1.6 A): energy and
    # forces follow, so the new coefficients (ACE: the kernel readouts) are what the step uses
    scale = np.array([1.001 ** r["f_ml[7]"] for r in rows])
    np.testing.assert_allclose([r["PotEng"] for r in rows], rows[0]["PotEng"] * scale, rtol=1e-9)
    np.testing.assert_allclose([r["Fnorm"] for r in rows], rows[0]["Fnorm"] * scale, rtol=1e-9)
    assert out.stdout.count("swapped in parameter version") == swaps
    compiled = [line for line in out.stdout.splitlines() if "compiled the committee step" in line]
    assert len(compiled) == 2, compiled  # the mean step and the members step (check steps), once each


@pytest.mark.parametrize("spec", [SPEC, ACE_SPEC], ids=["power", "ace"])
def test_restart_continues_exactly(tmp_path, spec):
    """200 steps == 100 + write_restart / read_restart + 100 (bias on, adaptive tau), to 10 digits:
    not bitwise, since LAMMPS orders atoms differently after read_restart (summation order)."""
    tmp = tmp_path
    write_system(tmp, spec)
    args = "tau_rel 0.1 tau_window 50 check_every 10 f_tol 100"
    md = "velocity all create 1000 3 loop geom\nfix nve all nve\nthermo 10"
    run_lmp(deck(args, run="run 200", extra=md), tmp)
    whole = thermo((tmp / "log.lammps").read_text())
    run_lmp(deck(args, run="run 100\nwrite_restart state.restart", extra=md), tmp)
    continued = deck(args, run="run 100", extra="fix nve all nve\nthermo 10").replace("read_data cell.data", "read_restart state.restart")
    out = run_lmp(continued, tmp)
    assert "restored state" in out.stdout
    second = thermo((tmp / "log.lammps").read_text())
    assert [r["Step"] for r in second] == [r["Step"] for r in whole[10:]]
    assert whole[10]["f_ml[3]"] > 0  # tau was active at the restart
    for a, b in zip(whole[10:], second):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-10, abs=1e-12), (a["Step"], key)


def test_pressure_is_finite_strain_virial_and_npt_runs(system):
    """Bias on: the virial LAMMPS reports is -dE_HAL/d(strain); then NPT on E_HAL runs."""
    tmp, _, _ = system
    commands = [c for c in deck("tau 0.5", run="").splitlines() if c and not c.startswith(("compute vir", "thermo"))]
    tasks = ["state", {"strain_fd": 1e-5},
             {"command": "velocity all create 600 7"},
             {"command": "fix npt all npt temp 600 600 0.1 iso 0 0 1.0"},
             {"command": "run 200"}, {"thermo": ["vol", "press", "pe"]}]
    out = run_driver({"commands": commands, "tasks": tasks}, tmp)
    virial = np.array(out["state"]["virial"])[:3]
    assert np.abs(virial - np.array(out["strain_fd"])).max() < 1e-5 * max(1.0, np.abs(virial).max())
    final = out["thermo"][0]
    assert np.isfinite([final["vol"], final["press"], final["pe"]]).all()
    assert final["vol"] != pytest.approx(sic_cell().get_volume(), rel=1e-6)  # the barostat moved the box


@pytest.mark.parametrize("fix_args, pair, message", [
    ("tau 0 bogus 1", None, "unknown keyword 'bogus'"),
    ("tau 0 check_every x", None, "keyword 'check_every' expects an integer"),
    ("tau 0 tau_rel 0.1", None, "either 'tau' (fixed) or 'tau_rel'"),
    ("tau 0 on_flag maybe", None, "'on_flag' must be one of continue|stop"),
    ("tau 0", "pair_style zero 3.0\npair_coeff * *", "pair cutoff 3 A is smaller than the model cutoff 3.5 A"),
])
def test_bad_input_stops_with_a_named_error(system, fix_args, pair, message):
    tmp, _, _ = system
    text = deck(fix_args) if pair is None else deck(fix_args, pair=pair)
    out = run_lmp(text, tmp, check=False, timeout=120)
    assert out.returncode == 1, out.stdout[-2000:]
    assert message in out.stdout


@pytest.mark.parametrize("case, message", [
    ("missing", "parameter file nothere.npz does not exist"),
    ("corrupt", "is corrupt or not a pylal file"),
    ("elements", "elements ['Ge'] are not in the parameter file"),
    ("types", "'elements' lists 1 element(s) but the system has 2 atom type(s)"),
])
def test_bad_parameter_file_or_elements_stop_with_a_named_error(system, case, message):
    tmp, _, _ = system
    (tmp / "bad.npz").write_bytes(b"not a parameter file")
    text = deck("tau 0")
    text = {"missing": text.replace("params.npz", "nothere.npz"),
            "corrupt": text.replace("params.npz", "bad.npz"),
            "elements": text.replace("elements Si C", "elements Si Ge"),
            "types": text.replace("elements Si C", "elements Si")}[case]
    out = run_lmp(text, tmp, check=False, timeout=120)
    assert out.returncode == 1, out.stdout[-2000:]
    assert message in out.stdout
