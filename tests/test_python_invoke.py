"""pylal through `fix python/invoke` in Debian's LAMMPS (PYTHON package, no PLUGIN), see
docs/python_invoke.md: forces and E_HAL against the ASE calculator (serial and 2 ranks), the
example NVT deck inputs/si/in.python_invoke, and the ghost-shell check.

The subprocess is Debian's /usr/bin/lmp (LAMMPS 29 Sep 2021 with OpenMPI and the system Python).
Inside it pylal is this checkout (PYTHONPATH) and its dependencies come from the venv running
pytest (PYLAL_VENV), as the deck's bootstrap lines arrange.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from conftest import random_parameters
from pylal.calculator import PylalCalculator
from pylal.model.basis import BasisSpec

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "inputs/si/in.python_invoke"
LMP, MPIRUN = Path("/usr/bin/lmp"), Path("/usr/bin/mpirun")
DEBIAN_PY = Path("/usr/lib/python3/dist-packages")
APT = "apt-get install -y --no-install-recommends lammps python3-lammps python3-mpi4py"
SPEC = BasisSpec(species=("Si",), r_cut=3.8, n_max=6, l_max=3)
# the bootstrap of the example deck (between `here """` and `"""`), so the tests run what users copy
BOOT = EXAMPLE.read_text().split('here """', 1)[1].split('"""', 1)[0]


def require_debian_lammps(mpi: bool = False):
    needed = [LMP, DEBIAN_PY / "lammps"] + ([MPIRUN, DEBIAN_PY / "mpi4py"] if mpi else [])
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        pytest.fail(f"Debian's LAMMPS is missing ({', '.join(missing)}): run `{APT}` as root")


def run_lmp(workdir: Path, args: list[str], ranks: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    require_debian_lammps(mpi=ranks > 1)
    env = dict(os.environ, PYLAL_VENV=sys.prefix, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = [str(LMP), "-log", "log.lammps", *args]
    if ranks > 1:
        cmd = [str(MPIRUN), "-np", str(ranks), *cmd]
    out = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    if check and out.returncode != 0:
        raise AssertionError(f"lmp failed ({out.returncode}):\n{out.stdout[-4000:]}\n{out.stderr[-3000:]}")
    return out


def thermo(log_text: str) -> dict[int, dict]:
    """Thermo rows of a LAMMPS log by step."""
    rows, header = {}, None
    for line in log_text.splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            header = words
        elif header and len(words) == len(header):
            try:
                row = dict(zip(header, map(float, words)))
            except ValueError:
                header = None
                continue
            rows[int(row["Step"])] = row
    return rows


def read_dump(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """step -> (orthogonal box lengths, rows sorted by atom id) of a `dump custom` file."""
    frames, lines, k = {}, path.read_text().splitlines(), 0
    while k < len(lines):
        step, n = int(lines[k + 1]), int(lines[k + 3])
        bounds = np.array([[float(v) for v in lines[k + 5 + d].split()[:2]] for d in range(3)])
        lengths = bounds[:, 1] - bounds[:, 0]
        rows = np.array([[float(v) for v in line.split()] for line in lines[k + 9:k + 9 + n]])
        frames[step] = (lengths, rows[np.argsort(rows[:, 0])])
        k += 9 + n
    return frames


def reference(params, atoms: Atoms, tau: float):
    atoms = atoms.copy()
    atoms.calc = PylalCalculator(params, tau=tau)
    return atoms.get_potential_energy(), atoms.get_forces()


def static_deck(tau: float, cutoff: float = 8.8) -> str:
    """One force evaluation of cell.data: `run 1` without a time integrator leaves atoms in place,
    and python/invoke of LAMMPS 2021 is not called in the setup of step 0."""
    return f'''units metal
atom_style atomic
boundary p p p
read_data cell.data
neighbor 1.0 bin
comm_modify cutoff {cutoff}
variable pylal_args string "params.npz elements Si tau {tau}"
python pylal_setup input 2 SELF v_pylal_args format ps here """{BOOT}"""
python pylal_setup invoke
fix hal all python/invoke 1 post_force pylal_post_force
variable e_hal python pylal_e_hal
python pylal_e_hal input 2 SELF e_hal return v_e_hal format psf exists
thermo_style custom step v_e_hal
thermo_modify format float %22.16g
dump forces all custom 1 forces.dump id fx fy fz
dump_modify forces format float %20.15g
run 1
'''


@pytest.fixture
def si_system(tmp_path):
    """64-atom rattled diamond Si and random committee parameters (conftest.random_parameters)."""
    params = random_parameters(SPEC, n_members=8, seed=0)
    params.save(tmp_path / "params.npz")
    atoms = bulk("Si", "diamond", 5.43, cubic=True) * (2, 2, 2)
    atoms.rattle(0.15, seed=3)
    atoms.wrap()
    ase.io.write(tmp_path / "cell.data", atoms, format="lammps-data", specorder=["Si"], masses=True)
    # read back: exactly the coordinates LAMMPS parses from the data file
    atoms = ase.io.read(tmp_path / "cell.data", format="lammps-data", atom_style="atomic")
    atoms.set_chemical_symbols(["Si"] * len(atoms))
    return tmp_path, params, atoms


@pytest.mark.parametrize("tau,ranks", [(0.0, 1), (0.5, 1), pytest.param(0.5, 2, marks=pytest.mark.mpi)])
def test_forces_and_energy_match_ase_calculator(si_system, tau, ranks):
    tmp, params, atoms = si_system
    (tmp / "in.deck").write_text(static_deck(tau))
    run_lmp(tmp, ["-in", "in.deck"], ranks=ranks)
    energy, forces = reference(params, atoms, tau)
    _, rows = read_dump(tmp / "forces.dump")[1]
    assert np.array_equal(rows[:, 0], np.arange(1, len(atoms) + 1))
    df = np.abs(rows[:, 1:4] - forces).max()
    print(f"tau {tau}, {ranks} rank(s): max |F_lammps - F_ase| = {df:.3g} eV/A (max |F| {np.abs(forces).max():.3g})")
    assert df < 1e-9
    e_hal = thermo((tmp / "log.lammps").read_text())[1]["v_e_hal"]
    assert abs(e_hal - energy) < 1e-9, (e_hal, energy)


def test_example_nvt_deck(si_system):
    """inputs/si/in.python_invoke runs HAL-MD with adaptive tau; at every dumped MD frame the forces
    equal the calculator's with the tau LAMMPS reports for that step."""
    tmp, params, _ = si_system
    hal = "tau_rel 0.2 tau_window 5 check_every 5 f_tol 100"
    run_lmp(tmp, ["-in", str(EXAMPLE), "-var", "params", "params.npz", "-var", "steps", "20", "-var", "hal", hal])
    rows = thermo((tmp / "log.lammps").read_text())
    frames = read_dump(tmp / "pylal_invoke.dump")
    assert sorted(frames) == [0, 10, 20] and sorted(rows) == [0, 10, 20]
    assert rows[20]["v_tau"] > 0  # adaptive tau switched on after its 5-step window
    for step in (10, 20):
        lengths, data = frames[step]
        atoms = Atoms(["Si"] * len(data), positions=data[:, 2:5], cell=np.diag(lengths), pbc=True)
        energy, forces = reference(params, atoms, rows[step]["v_tau"])
        df = np.abs(data[:, 5:8] - forces).max()
        print(f"MD step {step}: tau {rows[step]['v_tau']:.4g}, max |dF| = {df:.3g} eV/A "
              f"(max |F| {np.abs(forces).max():.3g}), "
              f"E_HAL {rows[step]['v_e_hal']:.6f} vs {energy:.6f}, T {rows[step]['Temp']:.0f} K")
        assert df < 1e-9
        assert abs(rows[step]["v_e_hal"] - energy) < 1e-9
        assert 300 < rows[step]["Temp"] < 3000


def test_too_small_ghost_shell_is_an_error(si_system):
    tmp, _, _ = si_system
    (tmp / "in.deck").write_text(static_deck(0.0, cutoff=7.0))
    out = run_lmp(tmp, ["-in", "in.deck"], check=False)
    assert out.returncode != 0
    assert "comm_modify cutoff" in out.stdout + out.stderr and "2 r_cut = 7.6" in out.stdout + out.stderr
