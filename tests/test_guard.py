"""The blow-up guard (pylal/hal/guard.py): one rule, decided by the HAL controller in its one
reduction, the same for `fix pylal`'s engine and the ASE calculator / loop."""
import json

import numpy as np
import pytest
from ase.build import molecule

from conftest import random_parameters
from pylal.ase_loop import LoopSettings, _langevin, run_segment
from pylal.calculator import PylalCalculator
from pylal.hal.controller import GUARD, PACKED, HalController, HalRule, combine_packed
from pylal.hal.guard import Guard, GuardRule, local_figures
from pylal.lammps import stat as layout
from pylal.lammps.engine import Engine
from pylal.model.basis import BasisSpec
from pylal.model.neighbors import ase_pairs
from test_ase_loop import MOL_SPEC

RULE = GuardRule(f_max=50.0, r_min=0.6, sigma_jump=10.0, skin=1.0)


def figures(f=1.0, r=2.0, step=0.01):
    forces = np.zeros((4, 3))
    forces[1, 0] = f
    pairs = np.array([[r, 0.0, 0.0], [3.0, 0.0, 0.0]])
    return local_figures(forces, pairs, step)


@pytest.mark.parametrize("local, sigma, reason", [
    (figures(f=60.0), 1.0, "forces"),
    (figures(f=np.nan), 1.0, "non_finite"),
    (figures(r=0.38), 1.0, "close_contact"),
    (figures(step=0.6), 1.0, "displacement"),  # more than half the 1.0 A skin in one step
    (figures(), 25.0, "sigma_jump"),  # 25x the last accepted sigma (1.0)
    (figures(f=49.0, r=0.61, step=0.49), 9.0, None),  # just inside every limit
])
def test_each_rule_trips_with_its_reason(local, sigma, reason):
    guard = Guard(RULE)
    assert guard.check(figures(), 1.0) is None  # an accepted step: sigma reference 1.0
    event = guard.check(local, sigma)
    assert (event.reason if event else None) == reason
    assert guard.n_events == (reason is not None)


def test_guard_off_keywords_and_reset():
    guard = Guard(GuardRule(f_max=None, r_min=None, sigma_jump=None, skin=None))
    assert guard.check(figures(f=1e4, r=0.1, step=5.0), 1.0) is None
    guard = Guard(RULE)
    guard.check(figures(), 1.0)
    guard.reset()  # after a swap or rollback the old sigma is no reference
    assert guard.check(figures(), 100.0) is None


def test_guard_figures_reduce_over_processes_like_one_process():
    """Two halves of a configuration, packed and combined by the controller's operation, give the
    figures of the whole (max |F|, shortest pair, longest step)."""
    rng = np.random.default_rng(0)
    forces, pairs = rng.normal(size=(20, 3)) * 5, rng.uniform(0.5, 3.0, size=(60, 3))
    steps = (0.02, 0.07)
    whole = local_figures(forces, pairs, max(steps))
    parts = [np.array([0.0, 0.0, 10.0, *local_figures(forces[s], pairs[p], st), -np.inf, 0.0])
             for s, p, st in ((slice(0, 10), slice(0, 30), steps[0]), (slice(10, 20), slice(30, 60), steps[1]))]
    assert len(parts[0]) == len(PACKED)
    np.testing.assert_allclose(combine_packed(*parts)[GUARD], whole)


@pytest.mark.parametrize("check", ["check_every 0", "check_every 1 f_tol 0"])
def test_ase_calculator_and_lammps_engine_trip_on_the_same_rule(tmp_path, monkeypatch, check):
    """The same configuration and guard_fmax through the calculator (ASE path) and the engine of
    fix pylal (serial, fed as the plugin feeds it): both reject it for 'forces'; the engine flags
    it (a guard flag file) and, with no saved state yet, asks for no rollback. On a check step
    whose f_i also flags (f_tol 0) it is still one flag file, counted once (the check's flag used to be
    counted first: the guard path then saw no cool-down and sent nothing, or with a rollback counted twice)."""
    monkeypatch.chdir(tmp_path)
    spec = BasisSpec(species=("Si",), r_cut=3.8, n_max=4, l_max=2)
    params = random_parameters(spec, n_members=4, seed=1)
    params.save("params.npz")
    from ase.build import bulk
    atoms = bulk("Si", "diamond", 5.431, cubic=True)
    atoms.rattle(0.2, seed=1)
    calc = PylalCalculator(params, tau=0.0, check_every=0, guard=GuardRule(f_max=1e-3))
    probe = atoms.copy()
    probe.calc = calc
    probe.get_forces()
    assert calc.decision.guard is not None and calc.decision.guard.reason == "forces"

    engine = Engine(f"params.npz elements Si tau 0 {check} guard_fmax 0.001 event_log events.jsonl "
                    "flag_dir flags watch none exit_file none".split(), ntypes=1)
    stat = np.zeros(layout.SIZE)
    stat[layout.INDEX["saved_step"]] = -1  # the caller's: nothing saved yet
    pairs = ase_pairs(atoms, spec.r_cut, spec.species)
    n = len(atoms)
    box = np.array([0, 0, 0, *np.diag(atoms.cell), 0, 0, 0, 1, 1, 1], dtype=float)
    engine.evaluate(0, n, n, np.ascontiguousarray(atoms.positions), np.ones(n, dtype=np.int32),
                    np.arange(1, n + 1, dtype=np.int32), pairs.centers.astype(np.int32),
                    pairs.neighbors.astype(np.int32), np.ascontiguousarray(pairs.vectors), box, stat)
    record = engine.finish(np.zeros((n, 3)), np.zeros((n, 3)), stat)
    assert stat[layout.INDEX["rollback"]] == -1.0  # rejected; nothing saved to go back to
    assert stat[layout.INDEX["guard_events"]] == 1 and engine.n_flags == 1 == stat[layout.INDEX["flags"]]
    assert record.decision.flag and record.decision.guard.reason == "forces"
    # finish only computes: the flag and the event are written by end_of_step
    assert not list((tmp_path / "flags").glob("flag_*.xyz")) and not (tmp_path / "events.jsonl").exists()
    engine.end_of_step(stat)
    assert len(list((tmp_path / "flags").glob("flag_*.xyz"))) == 1
    (event,) = [json.loads(line) for line in open("events.jsonl")]
    assert event["reason"] == "forces" and event["rollback_to"] is None
    assert event["detail"].startswith("forces")


def test_ase_segment_reports_the_last_good_state():
    """run_segment: the guard trips on the third check step; the last good state is the
    configuration of the second (where the loop resumes, as fix pylal rolls back)."""
    params = random_parameters(MOL_SPEC, spread=0.05)
    calc = PylalCalculator(params, tau=0.0, check_every=5)
    atoms = molecule("CH3CH2OH")
    atoms.calc = calc
    seen = []

    def guard(a):
        seen.append(a.get_positions())
        return "third check" if len(seen) == 3 else None

    settings = LoopSettings(temperature=300, check_every=5, f_tol=1e9, guard=guard)
    seg = run_segment(_langevin(atoms, settings, np.random.default_rng(0)), calc, 40, settings)
    assert (seg.event, seg.steps, seg.detail) == ("guard", 15, "third check")
    np.testing.assert_array_equal(seg.last_good[0], seen[1])


def test_labels_of_blown_up_configurations_stay_out_of_fits():
    """The Stillinger-Weber reference on a diamond cell with two atoms pushed 0.4 A apart (as in
    the demo's broken labels) gives forces far beyond max_label_force: the label is kept out of the
    fit; the same cell thermally rattled is fitted."""
    from ase.build import bulk

    from pylal.fit.checks import label_problem
    from pylal.reference import label, make_calculator

    sw = make_calculator("lammps")
    atoms = bulk("Si", "diamond", 5.431, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=0)
    assert label_problem(label(atoms, sw).atoms) is None
    broken = atoms.copy()
    neighbour = np.argsort(broken.get_distances(0, range(1, len(broken)), mic=True))[0] + 1
    d = broken.get_distance(0, neighbour, mic=True, vector=True)
    broken.positions[neighbour] = broken.positions[0] + 0.4 * d / np.linalg.norm(d)
    problem = label_problem(label(broken, sw).atoms)
    assert problem is not None and "max_label_force" in problem


def test_the_controller_flags_guard_events_under_the_one_cooldown():
    """With flag_guard, a guard event is a flag the controller decides like a flag of f_i: both wait
    out the same cooldown after either kind; a step the host rolls back is flagged regardless (the
    rollback keeps it from recurring) and burns adaptive tau in again."""
    rng = np.random.default_rng(0)
    rule = HalRule(tau_rel=0.1, tau_window=2, check_every=1, s_tol=None, f_tol=0.0, cooldown=10, flag_guard=True)
    hal = HalController(rule, guard=Guard(GuardRule(f_max=50.0, r_min=None, sigma_jump=None)))

    def decide(step, trip=False, rollback=False):
        f = rng.normal(size=(20, 3))
        members = f[None] + 0.3 * rng.normal(size=(4, 20, 3))
        figures = local_figures(f * (1000.0 if trip else 1.0), None, 0.0)
        return hal.decide(step, f, f, members, spread=0.1, guard_figures=figures, rollback=rollback)

    flags = {}
    for step, trip in ((0, False), (3, True), (10, True), (12, False), (20, False)):
        d = decide(step, trip)
        assert (d.guard is not None) == trip and d.check
        flags[step] = d.flag
    # f_i flags at 0; the guard event at 3 is within its cooldown, the one at 10 is not; the f_i
    # flag due at 12 is within the guard flag's cooldown
    assert flags == {0: True, 3: False, 10: True, 12: False, 20: True}
    assert hal.n_flags == 3 and hal.guard.n_events == 2
    for step in range(21, 26):  # adaptive tau's window fills (flags held back by the cooldown)
        assert not decide(step).flag
    assert hal.current_tau() > 0
    rolled = decide(26, trip=True, rollback=True)  # within the cooldown of step 20, but rolled back
    assert rolled.flag and hal.n_flags == 4 and hal.current_tau() == 0.0


def test_a_guard_event_is_no_flag_without_flag_guard():
    """The ASE calculator's rule (flag_guard off): the guard only reports; no flag is counted."""
    hal = HalController(HalRule(check_every=0), guard=Guard(GuardRule(f_max=1.0)))
    f = np.full((4, 3), 10.0)
    d = hal.decide(0, f, guard_figures=local_figures(f, None, 0.0))
    assert d.guard is not None and not d.flag and hal.n_flags == 0
