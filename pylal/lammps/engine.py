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
              steps f_i, HAL eq. 6, and the flag rule, with one packed allreduce), the engine adds
              F_HAL = F_bar + tau grad sigma~ to LAMMPS's forces and hands flags to the walker side.
Scalars go back through `stat`, a small float64 array owned by the caller (pylal/lammps/stat.py).

A parameter file with a LAMMPS prior (pylal.prior) needs that pair style in the deck: init() of the
fix asks prior_styles(), looks them up in LAMMPS's pair style (force->pair_match) and calls
check_pair_style(), which refuses to run without it and prints the lines to add. With a prior,
the force array LAMMPS passes to finish() already holds the prior's forces (the pair style ran
first), so f_i's denominator and adaptive tau use that total mean force, as PylalCalculator does.

Re-evaluating a step (LAMMPS's setup after `run`, `read_restart`) reuses that step's tau and
neither updates tau nor flags again, so `run 100; run 100` equals `run 200`.

Guard and rollback (docs/fix_pylal.md): finish() hands the controller this rank's guard figures
(pylal.hal.guard: max |F|, shortest pair, step length); when the guard trips, the configuration is
flagged like any flag (info `guard`), and the engine asks its caller (stat `rollback`) to restore
the last good state it saved; adaptive tau burns in again. The caller (plugin/fix_pylal.cpp) owns
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
from pylal.hal.controller import HalController  # noqa: E402
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
        rule = self.settings.guard_rule()
        self.hal = HalController(self.settings.rule(), reduce=self.comm.hal_reduce,
                                 guard=Guard(rule) if rule is not None else None)
        self.walker = Walker(self.settings, self.comm, params.version, params.spec.r_cut)
        self.checkpointer = Checkpointer(self.settings, self.comm) if self.settings.checkpoint else None
        self.n_swaps = 0
        self.n_rollbacks = 0
        self.n_compilations = 0
        self._last_finished: int | None = None  # step of the last finish(): a re-evaluation is not guarded again
        self._lost_reported = False
        self._pending: PendingStep | None = None

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

    def max_columns(self) -> int:
        """Widest force row evaluate() returns: F_bar, grad sigma~ and K member forces."""
        return 6 + 3 * self.params.n_members

    @staticmethod
    def stat_indices(names) -> list[int]:
        """The stat layout for the caller (pylal/lammps/stat.py): positions of `names`."""
        return layout.indices(names)

    def describe(self, stat_buffer) -> None:
        stat = _view(stat_buffer, np.float64, (layout.SIZE,))
        stat[STAT["r_cut"]] = self.r_cut
        stat[STAT["version"]] = self.params.version
        stat[STAT["flags"]] = self.n_flags
        s = self.settings
        saving = self.hal.guard is not None and s.rollback == "yes"
        stat[STAT["rollback_every"]] = s.rollback_every if saving else 0  # 0: the caller saves nothing
        stat[STAT["rollback_max"]] = s.rollback_max
        stat[STAT["rollback_temp"]] = s.rollback_temp
        stat[STAT["seed"]] = s.seed
        stat[STAT["saved_step"]] = -1

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
        out[STAT["r_cut"]] = self.r_cut
        out[STAT["swaps"]] = self.n_swaps
        self._pending = PendingStep(step, n_local, buf, tau, res.energy, res.sigma, res.spread, res.atom_sigma,
                                    x, types, _view(tags, np.int32, (n_all,)), np.array(_view(box, np.float64, (12,))),
                                    pairs.vectors)
        return buf

    def finish(self, forces, peratom, stat) -> int:
        """Adds F_HAL to the owned atoms' forces (n_local, 3); fills the per-atom array
        (f_i, atom sigma, |F_bias|) on check steps. Returns 1 to stop the run."""
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
        d = self.hal.decide(p.step, f_learned + f_prior, grad_sigma, members, p.spread, guard_figures=figures)
        f_lammps[:] += f_hal
        out[STAT["stop"]] = out[STAT["rollback"]] = 0.0
        self.walker.last_step = p.step
        self._notice_lost_atoms(d, out[STAT["natoms"]])
        repeated, self._last_finished = p.step == self._last_finished, p.step
        if d.guard is not None and not repeated:
            self._on_guard(p, d, peratom, out)
        elif d.check:
            self._after_check(p, d, peratom, out)
        out[STAT["f_max"]], out[STAT["softmax"]], out[STAT["flags"]] = d.f_max, d.softmax, self.n_flags
        out[STAT["rollbacks"]] = self.n_rollbacks
        out[STAT["guard_events"]] = self.hal.guard.n_events if self.hal.guard is not None else 0
        out[STAT["messages"]] = len(self.walker.messages)
        return int(out[STAT["stop"]])

    def _guard_figures(self, p: PendingStep, forces, step_length: float):
        """This rank's part of the guard's figures (pylal.hal.guard.local_figures)."""
        return local_figures(forces, p.pair_vectors, step_length)

    def _set_skin(self, skin: float):
        rule = self.hal.guard.rule
        if skin > 0 and rule.skin != skin:
            self.hal.guard.rule = dataclasses.replace(rule, skin=float(skin))

    def _on_guard(self, p: PendingStep, d, peratom, out):
        """The guard rejected this step: flag the configuration, and roll back when a good state is saved."""
        s, n, event = self.settings, p.n_local, d.guard
        saved = int(out[STAT["saved_step"]])
        roll = s.rollback == "yes" and saved >= 0
        cooled = self.hal.last_flag_step is None or p.step - self.hal.last_flag_step >= s.cooldown
        if roll or cooled:  # without rollback, a blow-up would flag every step
            self.hal.record_guard_flag(p.step)
            nan = np.full(n, np.nan)
            info = dict(step=p.step, sigma=p.sigma, f_max=d.f_max, softmax=d.softmax, tau=d.tau,
                        params_version=self.params.version, params_hash=self.params.content_hash,
                        seed=s.seed, n_ranks=self.comm.size, guard=event.reason, guard_detail=event.describe(),
                        rollback_to=saved if roll else -1)
            self.walker.send_flag(self.n_flags, p.step, p.tags[:n], p.types[:n], p.x[:n], p.box,
                                  d.f_i if d.f_i is not None else nan, d.bias_norm if d.bias_norm is not None else nan,
                                  info)
            self.walker.trace_row(p.step, self.params.version, d.tau, p.energy, p.sigma, d.f_max, d.softmax,
                                  self.n_flags, True, volume_per_atom(p.box, out[STAT["natoms"]]))
        action = f"rolling back to step {saved}" if roll else (
            "no saved state yet: continuing" if s.rollback == "yes" else "rollback no: continuing")
        self.log(f"step {p.step}: guard: {event.describe()}; {action}")
        self.walker.record_event(dict(event="guard", step=p.step, reason=event.reason, detail=event.describe(),
                                      rollback_to=saved if roll else None, version=self.params.version))
        out[STAT["rollback"]] = 1.0 if roll else -1.0  # -1: the caller must not save this state
        if roll:
            self.n_rollbacks += 1
            self.hal.burn_in()  # the bias drove the run here: tau is 0 again for tau_window steps
            self.hal.guard.reset()
        if s.on_flag == "wait" and (roll or cooled):
            self._swap_if_new(*self.walker.wait_for_version(p.step, self.params.version), p.step)

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

    def _after_check(self, p: PendingStep, d, peratom, out):
        s, n = self.settings, p.n_local
        if peratom is not None:
            _view(peratom, np.float64, (n, 3))[:] = np.column_stack([d.f_i, p.atom_sigma[:n], d.bias_norm])
        if d.flag:
            info = dict(step=p.step, sigma=p.sigma, f_max=d.f_max, softmax=d.softmax, tau=d.tau,
                        params_version=self.params.version, params_hash=self.params.content_hash,
                        seed=s.seed, n_ranks=self.comm.size)
            self.walker.send_flag(self.n_flags, p.step, p.tags[:n], p.types[:n], p.x[:n], p.box, d.f_i,
                                  d.bias_norm, info)
        if d.stop:
            out[STAT["stop"]] = 1.0
            self.walker.record_exit("flag_stop", f"flag {self.n_flags} with on_flag stop")
        self.walker.trace_row(p.step, self.params.version, d.tau, p.energy, p.sigma, d.f_max, d.softmax,
                              self.n_flags, d.flag, volume_per_atom(p.box, out[STAT["natoms"]]))
        if d.flag and s.on_flag == "wait":
            self._swap_if_new(*self.walker.wait_for_version(p.step, self.params.version), p.step)
        if self.walker.stop_requested():
            self.log(f"step {p.step}: stop file {s.stop_file} exists; ending the run")
            self.walker.record_exit("stop_file", f"stop file {s.stop_file} exists")
            out[STAT["stop"]] = 1.0

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
    """Zero forces, no model evaluation: measures the plugin's own cost (neighbor pairs, the two
    Python calls, reverse communication). Select with `fix ... pylal ... engine pylal.lammps.engine:NullEngine`."""

    def evaluate(self, step, n_local, n_all, x, types, tags, pair_i, pair_j, pair_vectors, box, stat,
                 n_centers=None):
        self._pending = None
        return np.zeros((n_all, 3))

    def finish(self, forces, peratom, stat) -> int:
        return 0
