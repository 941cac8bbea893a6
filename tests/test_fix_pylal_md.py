"""MD with `fix pylal` on a potential fitted to the Stillinger-Weber oracle: energy conservation
and the decks in inputs/si/ (they must run as shipped)."""
import numpy as np
import pytest

from conftest import random_parameters
from lammps_util import ROOT, run_lmp, thermo, write_data
from pylal.fit.committee import fit_parameters
from pylal.model.ace import AceSpec
from pylal.model.basis import BasisSpec
from pylal.reference import make_calculator
from pylal.sampling import diamond_si, oracle_md

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def si_training():
    """15 SW configurations (300-1500 K)."""
    sw = make_calculator("lammps")
    return [a for i, temperature in enumerate([300, 900, 1500])
            for a in oracle_md(diamond_si(2), sw, temperature, 5, stride=40, seed=i)]


def fitted(spec, training, tmp_path_factory):
    params = fit_parameters(spec, training, n_members=16)
    path = tmp_path_factory.mktemp("si") / "si.npz"
    params.save(path)
    return path


@pytest.fixture(scope="module")
def si_potential(si_training, tmp_path_factory):
    """K = 16 committee (power basis) fitted to si_training."""
    return fitted(BasisSpec(species=("Si",), r_cut=3.8, n_max=6, l_max=3), si_training, tmp_path_factory)


@pytest.fixture(scope="module")
def si_ace_potential(si_training, tmp_path_factory):
    """The same on ace-jax's ACE basis (order 2, degree 8)."""
    return fitted(AceSpec(species=("Si",), r_cut=3.8, order=2, max_degree=8), si_training, tmp_path_factory)


NVE = """units metal
atom_style atomic
boundary p p p
lattice diamond 5.431
region cell block 0 4 0 4 0 4
create_box 1 cell
create_atoms 1 box
mass 1 28.0855
pair_style zero 3.8
pair_coeff * *
fix ml all pylal {params} elements Si tau 0 check_every 0
velocity all create 1000 7 mom yes rot yes dist gaussian
fix nve all nve
timestep 0.001
thermo_style custom step temp pe etotal
thermo_modify format float %22.16g
thermo 100
run {steps}
"""


@pytest.mark.parametrize("potential", ["si_potential", "si_ace_potential"], ids=["power", "ace"])
def test_nve_energy_drift_512_atoms(potential, request, tmp_path):
    """tau = 0, 512 Si atoms, 5,000 steps of 1 fs: drift of E_total per atom per ps (goal 1e-5)."""
    run_lmp(NVE.format(params=request.getfixturevalue(potential), steps=5000), tmp_path, timeout=1800)
    rows = thermo((tmp_path / "log.lammps").read_text())
    t_ps = np.array([r["Step"] for r in rows]) * 1e-3
    e = np.array([r["TotEng"] for r in rows]) / 512
    drift = np.polyfit(t_ps, e, 1)[0]
    print(f"NVE 512 atoms, 5 ps: drift {drift:.2e} eV/atom/ps, fluctuation {e.std():.2e} eV/atom, "
          f"T {np.mean([r['Temp'] for r in rows]):.0f} K")
    assert abs(drift) < 1e-5
    assert e.std() < 1e-4


NPT = """units metal
atom_style atomic
boundary p p p
read_data cell.data
pair_style zero 3.8
pair_coeff * *
fix ml all pylal {params} elements Si tau 0.1 check_every 10 f_tol 100
velocity all create 900 7 mom yes rot yes dist gaussian
fix npt all npt temp 900 900 0.1 iso 0 0 1.0
timestep 0.001
thermo_style custom step temp pe vol
thermo 100
run 1000
"""


def test_ace_npt_with_hal_compiles_at_most_three_times(si_ace_potential, si_training, tmp_path):
    """ACE basis (issue 13): 1000 steps of NPT at 900 K from an SW MD snapshot, bias on, member forces
    (f_i) every 10 steps: the committee step compiles at most 3 times (once per mode, at most one growth
    of the padded sizes; test_hal.py::test_breathing_ghost_and_pair_counts_keep_the_compiled_step)."""
    write_data(si_training[-1], tmp_path / "cell.data", ["Si"])
    out = run_lmp(NPT.format(params=si_ace_potential), tmp_path, timeout=900)
    rows = thermo((tmp_path / "log.lammps").read_text())
    assert rows[-1]["Step"] == 1000 and np.isfinite([v for r in rows for v in r.values()]).all()
    assert max(r["Volume"] for r in rows) / min(r["Volume"] for r in rows) > 1.005  # the box breathed
    compiled = [line for line in out.stdout.splitlines() if "compiled the committee step" in line]
    print("\n".join(compiled))
    assert 2 <= len(compiled) <= 3, compiled  # modes hal and members; at most one regrowth


@pytest.mark.parametrize("deck", ["in.nvt_hal", "in.npt_hal"])
def test_si_decks_run(si_potential, tmp_path, deck):
    """The shipped decks, shortened to 200 steps, on 2 ranks: they run and the bias switches on."""
    text = (ROOT / "inputs/si" / deck).read_text().replace("index 5000", "index 200")
    text = text.replace("tau_window 100", "tau_window 50").replace("tau_rel 0.1 f_tol", "tau_rel 0.1 tau_window 50 f_tol")
    text = text.replace("thermo          100", "thermo 50")
    (tmp_path / "si.npz").write_bytes(si_potential.read_bytes())
    run_lmp(text, tmp_path, ranks=2, timeout=600)
    rows = thermo((tmp_path / "log.lammps").read_text())
    assert rows[-1]["Step"] == 200
    assert np.isfinite([v for r in rows for v in r.values()]).all()
    assert rows[-1]["f_hal[3]"] > 0  # adaptive tau on after its window


def test_zbl_prior_deck_adds_prior_and_learned_part(tmp_path):
    """hybrid/overlay zbl + zero with fix pylal: pe = ZBL pair energy + E_HAL of the learned part."""
    spec = BasisSpec(species=("Si",), r_cut=3.8, n_max=6, l_max=3, prior=None)
    random_parameters(spec, n_members=8).save(tmp_path / "si_residual.npz")
    deck = (ROOT / "inputs/si/in.zbl_prior").read_text().replace("index 5000", "index 50")
    deck = deck.replace("f_tol 0.2", "f_tol 100")  # random parameters would flag (and stop) at once
    deck = deck.replace("thermo          100", "thermo 10\nthermo_modify format float %22.16g")
    run_lmp(deck, tmp_path)
    rows = thermo((tmp_path / "log.lammps").read_text())
    assert len(rows) == 6
    for r in rows:
        assert r["PotEng"] == pytest.approx(r["c_prior"] + r["f_hal"], rel=1e-12, abs=1e-9)
