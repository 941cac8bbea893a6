"""The per-rank engine behind `fix pylal` (C++ plugin) and the python/invoke callback: it moves
data between LAMMPS, the model (pylal.model.committee), the HAL controller (pylal.hal.controller,
which decides tau, f_i and flags) and the walker side (pylal.lammps.walker: hot-swap, flags,
trace, stop file, wait, exit record).

Each step LAMMPS calls, on every rank:
  evaluate()  owned + ghost atoms and the pairs of LAMMPS's full list (owned centres only).
              Returns a buffer (n_all, ncol) of forces on owned AND ghost atoms; the caller
              reverse-communicates it (sums ghost rows onto their owners).
              Columns: [F_bar | grad sigma~ (when biased or checking) | F^k, k = 1..K (check steps)].
              The K committee energies are summed over ranks inside the jitted step (one
              allreduce), so E_bar, sigma and the bias coefficients are global.
  finish()    the owned rows, now complete: the controller decides (adaptive tau, and on check
              steps f_i, HAL eq. 6, and every flag, with one packed allreduce), the engine adds
              F_HAL = F_bar + tau grad sigma~ to LAMMPS's forces and returns the decision record
              (StepRecord). It only computes: LAMMPS is inside its force call.
  end_of_step()  after the step, where `fix halt` acts: sends the record's flag, writes the trace
              and event log, waits for a new version (on_flag wait), reads the stop file, and sets
              stat `stop` when the run must end.
Per-step scalars go back through `stat`, a small float64 array owned by the caller
(pylal/lammps/stat.py); the run's constants come once from describe().

A parameter file with a LAMMPS prior (pylal.prior) needs that pair style in the deck: init() of the
fix asks prior_styles(), looks them up in LAMMPS's pair style (force->pair_match) and calls
check_pair_style(), which refuses to run without it and prints the lines to add. With a prior,
the force array LAMMPS passes to finish() already holds the prior's forces (the pair style ran
first), so f_i's denominator and adaptive tau use that total mean force, as PylalCalculator does.

Re-evaluating a step (LAMMPS's setup after `run`, `read_restart`) reuses that step's tau and
neither updates tau nor flags again, so `run 100; run 100` equals `run 200`.

Guard and rollback (docs/fix_pylal.md): finish() hands the controller this rank's guard figures
(pylal.hal.guard: max |F|, shortest pair, step length); when the guard trips, the configuration is
flagged like any flag (info `guard`; the controller decides it, under the same cooldown), and the
engine asks its caller (stat `rollback`) to restore the last good state it saved; adaptive tau burns
in again. The caller (plugin/fix_pylal.cpp) owns
the saved state, the restore and the velocity redraw; the engine writes the checkpoint file.
"""
from __future__ import annotations

import json
import os
import sys
import time


def _pin_threads():
    """One thread per MPI rank: unpinned XLA/BLAS threads oversubscribe the cores (the toolchain
    notes measured a 30x slowdown with 2 ranks on 2 cores). Only before jax is imported."""
    if "jax" in sys.modules:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


_pin_threads()

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402

from pylal.hal import physics  # noqa: E402
from pylal.hal.controller import Decision, HalController  # noqa: E402
from pylal.hal.guard import Guard, local_figures  # noqa: E402
from pylal.lammps.checkpoint import Checkpointer  # noqa: E402
from pylal.lammps import stat as layout  # noqa: E402
from pylal.lammps.comm import Collectives  # noqa: E402
from pylal.lammps.flags import lammps_cell  # noqa: E402
from pylal.lammps.settings import FixArgumentError, parse_fix_args  # noqa: E402
from pylal.lammps.walker import Walker  # noqa: E402
from pylal.model.committee import TRACE_COUNTS, CommitteeModel, step_mode  # noqa: E402
from pylal.model.neighbors import PairList  # noqa: E402
from pylal.model.params import ParameterFileError, Parameters  # noqa: E402

STATE_FORMAT = "pylal-fix-state/1"
STAT = layout.INDEX


def volume_per_atom(box: np.ndarray, natoms: float) -> float:
    """Box volume per atom (A^3) of fix pylal's box array (pylal.lammps.flags.lammps_cell)."""
    return float(abs(np.linalg.det(lammps_cell(box)[1])) / natoms) if natoms > 0 else float("nan")


def _view(buffer, dtype, shape):
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


@dataclasses.dataclass
class PendingStep:
    """What evaluate() leaves for finish() of the same step."""

    step: int
    n_local: int
    buf: np.ndarray  # (n_all, ncol) force columns, reverse-communicated in place by the caller
    tau: float
    energy: float
    sigma: float
    spread: float  # committee energy spread (HAL eq. 5 without 1/lambda)
    atom_sigma: np.ndarray | None
    x: np.ndarray
    types: np.ndarray
    tags: np.ndarray
    box: np.ndarray
    pair_vectors: np.ndarray  # this rank's pairs (for the guard's shortest distance)


@dataclasses.dataclass
class Flagged:
    """A flagged step's owned atoms, copied in finish() for end_of_step() to send."""

    tags: np.ndarray
    types: np.ndarray
    x: np.ndarray
    box: np.ndarray
    f_i: np.ndarray  # NaN off check steps (a guard event)
    bias_norm: np.ndarray

    @classmethod
    def of(cls, p: PendingStep, d: Decision) -> "Flagged":
        n, nan = p.n_local, np.full(p.n_local, np.nan)
        return cls(p.tags[:n].copy(), p.types[:n].copy(), p.x[:n].copy(), p.box,
                   d.f_i if d.f_i is not None else nan, d.bias_norm if d.bias_norm is not None else nan)


@dataclasses.dataclass
class StepRecord:
    """finish()'s decision record of one step: the controller's decision and what end_of_step() needs."""

    decision: Decision
    energy: float
    sigma: float
    volume_per_atom: float
    natoms: float  # LAMMPS's atom count (to notice lost atoms)
    rollback_to: int | None  # the guard rejected the step and the caller restores this saved step
    flagged: Flagged | None  # the configuration to send when the step is flagged


class Engine:
    def __init__(self, args: list[str], comm=None, ntypes: int | None = None):
        """args: the fix arguments after `pylal`; comm: mpi4py communicator of LAMMPS (None: serial)."""
        self.comm = Collectives(comm)
        self.rank = self.comm.rank
        self.settings = parse_fix_args(args, ntypes)
        params = self._load_collective(self.settings.params_path)
        self._check_elements(params)
        self.params_path = self.settings.params_path
        self.model = CommitteeModel(params, reduce_sum=self.comm.sum if self.comm.parallel else None)
        guard = self.settings.guard
        self.hal = HalController(self.settings.hal, reduce=self.comm.hal_reduce,
                                 guard=Guard(guard) if guard is not None else None)
        self.walker = Walker(self.settings, self.comm, params.version, params.spec.r_cut)
        self.checkpointer = Checkpointer(self.settings, self.comm) if self.settings.checkpoint else None
        self.n_swaps = 0
        self.n_rollbacks = 0
        self.n_compilations = 0
        self._lost_reported = False
        self._pending: PendingStep | None = None
        self._record: StepRecord | None = None  # of the last finish(), until end_of_step()

    def close(self):
        self.walker.close()

    def record_exit(self, reason: str, message: str = ""):
        """Called by the plugin before it raises a LAMMPS error (e.g. reason 'python_error')."""
        self.walker.record_exit(reason, message, any_rank=True)

    def _load_collective(self, path: str) -> Parameters:
        """Rank 0 reads the file; every rank gets the parameters or raises the same error."""
        result = None
        if self.rank == 0:
            try:
                result = Parameters.load(path)
            except ParameterFileError as err:
                result = f"fix pylal: {err}"
        result = self.comm.bcast(result)
        if isinstance(result, str):
            raise FixArgumentError(result)
        return result

    def _check_elements(self, params: Parameters):
        unknown = [e for e in self.settings.elements if e not in params.spec.species]
        if unknown:
            raise FixArgumentError(f"fix pylal: elements {unknown} are not in the parameter file "
                                   f"{self.settings.params_path} (its species: {list(params.spec.species)})")
        # LAMMPS type t (1-based) -> species index of the model
        self.type_species = np.array([0] + [params.spec.species.index(e) for e in self.settings.elements],
                                     dtype=np.int32)

    # ---- what the caller needs to know ----------------------------------------------------
    @property
    def params(self) -> Parameters:
        return self.model.params

    @property
    def r_cut(self) -> float:
        return self.model.spec.r_cut

    @property
    def n_flags(self) -> int:
        return self.hal.n_flags

    def log(self, text: str):
        self.walker.log(text)

    def pop_messages(self) -> str:
        return self.walker.pop_messages()

    def prior_styles(self) -> list[str]:
        """Pair style names that provide the parameter file's LAMMPS prior (empty: no prior)."""
        prior = self.params.lammps_prior
        if prior is None:
            return []
        from pylal.prior.deck import accepted_styles

        return accepted_styles(prior)

    def check_pair_style(self, pair_style: str, found) -> None:
        """Called once per run setup with LAMMPS's pair style and the prior_styles() it contains."""
        prior = self.params.lammps_prior
        if prior is not None and not list(found):
            from pylal.prior.deck import missing_prior_message

            raise FixArgumentError(missing_prior_message(prior, pair_style or "none", self.settings.elements,
                                                         self.r_cut))

    @staticmethod
    def stat_indices(names) -> list[int]:
        """The stat layout for the caller (pylal/lammps/stat.py): positions of `names`."""
        return layout.indices(names)

    def describe(self) -> dict:
        """The constants of this run, read once by the caller at set-up (the stat array carries
        per-step values only). The widest force row is fixed: a swap keeps the committee size."""
        s = self.settings
        saving = self.hal.guard is not None and s.rollback
        return dict(r_cut=self.r_cut, max_columns=6 + 3 * self.params.n_members,  # F_bar, grad sigma~, K F^k
                    check_every=s.hal.check_every, checkpoint=s.checkpoint is not None,
                    rollback_every=s.rollback_every if saving else 0,  # 0: the caller saves nothing
                    rollback_max=s.rollback_max, rollback_temp=s.rollback_temp, seed=s.seed)

    # ---- hot-swap -----------------------------------------------------------------------
    def swap(self, params: Parameters, step: int, path: str | None = None):
        """Switch to new parameters (every rank calls this at the same step)."""
        old = self.model.spec
        if (params.spec.r_cut > old.r_cut or params.spec.species != old.species
                or params.n_members != self.params.n_members):
            self.log(f"step {step}: not swapping to version {params.version}: its species, cutoff or "
                     f"committee size differ from the running model's (restart LAMMPS for those)")
            return
        if params.lammps_prior != self.params.lammps_prior:  # the deck's pair style is the old prior
            self.log(f"step {step}: not swapping to version {params.version}: its LAMMPS prior differs from "
                     f"the running one (the deck's pair style); restart LAMMPS with its lines "
                     f"(`pylal prior commands`)")
            return
        self.model.set_parameters(params)
        self.hal.burn_in()
        if self.hal.guard is not None:
            self.hal.guard.reset()  # sigma of the old committee is no reference for the new one
        self.n_swaps += 1
        if path is not None:
            self.params_path = path
        self.log(f"step {step}: swapped in parameter version {params.version} ({params.content_hash[:12]})")

    def _swap_if_new(self, new: Parameters | None, path: str | None, step: int):
        if new is not None:
            self.swap(new, step, path)

    # ---- per step -----------------------------------------------------------------------
    def is_check_step(self, step: int) -> bool:
        return self.hal.rule.is_check_step(step)

    def evaluate(self, step, n_local, n_all, x, types, tags, pair_i, pair_j, pair_vectors, box, stat,
                 n_centers=None):
        """Forces on owned + ghost atoms for this rank's pairs; returns the (n_all, ncol) buffer
        to be reverse-communicated. n_centers: centres beyond the owned atoms (ghost centres that
        only complete forces, used by the python/invoke path); default n_local."""
        step = int(step)
        check = self.hal.wants_members(step)
        if check:
            self._swap_if_new(*self.walker.poll(step, self.params), step)
        centers = np.frombuffer(pair_i, dtype=np.int32)
        n_pairs = len(centers)
        x = _view(x, np.float64, (n_all, 3))
        types = _view(types, np.int32, (n_all,))
        pairs = PairList(vectors=_view(pair_vectors, np.float64, (n_pairs, 3)), centers=centers,
                         neighbors=_view(pair_j, np.int32, (n_pairs,)),
                         species=self.type_species[types],
                         n_centers=n_local if n_centers is None else int(n_centers))
        tau = self.hal.tau_at(step)
        with_bias = self.hal.rule.biased or check
        compiled, t0 = sum(TRACE_COUNTS.values()), time.perf_counter()
        res = self.model.step(pairs, tau=tau, members=check, bias=with_bias, n_energy_centers=n_local)
        if sum(TRACE_COUNTS.values()) > compiled:  # MD stalls meanwhile (seconds, more for ACE): say why
            self.n_compilations += 1
            self.log(f"step {step}: compiled the committee step ({step_mode(check, with_bias)}, {pairs.n_atoms} atoms, "
                     f"{n_pairs} pairs) in {time.perf_counter() - t0:.1f} s; compilation {self.n_compilations} on rank 0")

        columns = [res.forces_mean] + ([res.grad_sigma] if with_bias else [])
        if check:
            columns.append(np.transpose(res.member_forces, (1, 0, 2)).reshape(n_all, -1))
        buf = np.ascontiguousarray(np.concatenate(columns, axis=1))

        out = _view(stat, np.float64, (layout.SIZE,))
        out[STAT["e_hal"]], out[STAT["e"]], out[STAT["sigma"]], out[STAT["tau"]] = res.energy_hal, res.energy, res.sigma, tau
        w = res.virial  # of F_HAL
        out[layout.VIRIAL:layout.VIRIAL + 6] = (w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2])
        out[STAT["version"]] = self.params.version
        out[STAT["swaps"]] = self.n_swaps
        self._pending = PendingStep(step, n_local, buf, tau, res.energy, res.sigma, res.spread, res.atom_sigma,
                                    x, types, _view(tags, np.int32, (n_all,)), np.array(_view(box, np.float64, (12,))),
                                    pairs.vectors)
        return buf

    def finish(self, forces, peratom, stat) -> StepRecord:
        """Adds F_HAL to the owned atoms' forces (n_local, 3); fills the per-atom array (f_i, atom
        sigma, |F_bias|) on check steps and the step's stat. Returns the decision record, which
        end_of_step() acts on: nothing here writes, sends, waits or stops (LAMMPS is in its force call)."""
        p, self._pending = self._pending, None
        n = p.n_local
        owned = p.buf[:n]
        f_learned = owned[:, 0:3]
        grad_sigma = owned[:, 3:6] if owned.shape[1] >= 6 else None
        f_lammps = _view(forces, np.float64, (n, 3))
        # with a LAMMPS prior, what LAMMPS holds now is the pair style's prior force (Shuaibi eq. 4):
        # part of the total unbiased force F_bar (f_i's denominator, adaptive tau) and of every F^k
        f_prior = f_lammps.copy() if self.params.lammps_prior is not None else 0.0
        members = None
        if owned.shape[1] > 6:
            members = np.transpose(owned[:, 6:].reshape(n, -1, 3), (1, 0, 2)) + f_prior
        out = _view(stat, np.float64, (layout.SIZE,))
        f_hal = physics.hal_forces(f_learned, grad_sigma, p.tau)
        figures = None
        if self.hal.guard is not None:  # what the integrator will use: LAMMPS's forces so far + F_HAL
            self._set_skin(out[STAT["skin"]])
            figures = self._guard_figures(p, f_lammps + f_hal, out[STAT["step_length"]])
        saved = int(out[STAT["saved_step"]])
        rollback = self.settings.rollback and saved >= 0  # the caller can restore a good state
        d = self.hal.decide(p.step, f_learned + f_prior, grad_sigma, members, p.spread, guard_figures=figures,
                            rollback=rollback)
        f_lammps[:] += f_hal
        self.walker.last_step = p.step
        rolled = d.guard is not None and rollback
        if rolled:
            self.n_rollbacks += 1
        if d.check and d.guard is None and peratom is not None:
            _view(peratom, np.float64, (n, 3))[:] = np.column_stack([d.f_i, p.atom_sigma[:n], d.bias_norm])
        self._record = StepRecord(d, p.energy, p.sigma, volume_per_atom(p.box, out[STAT["natoms"]]),
                                  float(out[STAT["natoms"]]), saved if rolled else None,
                                  Flagged.of(p, d) if d.flag else None)
        self._write_stat(out, d, rolled)
        return self._record

    def _write_stat(self, out, d: Decision, rolled: bool):
        """The decided step's scalars for the caller."""
        out[STAT["rollback"]] = 0.0 if d.guard is None else 1.0 if rolled else -1.0  # -1: do not save this state
        out[STAT["f_max"]], out[STAT["softmax"]], out[STAT["flags"]] = d.f_max, d.softmax, self.n_flags
        out[STAT["rollbacks"]] = self.n_rollbacks
        out[STAT["guard_events"]] = self.hal.guard.n_events if self.hal.guard is not None else 0
        out[STAT["messages"]] = len(self.walker.messages)

    def _guard_figures(self, p: PendingStep, forces, step_length: float):
        """This rank's part of the guard's figures (pylal.hal.guard.local_figures)."""
        return local_figures(forces, p.pair_vectors, step_length)

    def _set_skin(self, skin: float):
        rule = self.hal.guard.rule
        if skin > 0 and rule.skin != skin:
            self.hal.guard.rule = dataclasses.replace(rule, skin=float(skin))

    def end_of_step(self, stat) -> None:
        """After the step (LAMMPS's end_of_step, where `fix halt` acts; collective): acts on finish()'s
        record. Sends the flag, writes the trace and event log, waits for a new version (on_flag
        wait), reads the stop file; sets stat `stop` when the run must end."""
        out = _view(stat, np.float64, (layout.SIZE,))
        out[STAT["stop"]] = 0.0
        r, self._record = self._record, None
        if r is None:
            return
        self._notice_lost_atoms(r.decision, r.natoms)
        if r.decision.guard is not None:
            self._after_guard(r)
        elif r.decision.check:
            out[STAT["stop"]] = float(self._after_check(r))
        out[STAT["messages"]] = len(self.walker.messages)

    def _after_guard(self, r: StepRecord):
        """The guard rejected the step: send its flag (the controller decided it) and log why."""
        d, event, saved = r.decision, r.decision.guard, r.rollback_to
        if d.flag:
            self._send_flag(r, guard=event.reason, guard_detail=event.describe(),
                            rollback_to=saved if saved is not None else -1)
            self._trace_row(r)
        action = f"rolling back to step {saved}" if saved is not None else (
            "no saved state yet: continuing" if self.settings.rollback else "rollback no: continuing")
        self.log(f"step {d.step}: guard: {event.describe()}; {action}")
        self.walker.record_event(dict(event="guard", step=d.step, reason=event.reason, detail=event.describe(),
                                      rollback_to=saved, version=self.params.version))
        if d.flag and self.settings.on_flag == "wait":
            self._wait(d.step)

    def _after_check(self, r: StepRecord) -> bool:
        """A check step: send its flag, write the trace row, wait or stop; True: end the run."""
        d, s = r.decision, self.settings
        if d.flag:
            self._send_flag(r)
        if d.stop:
            self.walker.record_exit("flag_stop", f"flag {self.n_flags} with on_flag stop")
        self._trace_row(r)
        if d.flag and s.on_flag == "wait":
            self._wait(d.step)
        if self.walker.stop_requested():
            self.log(f"step {d.step}: stop file {s.stop_file} exists; ending the run")
            self.walker.record_exit("stop_file", f"stop file {s.stop_file} exists")
            return True
        return d.stop

    def _send_flag(self, r: StepRecord, **extra):
        d, a = r.decision, r.flagged
        info = dict(step=d.step, sigma=r.sigma, f_max=d.f_max, softmax=d.softmax, tau=d.tau,
                    params_version=self.params.version, params_hash=self.params.content_hash,
                    seed=self.settings.seed, n_ranks=self.comm.size, **extra)
        self.walker.send_flag(self.n_flags, d.step, a.tags, a.types, a.x, a.box, a.f_i, a.bias_norm, info)

    def _trace_row(self, r: StepRecord):
        d = r.decision
        self.walker.trace_row(d.step, self.params.version, d.tau, r.energy, r.sigma, d.f_max, d.softmax,
                              self.n_flags, d.flag, r.volume_per_atom)

    def _wait(self, step: int):
        """on_flag wait: hold until the server publishes a newer version, and swap it in."""
        self._swap_if_new(*self.walker.wait_for_version(step, self.params.version), step)

    def checkpoint(self, step, n_local, tags, types, x, v, image, box, masses) -> None:
        """Called by the caller right after it saved a good state on a check step (collective):
        writes the `checkpoint` data file when `checkpoint_every` seconds have passed."""
        if self.checkpointer is None:
            return
        n = int(n_local)
        self.checkpointer.maybe_write(int(step), _view(tags, np.int32, (n,)), _view(types, np.int32, (n,)),
                                      _view(x, np.float64, (n, 3)), _view(v, np.float64, (n, 3)),
                                      _view(image, np.int32, (n, 3)), np.array(_view(box, np.float64, (12,))),
                                      np.array(_view(masses, np.float64, (-1,))))

    def _notice_lost_atoms(self, d, natoms: float):
        """The controller's reduction counted the atoms; fewer than LAMMPS's total means lost atoms
        (LAMMPS itself stops at its next thermo output)."""
        if d.n_atoms is None or natoms <= 0 or d.n_atoms >= natoms or self._lost_reported:
            return
        self._lost_reported = True
        message = f"lost atoms: {natoms:.0f} in the system, {d.n_atoms:.0f} on the ranks"
        self.log(f"step {d.step}: {message}")
        self.walker.record_exit("lost_atoms", message)

    # ---- restart ------------------------------------------------------------------------
    def state(self) -> bytes:
        """Everything needed to continue exactly: written into LAMMPS restart files."""
        return json.dumps(dict(
            format=STATE_FORMAT, params_path=os.path.abspath(self.params_path),
            params_version=self.params.version, params_hash=self.params.content_hash,
            n_swaps=self.n_swaps, n_rollbacks=self.n_rollbacks, seed=self.settings.seed, **self.hal.state())).encode()

    def restore(self, blob: bytes):
        state = json.loads(bytes(blob).decode())
        if state.get("format") != STATE_FORMAT:
            raise FixArgumentError(f"fix pylal: restart data has format {state.get('format')!r}, expected {STATE_FORMAT}")
        if state["params_hash"] != self.params.content_hash:
            params = self._load_collective(state["params_path"])
            if params.content_hash != state["params_hash"]:
                self.log(f"restart: {state['params_path']} changed since the restart file was written "
                         f"(version {state['params_version']} -> {params.version}); using it as it is now")
            self.swap(params, step=-1, path=state["params_path"])
        self.hal.restore(state)
        self.n_swaps = state["n_swaps"]
        self.n_rollbacks = state.get("n_rollbacks", 0)
        self.log(f"restored state: parameter version {self.params.version}, {self.n_flags} flag(s), "
                 f"tau {self.hal.last_tau[1]:.4g}")


class NullEngine(Engine):
    """Zero forces, no model evaluation: measures the plugin's own cost (neighbor pairs, the
    Python calls, reverse communication). Select with `fix ... pylal ... engine pylal.lammps.engine:NullEngine`."""

    def evaluate(self, step, n_local, n_all, x, types, tags, pair_i, pair_j, pair_vectors, box, stat,
                 n_centers=None):
        self._pending = None
        return np.zeros((n_all, 3))

    def finish(self, forces, peratom, stat) -> None:
        return None
