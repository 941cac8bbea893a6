"""Guard and rollback of `fix pylal` (docs/fix_pylal.md "Guard and rollback"): a run driven into
blow-ups by a poor committee reaches its last step, every guard event is a flag with a label,
and a rollback restores exactly the saved state on every rank, also across atom migrations."""
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from conftest import random_parameters
from lammps_util import read_dump, run_lmp, thermo, write_data
from pylal.fit.checks import label_problem
from pylal.fit.committee import fit_parameters
from pylal.model.basis import BasisSpec
from pylal.reference import label, make_calculator

pytestmark = pytest.mark.slow
TESTS = Path(__file__).parent


def si64(rattle=0.0, seed=0):
    atoms = bulk("Si", "diamond", 5.431, cubic=True) * (2, 2, 2)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


def events_of(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


DRIFT = """units metal
atom_style atomic
boundary p p p
processors * 1 1
read_data cell.data
pair_style zero 3.8
pair_coeff * *
neighbor 1.0 bin
fix ml all pylal params.npz elements Si tau 0 check_every 0 seed 5 rollback_every 1000 guard_fmax 0 guard_rmin 0 guard_sigma_jump 0 event_log events.jsonl flag_dir flags checkpoint ck.data checkpoint_every 0 engine tripping_engine:TrippingEngine
velocity all create 300 7 mom yes dist gaussian
velocity all set 40 0 0 sum yes
fix nve all nve
timestep 0.001
thermo_style custom step temp pe f_ml[8]
thermo_modify format float %22.16g
thermo 50
dump d all custom 50 traj.dump id proc xu yu zu vx vy vz
dump_modify d format float %22.16g
run 150
"""


@pytest.mark.mpi
def test_rollback_across_migration_restores_saved_state_like_serial(tmp_path):
    """Every atom drifts 40 A/ps along x (2 ranks split x at 5.4 A): by step 100 many atoms have
    changed owner. The guard is made to trip at step 100 (test engine): the state saved at step 0
    comes back on every rank, each atom on the rank that owned it then, with velocities redrawn by
    atom ID; 1 and 2 ranks give the same state after the rollback and 50 steps later."""
    params = random_parameters(BasisSpec(species=("Si",), r_cut=3.8, n_max=4, l_max=2), n_members=4, seed=2)
    frames = {}
    for ranks in (1, 2):
        work = tmp_path / f"np{ranks}"
        work.mkdir()
        params.save(work / "params.npz")
        write_data(si64(0.05, 1), work / "cell.data", ("Si",))
        run_lmp(DRIFT, work, ranks=ranks, PYTHONPATH=str(TESTS / "lammps"), PYLAL_TRIP_STEPS="100")
        frames[ranks] = read_dump(work / "traj.dump")
        assert thermo((work / "log.lammps").read_text())[-1]["f_ml[8]"] == 1  # one rollback
        (event,) = events_of(work / "events.jsonl")
        assert (event["step"], event["reason"], event["rollback_to"]) == (100, "non_finite", 0)
        flag = ase.io.read(work / "flags" / "flag_0000000100.xyz")
        assert flag.info["guard"] == "non_finite" and flag.info["rollback_to"] == 0
    two = frames[2]
    moved = two[50][:, 1] != two[0][:, 1]
    assert moved.sum() >= 8, "atoms should have changed rank before the rollback"
    # after the rollback (dumped at the end of step 100): the saved positions, on the saving ranks
    np.testing.assert_allclose(two[100][:, 2:5], two[0][:, 2:5], rtol=0, atol=1e-9)
    assert (two[100][:, 1] == two[0][:, 1]).all()
    # fresh velocities (not the drift), the same on 1 and 2 ranks; so is what follows
    assert abs(two[100][:, 5].mean()) < 5.0
    np.testing.assert_allclose(two[100][:, 5:8], frames[1][100][:, 5:8], rtol=0, atol=1e-10)
    np.testing.assert_allclose(two[150][:, 2:8], frames[1][150][:, 2:8], rtol=0, atol=1e-7)
    # the checkpoint (the state saved at set-up) reads back into LAMMPS as that state
    work = tmp_path / "np2"
    run_lmp("units metal\natom_style atomic\nread_data ck.data\n"
            "write_dump all custom back.dump id xu yu zu vx vy vz modify format float %22.16g\n", work)
    back = read_dump(work / "back.dump")[0]
    np.testing.assert_allclose(back[:, 1:7], two[0][:, 2:8], rtol=0, atol=1e-9)


HARD = """units metal
atom_style atomic
boundary p p p
read_data cell.data
pair_style zero 3.8
pair_coeff * *
neighbor 1.0 bin
fix hal all pylal params.npz elements Si tau_rel 0.7 tau_window 50 f_tol 100 check_every 10 seed 3 rollback_every 10 flag_dir flags event_log events.jsonl
velocity all create 3000 7 mom yes rot yes dist gaussian
fix md all nve
fix bath all langevin 3000 3000 0.1 11 zero yes
timestep 0.001
thermo_style custom step temp pe f_hal[2] f_hal[3] f_hal[6] f_hal[8]
thermo 50
dump d all custom 1 traj.dump id xu yu zu
dump_modify d format float %22.16g
run {steps}
"""


@pytest.fixture(scope="module")
def poor_committee(tmp_path_factory):
    """A committee fitted to 2 rattled SW configurations with a large basis and no repulsive prior:
    driven at 3000 K with tau_rel 0.7 its forces explode within a few hundred steps."""
    sw = make_calculator("lammps")
    train = [label(si64(0.1, i), sw).atoms for i in range(2)]
    params = fit_parameters(BasisSpec(species=("Si",), r_cut=3.8, n_max=8, l_max=4, prior=None), train, n_members=8)
    path = tmp_path_factory.mktemp("poor") / "params.npz"
    params.save(path)
    return path


@pytest.mark.mpi
def test_poor_committee_driven_hard_survives_by_rollback(poor_committee, tmp_path):
    steps = 200
    (tmp_path / "params.npz").write_bytes(poor_committee.read_bytes())
    write_data(si64(), tmp_path / "cell.data", ("Si",))
    out = run_lmp(HARD.format(steps=steps), tmp_path, ranks=2)
    log = (tmp_path / "log.lammps").read_text()
    assert out.returncode == 0 and "Lost atoms" not in log + out.stdout
    rows = thermo(log)
    assert rows[-1]["Step"] == steps
    events = events_of(tmp_path / "events.jsonl")
    print(f"{len(events)} guard events: " + "; ".join(f"step {e['step']} {e['reason']} -> {e['rollback_to']}" for e in events))
    assert events, "the poor committee at 3000 K with tau_rel 0.7 should trip the guard"
    assert rows[-1]["f_hal[8]"] == len(events)
    frames = read_dump(tmp_path / "traj.dump")
    sw = make_calculator("lammps")
    for e in events:
        # the positions after the rollback are those saved (every rank's atoms: the dump gathers them)
        np.testing.assert_allclose(frames[e["step"]][:, 1:4], frames[e["rollback_to"]][:, 1:4], rtol=0, atol=1e-9)
        # the blown-up configuration is a flag, and the reference labels it
        flag = ase.io.read(tmp_path / "flags" / f"flag_{e['step']:010d}.xyz")
        assert flag.info["guard"] == e["reason"] and len(flag) == 64
        result = label(flag, sw)
        assert result.ok and np.isfinite(result.atoms.get_potential_energy())
        label_problem(result.atoms)  # judged without error (filtered or fitted by the server)
