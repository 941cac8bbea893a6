"""The ASE HAL loop: flags seen after a refit, verification phase and step accounting, molecules, guard."""
import numpy as np
import pytest
from ase.build import molecule
from ase.io import read

from pylal.calculator import PylalCalculator
from pylal.ase_loop import LoopSettings, _langevin, hal_loop, run_segment
from pylal.model.basis import BasisSpec
from pylal.reference import label, make_calculator
from conftest import random_parameters

MOL_SPEC = BasisSpec(species=("H", "C", "O"), r_cut=3.5, r_min=0.7, n_max=3, l_max=1, prior=(0.5, 0.8))


def test_run_segment_sees_every_check_step_after_a_refit():
    """A refit clears the calculator's cache, so the next MD step makes one extra force call and the
    check steps (every check_every calls) shift; they must still be seen (the loop used to look only
    at the last call of each chunk and then never flagged again)."""
    params = random_parameters(MOL_SPEC, spread=0.05)
    calc = PylalCalculator(params, tau=0.0, check_every=5)
    atoms = molecule("CH3CH2OH")
    atoms.calc = calc
    settings = LoopSettings(temperature=300, check_every=5, f_tol=-1.0)  # any check step triggers
    dyn = _langevin(atoms, settings, np.random.default_rng(0))
    first = run_segment(dyn, calc, 20, settings)
    assert first.event == "flag" and first.steps <= 5
    for _ in range(3):
        calc.set_parameters(params)  # as after a refit
        seg = run_segment(dyn, calc, 20, settings)
        assert seg.event == "flag" and seg.steps <= 5
    quiet = LoopSettings(temperature=300, check_every=5, f_tol=1e9)
    seg = run_segment(dyn, calc, 12, quiet)
    assert seg.event is None and seg.steps == 12 and seg.f_max > 0


@pytest.fixture(scope="module")
def emt_molecule():
    reference = make_calculator("emt")  # has H, C, O parameters: a cheap multi-species molecular oracle
    start = molecule("CH3CH2OH")
    start.pbc = False
    initial = []
    for seed in range(3):
        a = start.copy()
        a.rattle(0.05, seed=seed)
        initial.append(label(a, reference).atoms)
    return reference, start, initial


def test_hal_loop_on_a_molecule_flags_labels_and_counts(tmp_path, emt_molecule):
    reference, start, initial = emt_molecule
    assert "stress" not in initial[0].calc.results  # non-periodic: no stress label
    settings = LoopSettings(temperature=300, tau_rel=0.1, tau_window=10, n_members=8, f_tol=0.1,
                            stable_steps=40, verify_steps=60, max_labels=7, max_steps=400, seed=1)
    s = hal_loop(MOL_SPEC, reference, initial, start, initial[:1], settings, tmp_path, log=lambda m: None)
    assert s["stop"] in ("stable", "max_labels", "max_steps")
    assert s["reference_calls"] == s["labels"] + s["failed"] <= settings.max_labels
    assert s["exploratory_steps"] == s["learn_steps"] + s["verify_failed_steps"] <= settings.max_steps
    assert s["md_steps"] == s["exploratory_steps"] + s["verify_passed_steps"]
    assert s["versions"] == len(s["history"]) + 1
    if s["stable"]:
        assert s["verify_passed_steps"] == settings.verify_steps
    assert s["history"], "a 3-configuration committee at 300 K should flag (f_tol 0.1)"
    steps = [h["steps"] for h in s["history"]]
    assert steps == sorted(steps) and {h["phase"] for h in s["history"]} <= {"learn", "verify"}
    flagged = read(tmp_path / "flagged.xyz", index=":")
    assert len(flagged) == s["labels"] - len(initial) and all(not a.pbc.any() for a in flagged)


def test_failed_verification_is_labelled_and_counted_as_exploration(tmp_path, emt_molecule):
    """Learning never flags (huge f_tol); the first verification run is stopped by the guard at its
    first check step, labelled, learning resumes, and the second verification passes."""
    reference, start, initial = emt_molecule
    trips = []

    def guard(atoms):
        if atoms.calc.adaptive is None and not trips:  # verification calculator: fixed tau = 0
            trips.append(atoms.copy())
            return "verification trip"
        return None

    settings = LoopSettings(temperature=300, tau_rel=0.1, n_members=8, f_tol=1e9, stable_steps=20,
                            verify_steps=30, max_labels=10, guard=guard, check_every=5)
    s = hal_loop(MOL_SPEC, reference, initial, start, None, settings, tmp_path, log=lambda m: None)
    assert s["stable"] and s["labels"] == len(initial) + 1
    assert [(h["phase"], h["event"]) for h in s["history"]] == [("verify", "guard")]
    assert (s["learn_steps"], s["verify_failed_steps"], s["verify_passed_steps"]) == (40, 5, 30)
    assert s["exploratory_steps"] == 45 and s["md_steps"] == 75
    flagged = read(tmp_path / "flagged.xyz")
    np.testing.assert_allclose(flagged.positions, trips[0].positions, atol=1e-6)  # the verification configuration


def test_guard_events_are_labelled_and_restart_from_start(tmp_path, emt_molecule):
    reference, start, initial = emt_molecule
    seen = []

    def guard(atoms):
        seen.append(np.linalg.norm(atoms.positions - start.positions, axis=1).max())
        return "test guard"

    settings = LoopSettings(temperature=300, tau_rel=0.0, n_members=8, f_tol=1e9, stable_steps=50,
                            max_labels=5, guard=guard, check_every=5)
    s = hal_loop(MOL_SPEC, reference, initial, start, None, settings, tmp_path, log=lambda m: None)
    assert s["stop"] == "max_labels" and s["labels"] == 5 and not s["stable"]
    assert [h["event"] for h in s["history"]] == ["guard", "guard"]
    assert s["learn_steps"] <= 2 * settings.check_every + 1
    assert max(seen) < 0.5  # every segment restarted from the start geometry
