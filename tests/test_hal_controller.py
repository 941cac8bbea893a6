"""One HAL controller for every path (pylal/hal/controller.py): the same trajectory through `fix
pylal` in LAMMPS and through the ASE calculator gives the same tau, f_i and flag steps; a check
step reduces the HAL scalars with one allreduce."""
import re

import numpy as np
import pytest

from conftest import random_parameters
from lammps_util import read_dump, run_lmp, thermo, write_data
from pylal.calculator import PylalCalculator
from pylal.hal.controller import HalController, HalRule, combine_packed
from pylal.lammps import stat as layout
from pylal.lammps.engine import Engine
from pylal.model.neighbors import ase_pairs
from test_fix_pylal import ELEMENTS, SPEC, deck, sic_cell

HAL = dict(tau_rel=0.1, tau_window=10, check_every=5, cooldown=10)


def test_lammps_and_ase_paths_decide_the_same(tmp_path):
    """60 steps of biased NVE in LAMMPS (adaptive tau, f_tol, cooldown); replaying its positions
    through PylalCalculator gives tau at every step, f_i at every check step (1e-9) and the same
    flag steps."""
    params = random_parameters(SPEC, n_members=8, seed=1)
    params.save(tmp_path / "params.npz")
    atoms = sic_cell()
    write_data(atoms, tmp_path / "cell.data", ELEMENTS)
    probe = atoms.copy()
    probe.calc = PylalCalculator(params, check_every=1)
    probe.get_potential_energy()
    f_tol = 0.9 * probe.calc.results["f_max"]  # some check steps flag, the cooldown holds back others

    args = " ".join(f"{k} {v}" for k, v in HAL.items()) + f" f_tol {f_tol!r} flag_dir flags"
    extra = ("velocity all create 1200 5 loop geom\nfix nve all nve\nthermo 1\n"
             "dump p all custom 1 pos.dump id x y z\ndump_modify p format float %22.16g\n"
             "dump f all custom 5 fi.dump id f_ml[1]\ndump_modify f format float %22.16g")
    run_lmp(deck(args, run="run 60", extra=extra), tmp_path)
    rows = {int(r["Step"]): r for r in thermo((tmp_path / "log.lammps").read_text())}
    positions, f_i = read_dump(tmp_path / "pos.dump"), read_dump(tmp_path / "fi.dump")
    lammps_flags = sorted(int(re.findall(r"\d+", p.name)[0]) for p in (tmp_path / "flags").glob("flag_*.xyz"))

    calc = PylalCalculator(params, f_tol=f_tol, **HAL)
    ase_flags = []
    for step in range(61):
        atoms.positions = positions[step][:, 1:4]
        atoms.calc = calc
        atoms.get_potential_energy()
        assert calc.results["tau"] == pytest.approx(rows[step]["f_ml[3]"], rel=1e-9, abs=1e-12), step
        if step % HAL["check_every"] == 0:
            assert np.abs(calc.results["f_i"] - f_i[step][:, 1]).max() < 1e-9, step
            ase_flags += [step] if calc.decision.flag else []
    assert rows[60]["f_ml[3]"] > 0  # tau switched on after its window
    assert ase_flags == lammps_flags and 0 < len(ase_flags) < 13
    assert rows[60]["f_ml[6]"] == len(lammps_flags)


class CountingComm:
    """A one-process communicator that claims two ranks (so the engine takes its MPI paths) and
    counts every collective."""

    def __init__(self):
        from mpi4py import MPI

        self.mpi, self.calls = MPI, []

    def Get_size(self):
        return 2

    def Get_rank(self):
        return 0

    def Allreduce(self, send, recv, op):
        self.calls.append("allreduce_sum" if op == self.mpi.SUM else "allreduce_hal")
        self.mpi.COMM_SELF.Allreduce(send, recv, op=op)

    def allreduce(self, obj, op):
        self.calls.append("allreduce_object")
        return obj

    def bcast(self, obj, root=0):
        self.calls.append("bcast")
        return obj

    def gather(self, obj, root=0):
        self.calls.append("gather")
        return [obj]


@pytest.mark.parametrize("eps, hal_reductions", [("eps 0.5", 1), ("", 2)])
def test_one_allreduce_for_the_hal_scalars_of_a_check_step(tmp_path, monkeypatch, eps, hal_reductions):
    """Adaptive tau, check every 5 steps: each step makes one allreduce for the committee energies
    (inside the compiled step) and one for the HAL scalars (sum |F_bar|, sum |grad sigma|, atom count,
    max f_i and sum exp f_i, packed); a given eps keeps a check step at one, the default eps (global
    mean |F_bar|, needed before f_i exists) adds one."""
    monkeypatch.chdir(tmp_path)
    params = random_parameters(SPEC, n_members=8, seed=1)
    params.save("params.npz")
    atoms = sic_cell()
    comm = CountingComm()
    engine = Engine(f"params.npz elements Si C tau_rel 0.1 tau_window 3 check_every 5 f_tol 100 {eps} "
                    "watch none exit_file none".split(), comm=comm, ntypes=2)
    pairs = ase_pairs(atoms, SPEC.r_cut, SPEC.species)
    n = len(atoms)
    stat = np.zeros(layout.SIZE)
    calls = {}
    for step in range(11):
        comm.calls.clear()
        engine.evaluate(step, n, n, np.ascontiguousarray(atoms.positions), (pairs.species + 1).astype(np.int32),
                        np.arange(1, n + 1, dtype=np.int32), pairs.centers.astype(np.int32),
                        pairs.neighbors.astype(np.int32), np.ascontiguousarray(pairs.vectors), np.zeros(12), stat)
        engine.finish(np.zeros((n, 3)), np.zeros((n, 3)), stat)
        calls[step] = list(comm.calls)
    for step, made in calls.items():
        expected = hal_reductions if step % 5 == 0 else 1
        assert made.count("allreduce_hal") == expected, (step, made)
        assert made.count("allreduce_sum") == 1, (step, made)  # the committee energies
        assert len(made) == 1 + expected, (step, made)  # nothing else: no watch file, server or stop file


def test_controller_reduction_split_over_processes_equals_serial():
    """Two halves of a configuration, their packed vectors merged by combine_packed, decide as one
    (given eps: one reduction per check step)."""
    rng = np.random.default_rng(3)
    f_mean, grad = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    members = f_mean[None] + 0.3 * rng.normal(size=(8, 40, 3))
    rule = HalRule(tau_rel=0.1, tau_window=1, f_tol=0.5, eps=0.7)
    serial = HalController(rule).decide(0, f_mean, grad, members, spread=0.1)
    halves = [slice(0, 17), slice(17, 40)]
    parts = [HalController(rule) for _ in halves]
    # one process per half; the reduction sees the other half's packed vector, computed by a twin
    twins = [HalController(rule) for _ in halves]
    decisions = []
    for k, (controller, sl) in enumerate(zip(parts, halves)):
        other = halves[1 - k]
        seen = []

        def capture(packed, seen=seen):
            seen.append(packed)
            return packed

        twins[1 - k].reduce = capture
        twins[1 - k].decide(0, f_mean[other], grad[other], members[:, other], spread=0.1)
        calls = iter(seen)
        controller.reduce = lambda packed, calls=calls: combine_packed(packed, next(calls))
        decisions.append(controller.decide(0, f_mean[sl], grad[sl], members[:, sl], spread=0.1))
    for d in decisions:
        assert d.f_max == pytest.approx(serial.f_max, rel=1e-12)
        assert d.softmax == pytest.approx(serial.softmax, rel=1e-12)
        assert d.tau_next == pytest.approx(serial.tau_next, rel=1e-12) and d.flag == serial.flag
    np.testing.assert_allclose(np.concatenate([d.f_i for d in decisions]), serial.f_i, rtol=1e-12)


def test_finish_only_computes_and_end_of_step_acts(tmp_path, monkeypatch):
    """A flagged check step with a trace and an existing stop file: finish() returns the decision
    record and writes nothing (no flag file, no trace row, no stop); end_of_step() sends the flag,
    writes the trace row and asks the caller to stop."""
    monkeypatch.chdir(tmp_path)
    random_parameters(SPEC, n_members=4, seed=1).save("params.npz")
    (tmp_path / "STOP").write_text("")
    engine = Engine("params.npz elements Si C tau 0 check_every 1 f_tol 0 flag_dir flags trace trace.csv "
                    "stop_file STOP watch none exit_file none".split(), ntypes=2)
    atoms = sic_cell()
    pairs = ase_pairs(atoms, SPEC.r_cut, SPEC.species)
    n = len(atoms)
    stat = np.zeros(layout.SIZE)
    stat[layout.INDEX["saved_step"]] = -1
    engine.evaluate(0, n, n, np.ascontiguousarray(atoms.positions), (pairs.species + 1).astype(np.int32),
                    np.arange(1, n + 1, dtype=np.int32), pairs.centers.astype(np.int32),
                    pairs.neighbors.astype(np.int32), np.ascontiguousarray(pairs.vectors), np.zeros(12), stat)
    forces = np.zeros((n, 3))
    record = engine.finish(forces, np.zeros((n, 3)), stat)
    assert record.decision.flag and record.decision.check and np.abs(forces).max() > 0
    assert engine.n_flags == 1 == stat[layout.INDEX["flags"]] and stat[layout.INDEX["stop"]] == 0
    assert not list((tmp_path / "flags").glob("flag_*.xyz")) and not (tmp_path / "trace.csv").exists()
    engine.end_of_step(stat)
    assert len(list((tmp_path / "flags").glob("flag_*.xyz"))) == 1
    assert len((tmp_path / "trace.csv").read_text().splitlines()) == 2  # header + the step
    assert stat[layout.INDEX["stop"]] == 1.0
