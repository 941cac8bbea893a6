"""The per-rank engine behind `fix pylal` (C++ plugin) and the python/invoke callback.

Each step LAMMPS calls, on every rank:
  evaluate()  owned + ghost atoms and the pairs of LAMMPS's full list (owned centres only).
              Returns a buffer (n_all, ncol) of forces on owned AND ghost atoms; the caller
              reverse-communicates it (sums ghost rows onto their owners).
              Columns: [F_HAL | grad sigma (when biased) | F^k for k = 1..K (check steps)].
              The K committee energies are summed over ranks inside the jitted step (one
              allreduce), so E_bar, sigma and the bias coefficients are global.
  finish()    the owned rows, now complete: adds F_HAL to LAMMPS's forces, updates adaptive tau
              (global sums), and on check steps computes f_i (HAL eq. 6), reduces max f_i and
              sum exp(f_i) over ranks (eq. 8) so that every rank takes the same decision, and
              writes a flagged configuration (gathered to rank 0).
Scalars go back through `stat`, a small float64 array owned by the caller (layout below).

A parameter file with a LAMMPS prior (pylal.prior) needs that pair style in the deck: init() of the
fix asks prior_styles(), looks them up in LAMMPS's pair style (force->pair_match) and calls
check_pair_style(), which refuses to run without it and prints the lines to add. With a prior,
the force array LAMMPS passes to finish() already holds the prior's forces (the pair style ran
first), so f_i's denominator and adaptive tau use that total mean force, as PylalCalculator does.

Re-evaluating a step (LAMMPS's setup after `run`, `read_restart`) reuses that step's tau and
neither updates tau nor flags again, so `run 100; run 100` equals `run 200`.
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

import numpy as np  # noqa: E402

from pylal.hal import physics as hal  # noqa: E402
from pylal.lammps.flags import build_atoms, write_flag  # noqa: E402
from pylal.lammps.settings import FixArgumentError, parse_fix_args  # noqa: E402
from pylal.model.committee import CommitteeModel  # noqa: E402
from pylal.model.neighbors import PairList  # noqa: E402
from pylal.model.params import ParameterFileError, Parameters  # noqa: E402

# stat[] layout shared with plugin/fix_pylal.cpp
STAT_E_HAL, STAT_E, STAT_SIGMA, STAT_TAU, STAT_F_MAX, STAT_SOFTMAX, STAT_FLAGS, STAT_VERSION = range(8)
STAT_VIRIAL = 8  # 6 entries: xx yy zz xy xz yz of this rank's pairs
STAT_STOP, STAT_MESSAGES, STAT_R_CUT, STAT_SWAPS = 14, 15, 16, 17
STAT_SIZE = 24

STATE_FORMAT = "pylal-fix-state/1"


def _view(buffer, dtype, shape):
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


class Engine:
    def __init__(self, args: list[str], comm=None, ntypes: int | None = None):
        """args: the fix arguments after `pylal`; comm: mpi4py communicator of LAMMPS (None: serial)."""
        self.comm = comm if comm is not None and comm.Get_size() > 1 else None
        self.rank = comm.Get_rank() if comm is not None else 0
        self.settings = parse_fix_args(args, ntypes)
        params = self._load_collective(self.settings.params_path)
        self._check_elements(params)
        self.params_path = self.settings.params_path
        self.model = CommitteeModel(params, reduce_sum=self._sum if self.comm else None)
        s = self.settings
        self.adaptive = hal.AdaptiveTau(s.tau_rel, s.tau_window) if s.tau_rel is not None else None
        self.n_flags = 0
        self.n_swaps = 0
        self.last_flag_step: int | None = None
        self.last_flag_id: str | None = None  # refit server's id of the last flag sent (rank 0)
        self.last_tau = (None, 0.0)  # (step, tau used at that step)
        self.last_update_step: int | None = None  # last step added to adaptive tau's window
        self.last_check_step: int | None = None
        self.f_max = 0.0
        self.softmax = 0.0
        self.messages: list[str] = []
        self._watch_stamp = self._stamp(s.watch) if self.rank == 0 else None
        self._pending: dict | None = None
        self.client = self._connect_collective() if s.server else None

    def _connect_collective(self):
        """Rank 0 talks to the refit server (pylal/server/client.py: a background thread, so MD
        never waits on it); the other ranks get its news by broadcast."""
        s, error, client = self.settings, None, None
        if self.rank == 0:
            from pylal.server.client import Client
            try:
                address, token = s.server, s.token
                if "://" not in address:  # a run folder
                    token = token or os.path.join(address, "token")
                    with open(os.path.join(address, "server.json")) as f:
                        address = json.load(f)["address"]
                client = Client(address, token_file=token, walker=s.walker or f"walker{s.seed}",
                                spool_dir=os.path.join(s.flag_dir, "spool"), version=self.params.version)
                self.log(f"refit server {address}, walker {client.walker}")
            except (OSError, ValueError, KeyError) as err:
                error = f"fix pylal: cannot use refit server '{s.server}': {err}"
        error = self._bcast(error)
        if error:
            raise FixArgumentError(error)
        return client

    def close(self):
        """End of the fix: give the server a moment for unsent flags (they stay spooled anyway)."""
        if self.client is not None:
            self.client.flush(timeout=10.0)
            self.client.close()
            self.client = None

    # ---- collective helpers -------------------------------------------------------------
    def _sum(self, x):
        x = np.array(x, dtype=np.float64, order="C")  # (0-d stays 0-d)
        if self.comm is None:
            return x
        from mpi4py import MPI
        out = np.empty_like(x)
        self.comm.Allreduce(x, out, op=MPI.SUM)
        return out

    def _max(self, x):
        if self.comm is None:
            return x
        from mpi4py import MPI
        return self.comm.allreduce(float(x), op=MPI.MAX)

    def _bcast(self, obj):
        return obj if self.comm is None else self.comm.bcast(obj, root=0)

    def _load_collective(self, path: str) -> Parameters:
        """Rank 0 reads the file; every rank gets the parameters or raises the same error."""
        result = None
        if self.rank == 0:
            try:
                result = Parameters.load(path)
            except ParameterFileError as err:
                result = f"fix pylal: {err}"
        result = self._bcast(result)
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

    def prior_styles(self) -> list[str]:
        """Pair style names that provide the parameter file's LAMMPS prior (empty: no prior)."""
        prior = self.params.lammps_prior
        if prior is None:
            return []
        from pylal.prior.commands import accepted_styles

        return accepted_styles(prior)

    def check_pair_style(self, pair_style: str, found) -> None:
        """Called once per run setup with LAMMPS's pair style and the prior_styles() it contains."""
        prior = self.params.lammps_prior
        if prior is not None and not list(found):
            from pylal.prior.commands import missing_prior_message

            raise FixArgumentError(missing_prior_message(prior, pair_style or "none", self.settings.elements,
                                                         self.r_cut))

    def max_columns(self) -> int:
        """Widest force row evaluate() returns: F_HAL, grad sigma and K member forces."""
        return 6 + 3 * self.params.n_members

    def describe(self, stat_buffer) -> None:
        stat = _view(stat_buffer, np.float64, (STAT_SIZE,))
        stat[STAT_R_CUT] = self.r_cut
        stat[STAT_VERSION] = self.params.version
        stat[STAT_FLAGS] = self.n_flags

    def log(self, text: str):
        if self.rank == 0:
            self.messages.append(f"fix pylal: {text}\n")

    def pop_messages(self) -> str:
        text, self.messages = "".join(self.messages), []
        return text

    # ---- hot-swap -----------------------------------------------------------------------
    @staticmethod
    def _stamp(path):
        try:
            st = os.stat(path)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except (OSError, TypeError):
            return None

    def _poll_parameters(self, step: int):
        """Rank 0 asks the refit server's client (if any), else looks at the watched file; new
        parameters are broadcast and swapped in on all ranks at this same step."""
        new, path = None, self.settings.watch
        if self.client is not None:
            new, path = self.client.poll(), self.client.params_path
        if new is None and self.rank == 0 and self.settings.watch is not None:
            path = self.settings.watch
            stamp = self._stamp(self.settings.watch)
            if stamp is not None and stamp != self._watch_stamp:
                self._watch_stamp = stamp
                try:
                    candidate = Parameters.load(self.settings.watch)
                    if candidate.content_hash != self.params.content_hash:
                        new = candidate
                except ParameterFileError as err:
                    self.log(f"step {step}: ignoring unreadable parameter file ({err})")
        new, path = self._bcast((new, path))
        if new is not None:
            self.swap(new, step, path)

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
        if self.adaptive is not None:
            # tau (HAL eq. 12) was averaged over the old committee's bias forces; as after each
            # refit in HAL, it burns in again (tau = 0 for tau_window steps) on the new committee
            self.adaptive = hal.AdaptiveTau(self.settings.tau_rel, self.settings.tau_window)
        self.n_swaps += 1
        if path is not None:
            self.params_path = path
        self.log(f"step {step}: swapped in parameter version {params.version} ({params.content_hash[:12]})")

    # ---- per step -----------------------------------------------------------------------
    def _tau_at(self, step: int) -> float:
        if self.last_tau[0] == step:
            return self.last_tau[1]
        tau = self.adaptive.tau if self.adaptive is not None else self.settings.tau
        self.last_tau = (step, tau)
        return tau

    def is_check_step(self, step: int) -> bool:
        n = self.settings.check_every
        return n > 0 and step % n == 0

    def evaluate(self, step, n_local, n_all, x, types, tags, pair_i, pair_j, pair_vectors, box, stat,
                 n_centers=None):
        """Forces on owned + ghost atoms for this rank's pairs; returns the (n_all, ncol) buffer
        to be reverse-communicated. n_centers: centres beyond the owned atoms (ghost centres that
        only complete forces, used by the python/invoke path); default n_local."""
        step = int(step)
        check = self.is_check_step(step)
        if check:
            self._poll_parameters(step)
        centers = np.frombuffer(pair_i, dtype=np.int32)
        n_pairs = len(centers)
        x = _view(x, np.float64, (n_all, 3))
        types = _view(types, np.int32, (n_all,))
        pairs = PairList(vectors=_view(pair_vectors, np.float64, (n_pairs, 3)), centers=centers,
                         neighbors=_view(pair_j, np.int32, (n_pairs,)),
                         species=self.type_species[types],
                         n_centers=n_local if n_centers is None else int(n_centers))
        tau = self._tau_at(step)
        biased = self.adaptive is not None or tau != 0.0
        res = self.model.step(pairs, tau=tau, members=check, bias=biased or check, n_energy_centers=n_local)

        columns = [res.forces] + ([res.grad_sigma] if biased or check else [])
        if check:
            columns.append(np.transpose(res.member_forces, (1, 0, 2)).reshape(n_all, -1))
        buf = np.ascontiguousarray(np.concatenate(columns, axis=1))

        out = _view(stat, np.float64, (STAT_SIZE,))
        out[STAT_E_HAL], out[STAT_E], out[STAT_SIGMA], out[STAT_TAU] = res.energy_hal, res.energy, res.sigma, tau
        w = res.virial
        out[STAT_VIRIAL:STAT_VIRIAL + 6] = (w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2])
        out[STAT_VERSION] = self.params.version
        out[STAT_R_CUT] = self.r_cut
        out[STAT_SWAPS] = self.n_swaps
        self._pending = dict(step=step, check=check, biased=biased, tau=tau, sigma=res.sigma, energy=res.energy,
                             n_local=n_local, buf=buf, atom_sigma=res.atom_sigma,
                             x=x, types=types, tags=_view(tags, np.int32, (n_all,)),
                             box=np.array(_view(box, np.float64, (12,))))
        return buf

    def finish(self, forces, peratom, stat) -> int:
        """Adds F_HAL to the owned atoms' forces (n_local, 3); fills the per-atom array
        (f_i, atom sigma, |F_bias|) on check steps. Returns 1 to stop the run (on_flag stop)."""
        p, self._pending = self._pending, None
        n, step, tau = p["n_local"], p["step"], p["tau"]
        owned = p["buf"][:n]
        f_hal = owned[:, 0:3]
        f_lammps = _view(forces, np.float64, (n, 3))
        # with a LAMMPS prior, what LAMMPS holds now is the pair style's prior force (Shuaibi eq. 4)
        f_prior = f_lammps.copy() if self.params.lammps_prior is not None else 0.0
        f_lammps[:] += f_hal
        out = _view(stat, np.float64, (STAT_SIZE,))
        out[STAT_STOP] = 0.0
        if p["biased"] or p["check"]:
            grad_sigma = owned[:, 3:6]
            f_mean = f_hal - tau * grad_sigma + f_prior  # total unbiased force
        if self.adaptive is not None and (self.last_update_step is None or step > self.last_update_step):
            sums = self._sum(np.array([np.linalg.norm(f_mean, axis=1).sum(),
                                       np.linalg.norm(grad_sigma, axis=1).sum()]))
            self.adaptive.update(*sums)
            self.last_update_step = step
        if p["check"] and step != self.last_check_step:
            self.last_check_step = step
            k = (owned.shape[1] - 6) // 3
            members = np.transpose(owned[:, 6:].reshape(n, k, 3), (1, 0, 2)) + f_prior
            s = self.settings
            eps = s.eps if s.eps is not None else hal.mean_force_norm(f_mean, self._sum)
            f_i = hal.relative_force_uncertainty(members, f_mean, eps)
            self.softmax, self.f_max = hal.softmax_score(f_i, self._sum, self._max)
            bias_norm = tau * np.linalg.norm(grad_sigma, axis=1)
            if peratom is not None:
                _view(peratom, np.float64, (n, 3))[:] = np.column_stack([f_i, p["atom_sigma"][:n], bias_norm])
            cooled = self.last_flag_step is None or step - self.last_flag_step >= s.cooldown
            sigma_per_atom = None
            if s.sigma_tol is not None:  # the committee's spread: sigma~ (eq. 5) without the noise 1/lambda,
                # which more data does not reduce (it grows when hard configurations enter the fit)
                spread2 = p["sigma"] ** 2 - 1.0 / float(self.params.noise_precision)
                sigma_per_atom = np.sqrt(max(spread2, 0.0)) / float(self._sum(np.array(float(n))))
            flagged = hal.triggered(self.softmax, self.f_max, s.s_tol, s.f_tol, sigma_per_atom, s.sigma_tol) and cooled
            if flagged:
                self._write_flag(p, f_i, bias_norm)
                out[STAT_STOP] = 1.0 if s.on_flag == "stop" else 0.0
            self._trace_row(p, flagged)
            if flagged and s.on_flag == "wait":
                self._wait_for_new_version(step)
            if self._stop_requested():
                self.log(f"step {step}: stop file {s.stop_file} exists; ending the run")
                out[STAT_STOP] = 1.0
        out[STAT_F_MAX], out[STAT_SOFTMAX], out[STAT_FLAGS] = self.f_max, self.softmax, self.n_flags
        out[STAT_MESSAGES] = len(self.messages)
        return int(out[STAT_STOP])

    TRACE_COLUMNS = ("wall_time", "step", "version", "tau", "energy", "sigma", "f_max", "softmax", "n_flags", "flagged")

    def _trace_row(self, p: dict, flagged: bool):
        """Rank 0 appends one CSV row per check step to `trace FILE` (read by pylal campaign/report)."""
        path = self.settings.trace
        if path is None or self.rank != 0:
            return
        new = not os.path.exists(path)
        with open(path, "a") as f:
            if new:
                f.write(",".join(self.TRACE_COLUMNS) + "\n")
            f.write(f"{time.time():.3f},{p['step']},{self.params.version},{p['tau']:.8g},{p['energy']:.10g},"
                    f"{p['sigma']:.8g},{self.f_max:.8g},{self.softmax:.8g},{self.n_flags},{int(flagged)}\n")

    def _stop_requested(self) -> bool:
        """`stop_file FILE`: rank 0 looks for the file; every rank gets the same answer."""
        if self.settings.stop_file is None:
            return False
        exists = self.rank == 0 and os.path.exists(self.settings.stop_file)
        return bool(self._bcast(exists))

    def _wait_for_new_version(self, step: int):
        """on_flag wait: hold MD until the server publishes a version newer than the running one."""
        new, path, why = None, None, None
        if self.client is not None:
            end = time.monotonic() + self.settings.wait_timeout
            why = f"no new parameters within {self.settings.wait_timeout:g} s"
            while new is None and time.monotonic() < end:  # in slices, to notice a stop file
                new = self.client.wait_for_version(self.params.version + 1, min(1.0, end - time.monotonic()),
                                                   self.last_flag_id)
                status = self.client.ack_status.get(self.last_flag_id)
                if status in ("duplicate", "rejected"):
                    why = f"the server acknowledged the flag as '{status}'"
                    break
                if self.settings.stop_file is not None and os.path.exists(self.settings.stop_file):
                    why = f"stop file {self.settings.stop_file} exists"
                    break
            path = self.client.params_path
        new, path = self._bcast((new, path))
        if new is None:
            self.log(f"step {step}: {why}; continuing")
        else:
            self.swap(new, step, path)

    def _write_flag(self, p: dict, f_i: np.ndarray, bias_norm: np.ndarray):
        n = p["n_local"]
        mine = (p["tags"][:n].copy(), p["types"][:n].copy(), p["x"][:n].copy(), f_i, bias_norm)
        parts = [mine] if self.comm is None else self.comm.gather(mine, root=0)
        self.n_flags += 1
        self.last_flag_step = p["step"]
        if self.rank != 0:
            return
        tags, types, x, f_all, b_all = (np.concatenate(c) for c in zip(*parts))
        info = dict(step=p["step"], sigma=p["sigma"], f_max=self.f_max, softmax=self.softmax, tau=p["tau"],
                    params_version=self.params.version, params_hash=self.params.content_hash,
                    seed=self.settings.seed, n_ranks=1 if self.comm is None else self.comm.Get_size())
        atoms = build_atoms(tags, types, x, p["box"], self.settings.elements,
                            {"f_i": f_all, "bias_force": b_all}, info)
        path = write_flag(atoms, self.settings.flag_dir, p["step"])
        if self.client is not None:
            self.last_flag_id = self.client.send_flag(atoms, info)  # returns at once; spooled until acked
        self.log(f"step {p['step']}: flag {self.n_flags} (max f_i {self.f_max:.3g}, softmax {self.softmax:.3g}) -> {path}")

    # ---- restart ------------------------------------------------------------------------
    def state(self) -> bytes:
        """Everything needed to continue exactly: written into LAMMPS restart files."""
        return json.dumps(dict(
            format=STATE_FORMAT, params_path=os.path.abspath(self.params_path),
            params_version=self.params.version, params_hash=self.params.content_hash,
            tau=self.adaptive.state() if self.adaptive is not None else None, last_tau=list(self.last_tau),
            last_update_step=self.last_update_step, last_check_step=self.last_check_step,
            n_flags=self.n_flags, n_swaps=self.n_swaps, last_flag_step=self.last_flag_step,
            f_max=self.f_max, softmax=self.softmax, seed=self.settings.seed)).encode()

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
            self.n_swaps -= 1  # not a swap of this run
        if state["tau"] is not None and self.adaptive is not None:
            self.adaptive = hal.AdaptiveTau.from_state(state["tau"])
        self.last_tau = tuple(state["last_tau"])
        for key in ("last_update_step", "last_check_step", "n_flags", "n_swaps", "last_flag_step", "f_max", "softmax"):
            setattr(self, key, state[key])
        self.log(f"restored state: parameter version {self.params.version}, {self.n_flags} flag(s), "
                 f"tau {self.last_tau[1]:.4g}")


class NullEngine(Engine):
    """Zero forces, no model evaluation: measures the plugin's own cost (neighbor pairs, the two
    Python calls, reverse communication). Select with `fix ... pylal ... engine pylal.lammps.engine:NullEngine`."""

    def evaluate(self, step, n_local, n_all, x, types, tags, pair_i, pair_j, pair_vectors, box, stat,
                 n_centers=None):
        self._pending = dict(n_local=n_local)
        return np.zeros((n_all, 3))

    def finish(self, forces, peratom, stat) -> int:
        self._pending = None
        return 0
