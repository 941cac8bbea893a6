"""The walker side of `fix pylal`: what one LAMMPS run exchanges with the world outside its step.

  hot-swap source  the refit server's client (pylal/server/client.py; a background thread, so MD
                   never waits on it) or a watched parameter file; rank 0 looks, every rank gets
                   the answer by broadcast, so all ranks swap at the same step
  flag sink        flagged configurations gathered to rank 0, written as extxyz, sent to the server;
                   a cell of more than `label_max_atoms` atoms is carved first (pylal.select.carve):
                   only the atoms of its uncertain regions reach rank 0, one label per region
  trace            one CSV row per check step (read by pylal campaign / report)
  stop file        `stop_file FILE`: the run ends cleanly when it exists
  wait             on_flag wait: hold MD until the server publishes a newer version
  exit record      `exit_file FILE` (JSON): why the run ended (finished, stop_file, flag_stop,
                   lost_atoms, python_error), at which step, with a message
  event log        `event_log FILE` (JSON lines): one per guard event / rollback
  messages         queued on rank 0 for LAMMPS's screen and log

Every method that takes no `rank 0` note is collective: all ranks call it at the same step.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
from ase.data import atomic_numbers

from pylal.campaign.trace import TRACE_COLUMNS
from pylal.files import atomic_write
from pylal.fit.design import FORCE_WEIGHTS
from pylal.lammps.flags import build_atoms, lammps_cell, write_flag
from pylal.lammps.settings import FixArgumentError, FixSettings
from pylal.model.params import ParameterFileError, Parameters
from pylal.select.carve import CarveError, OwnedAtoms, carve


class Walker:
    def __init__(self, settings: FixSettings, comm, version: int, r_cut: float):
        self.settings = settings
        self.carve_rule = settings.carve_rule(r_cut)
        self.comm = comm  # pylal.lammps.comm.Collectives
        self.rank = comm.rank
        self.messages: list[str] = []
        self.last_flag_id: str | None = None  # refit server's id of the last flag sent (rank 0)
        self.exit_reason: str | None = None
        self.last_step: int | None = None
        self._watch_stamp = self._stamp(settings.watch) if self.rank == 0 else None
        self.client = self._connect(version) if settings.server else None
        self.record_exit("running")

    def _connect(self, version: int):
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
                                spool_dir=os.path.join(s.flag_dir, "spool"), version=version)
                self.log(f"refit server {address}, walker {client.walker}")
            except (OSError, ValueError, KeyError) as err:
                error = f"fix pylal: cannot use refit server '{s.server}': {err}"
        error = self.comm.bcast(error)
        if error:
            raise FixArgumentError(error)
        return client

    def close(self):
        """End of the fix: rank 0 gives the server up to 10 s for unsent flags (they stay spooled
        anyway); the other ranks sleep meanwhile."""
        try:
            if self.client is not None:
                self.client.flush(timeout=10.0)
                self.client.close()
                self.client = None
        finally:
            self.comm.bcast_idle(None)
        self.record_exit(self.exit_reason or "finished")

    # ---- messages (rank 0) ----------------------------------------------------------------
    def log(self, text: str):
        if self.rank == 0:
            self.messages.append(f"fix pylal: {text}\n")

    def pop_messages(self) -> str:
        text, self.messages = "".join(self.messages), []
        return text

    # ---- exit record ----------------------------------------------------------------------
    def record_exit(self, reason: str, message: str = "", any_rank: bool = False):
        """Rank 0 (or the calling rank, any_rank) writes {reason, step, message, time}. The reason of
        a run that ends is kept; close() writes it (or 'finished') when the fix is deleted."""
        if reason not in ("running", "finished"):
            self.exit_reason = reason
        path = self.settings.exit_file
        if path is None or (self.rank != 0 and not any_rank):
            return
        record = dict(reason=reason, step=self.last_step, message=message, time=time.time(), rank=self.rank)
        try:
            atomic_write(path, (json.dumps(record) + "\n").encode())
        except OSError as err:
            self.log(f"cannot write the exit record {path}: {err}")

    # ---- event log (rank 0) -------------------------------------------------------------------
    def record_event(self, record: dict):
        """Appends one JSON line to `event_log` (guard events and rollbacks; `pylal campaign` reads it)."""
        path = self.settings.event_log
        if path is None or self.rank != 0:
            return
        try:
            with open(path, "a") as f:
                f.write(json.dumps(dict(record, time=time.time())) + "\n")
        except OSError as err:
            self.log(f"cannot append to the event log {path}: {err}")

    # ---- hot-swap source ------------------------------------------------------------------
    @staticmethod
    def _stamp(path):
        try:
            st = os.stat(path)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except (OSError, TypeError):
            return None

    def poll(self, step: int, current: Parameters) -> tuple[Parameters | None, str | None]:
        """New parameters from the server's client, else from the watched file (None: nothing new)."""
        if self.settings.server is None and self.settings.watch is None:  # the same on every rank
            return None, None
        new, path = None, self.settings.watch
        if self.client is not None:
            new, path = self.client.poll(), self.client.params_path
        if new is None and self.rank == 0 and self.settings.watch is not None:
            path = self.settings.watch
            stamp = self._stamp(path)
            if stamp is not None and stamp != self._watch_stamp:
                self._watch_stamp = stamp
                try:
                    candidate = Parameters.load(path)
                    if candidate.content_hash != current.content_hash:
                        new = candidate
                except ParameterFileError as err:
                    self.log(f"step {step}: ignoring unreadable parameter file ({err})")
        return self.comm.bcast((new, path))

    def wait_for_version(self, step: int, version: int) -> tuple[Parameters | None, str | None]:
        """on_flag wait: a version newer than `version` from the server, or None after wait_timeout,
        a 'duplicate'/'rejected' acknowledgement of the flag, or a stop file."""
        new, path, why = None, None, None
        s = self.settings
        if self.client is not None:
            end = time.monotonic() + s.wait_timeout
            why = f"no new parameters within {s.wait_timeout:g} s"
            while new is None and time.monotonic() < end:  # in slices, to notice a stop file
                new = self.client.wait_for_version(version + 1, min(1.0, end - time.monotonic()), self.last_flag_id)
                status = self.client.ack_status.get(self.last_flag_id)
                if status in ("duplicate", "rejected", "filtered"):
                    why = f"the server acknowledged the flag as '{status}'"
                    break
                if status == "refit_rejected":
                    why = "the refit with this flag failed its checks (server log: refit_rejected)"
                    break
                if s.stop_file is not None and os.path.exists(s.stop_file):
                    why = f"stop file {s.stop_file} exists"
                    break
            path = self.client.params_path
        new, path = self.comm.bcast_idle((new, path))  # the other ranks sleep meanwhile
        if new is None:
            self.log(f"step {step}: {why}; continuing")
        return new, path

    # ---- flag sink ------------------------------------------------------------------------
    def send_flag(self, n_flag: int, step: int, tags, types, x, box, f_i, bias_norm, info: dict):
        """Gathers the owned atoms of every rank to rank 0, which writes and sends the flag; a cell
        of more than label_max_atoms atoms is carved instead (send_carved)."""
        n_max = self.carve_rule.max_atoms
        if n_max and self.comm.sum(float(len(tags))) > n_max:
            return self.send_carved(n_flag, step, tags, types, x, box, f_i, info)
        parts = self.comm.gather((tags.copy(), types.copy(), x.copy(), f_i, bias_norm))
        if self.rank != 0:
            return
        tags, types, x, f_all, b_all = (np.concatenate(c) for c in zip(*parts))
        atoms = build_atoms(tags, types, x, box, self.settings.elements, {"f_i": f_all, "bias_force": b_all}, info)
        path = write_flag(atoms, self.settings.flag_dir, step)
        if self.client is not None:
            self.last_flag_id = self.client.send_flag(atoms, info)  # returns at once; spooled until acked
        self.log(f"step {step}: flag {n_flag} (max f_i {info['f_max']:.3g}, softmax {info['softmax']:.3g}) -> {path}")

    def send_carved(self, n_flag: int, step: int, tags, types, x, box, f_i, info: dict):
        """Carves the uncertain regions on the ranks that own them (pylal.select.carve); rank 0
        writes and sends one flag per carved cell, with its core (indices) and parent in the provenance."""
        origin, cell, pbc = lammps_cell(box)
        numbers = np.array([atomic_numbers[e] for e in self.settings.elements])[np.asarray(types) - 1]
        own = OwnedAtoms(np.array(tags), numbers, np.asarray(x) - origin, np.asarray(f_i, dtype=float))
        try:
            cells = carve(own, cell, pbc, self.carve_rule, self.comm)
        except CarveError as err:
            self.log(f"step {step}: flag {n_flag} not sent: {err}")
            return
        if self.rank != 0:
            return
        for k, atoms in enumerate(cells):
            prov = dict(info, parent_step=step, region=k, centre_id=atoms.info["carve_centre_id"],
                        half_width=atoms.info["carve_half_width"],
                        core=np.flatnonzero(atoms.arrays[FORCE_WEIGHTS] > 0).tolist())
            atoms.info.update(info)
            path = write_flag(atoms, self.settings.flag_dir, step, region=k)
            if self.client is not None:
                self.last_flag_id = self.client.send_flag(atoms, prov)
            self.log(f"step {step}: flag {n_flag} region {k} (max f_i {info['f_max']:.3g}): {len(atoms)} atoms, "
                     f"{len(prov['core'])} in the core -> {path}")

    # ---- trace, stop file -----------------------------------------------------------------
    def trace_row(self, step: int, version: int, tau: float, energy: float, sigma: float, f_max: float,
                  softmax: float, n_flags: int, flagged: bool, volume_per_atom: float):
        """Rank 0 appends one CSV row per check step to `trace FILE`."""
        path = self.settings.trace
        if path is None or self.rank != 0:
            return
        new = not os.path.exists(path)
        with open(path, "a") as f:
            if new:
                f.write(",".join(TRACE_COLUMNS) + "\n")
            f.write(f"{time.time():.3f},{step},{version},{tau:.8g},{energy:.10g},"
                    f"{sigma:.8g},{f_max:.8g},{softmax:.8g},{n_flags},{int(flagged)},{volume_per_atom:.6g}\n")

    def stop_requested(self) -> bool:
        """`stop_file FILE`: rank 0 looks for the file; every rank gets the same answer."""
        if self.settings.stop_file is None:
            return False
        exists = self.rank == 0 and os.path.exists(self.settings.stop_file)
        return bool(self.comm.bcast(exists))
