"""`pylal serve CONFIG.toml`: the refit server.

Threads (replies stay fast because nothing slow runs on the socket thread):
  main       ZeroMQ ROUTER loop: authenticate, validate, answer hello/flag/poll/status; a flag is
             acknowledged after the store has committed it; new versions are announced to walkers.
  scheduler  hands queued configurations to the executor (budget and near-duplicate filter), records
             results (labeled / retry / failed), writes RUN/status.json.
  refit      applies the refit policy, fits, publishes version N+1 (refit.py).
The state these threads (and an in-process owner calling status(), e.g. `pylal campaign`) share is
guarded by one lock, Server._state_lock, held only for in-memory updates and copies.
Logs: JSON lines in RUN/server.log.jsonl (one object per event: time, event, fields).
"""
from __future__ import annotations

import copy
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import zmq

from pylal.files import atomic_write
from pylal.model.params import Parameters
from pylal.server import auth, protocol
from pylal.server.config import ServerConfig
from pylal.server.executor import make_executor
from pylal.select.duplicates import descriptor, select_batch
from pylal.server.refit import RefitPolicy, Refitter, read_labelled, spec_from_config
from pylal.server.status import format_rejection, format_running
from pylal.server.versions import VersionStore
from pylal.server.store import Store

ANNOUNCE_WINDOW = 3600.0  # seconds: walkers heard from within this window get version announcements
RUNNING_NOTICE = 10.0  # seconds: a refit running longer is shown on the console (every 30 s) and in the status


class JsonLog:
    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.f = open(path, "a", buffering=1)

    def __call__(self, event: str, **fields):
        line = json.dumps({"time": round(time.time(), 3), "event": event, **fields}, default=str)
        with self.lock:
            if self.f.closed:  # a worker thread finishing after the server stopped: print instead
                print(f"pylal serve (after stop): {line}", flush=True)
                return
            self.f.write(line + "\n")

    def close(self):
        with self.lock:
            self.f.close()


def _atomic_json(path: Path, obj):
    """Unique temporary file per call: several threads may write status.json at once."""
    atomic_write(path, json.dumps(obj, indent=1, default=str).encode())


class Server:
    def __init__(self, cfg: ServerConfig, console: bool = False):
        """console: print filtered labels, rejected refits and long refits on stderr (`pylal serve`)."""
        self.cfg = cfg
        self.console = console
        run = cfg.run_dir
        run.mkdir(parents=True, exist_ok=True)
        self.key = auth.ensure_token(cfg.token_path)
        self.log = JsonLog(run / "server.log.jsonl")
        self.store = Store(run / "store.db")
        requeued = self.store.requeue_in_flight()
        self.versions = VersionStore(run)
        initial_params = Parameters.load(cfg.fit.initial_params) if cfg.fit.initial_params else None
        self.spec = initial_params.spec if initial_params is not None else spec_from_config(cfg.fit)
        if initial_params is not None and self.versions.latest() is None:
            self.versions.publish(initial_params, keep_version=True, source=cfg.fit.initial_params)
        self.initial_names: list = []  # "FILE:INDEX" of each initial configuration
        self.initial = read_labelled(cfg.fit.initial_data, self.initial_names)
        self.reference = dict(calculator=cfg.reference.calculator, options=cfg.reference.options,
                              properties=cfg.reference.properties)
        self.policy = RefitPolicy(cfg.refit.every_labels, cfg.refit.every_seconds)
        self.stop_event = threading.Event()
        self.wake_scheduler = threading.Event()
        self.wake_refit = threading.Event()
        # _state_lock guards the state shared by the threads; who writes (w) and reads (r) what:
        #   walkers, identities  socket thread (w: _contact at hello, flag, poll; r: _announce), status() (r)
        #   filtered             scheduler and refit threads (w: _on_filtered), socket thread (r: _on_poll)
        #   unanswered           refit thread (w: _refit), socket thread (r: _on_poll)
        #   stats                all three threads (counters, refit state), status() (r)
        #   _answered_rows       refit thread only; updated with `unanswered` under the lock
        # Hold it only to update or copy these in memory: never around store or file I/O, logging,
        # socket sends, labelling or fits (status() copies under it and serialises outside it).
        # A single read of one key needs no lock; a read-modify-write or an iteration does.
        self._state_lock = threading.RLock()
        self.walkers: dict = {}  # walker -> {last_contact, flags, version, run_id}
        self.filtered: dict = {}  # walker -> ids of its flags whose labels were filtered (told at its polls)
        self.unanswered: dict = {}  # walker -> ids of its flags whose refit failed its checks (told at its polls)
        self._answered_rows: set = set()  # store rows of the last refit attempt, published or rejected
        self._refitting = False  # (one bool, set by the refit thread only)
        self.identities: dict = {}  # ZeroMQ routing id -> (walker, last contact)
        self.stats = dict(started=time.time(), refits=0, refit_seconds=0.0, rejected_refits=0,
                          rejected_in_a_row=0, last_rejection=None, requeued_at_start=requeued,
                          label_errors=0, protocol_errors=0, filtered_labels=0, filtered=[], refit_running=None)
        self.ready = threading.Event()  # set once the socket is bound and the threads run
        self.executor = None
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # hard cap: ZeroMQ drops the connection of a peer sending more than twice the limit; between
        # the limit and the cap the peer gets a `too_large` error reply (protocol.decode)
        self.sock.setsockopt(zmq.MAXMSGSIZE, 2 * cfg.max_message_bytes + 4096)
        self.sock.bind(cfg.bind)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.log("start", pid=os.getpid(), address=self.address, requeued=requeued, run_dir=str(run),
                 versions=self.versions.versions(), initial_configs=len(self.initial))

    # ---- lifecycle ------------------------------------------------------------------------
    def serve(self, install_signals: bool = True):
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop_event.set())
        self.executor = make_executor(self.cfg.executor, self.reference)
        self.refitter = Refitter(self.spec, self.cfg.fit, self.store, self.versions, self.initial,
                                 report=self._on_filtered, initial_names=self.initial_names)
        threads = [threading.Thread(target=self._run_or_stop, args=(self._scheduler,), name="scheduler", daemon=True),
                   threading.Thread(target=self._run_or_stop, args=(self._refit_loop,), name="refit", daemon=True)]
        for t in threads:
            t.start()
        self._write_status()
        (self.cfg.run_dir / "server.json").write_text(json.dumps(dict(pid=os.getpid(), address=self.address)))
        self.ready.set()
        try:
            self._loop()
        finally:
            self.stop_event.set()
            for t in threads:
                t.join(10)
            self.executor.close()
            self._write_status()
            self.sock.close(0)
            self.ctx.term()
            self.log("stop")
            self.log.close()

    def say(self, text: str):
        """A line for the user on the server's console (stderr of `pylal serve`; silent in-process)."""
        if self.console:
            print(f"pylal serve: {text}", file=sys.stderr, flush=True)

    def _on_filtered(self, name: str, problem: str, row_id=None):
        """A label kept out of fits (Refitter.filter_label): logged, printed, in the status, told to its walker."""
        self.log("filtered", name=name, row=row_id, problem=problem)
        with self._state_lock:  # called from the scheduler thread and from the refit thread
            self.stats["filtered_labels"] += 1
            self.stats["filtered"] = (self.stats["filtered"] + [dict(name=name, problem=problem, time=time.time())])[-10:]
        self.say(f"label {name} filtered, not fitted: {problem}")
        if row_id is not None:
            walker, flag_id = self.store.flag_origin(row_id)
            if flag_id:  # a walker holding at this flag (on_flag wait) learns no refit follows
                with self._state_lock:
                    self.filtered.setdefault(walker, set()).add(flag_id)

    def _run_or_stop(self, fn):
        """Body of a background thread: run `fn`; if it raises, log the traceback and stop the server."""
        try:
            fn()
        except Exception:  # a dead background thread must not go unnoticed: log and stop the server
            self.log("thread_crash", thread=threading.current_thread().name, traceback=traceback.format_exc())
            self.stop_event.set()

    # ---- socket loop ----------------------------------------------------------------------
    def _loop(self):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        announced = (self.versions.current() or {}).get("version")
        while not self.stop_event.is_set():
            if poller.poll(50):
                while True:
                    try:
                        frames = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(frames)
            current = (self.versions.current() or {}).get("version")
            if current != announced:
                announced = current
                self._announce(current)

    def _send(self, ident: bytes, msg: dict):
        payload = protocol.encode(msg)
        try:
            self.sock.send_multipart([ident, payload, auth.sign(self.key, payload)], zmq.NOBLOCK)
        except zmq.ZMQError as err:  # peer gone / its queue full: it will ask again
            self.log("send_failed", error=str(err))

    def _announce(self, version):
        now = time.time()
        with self._state_lock:
            recent = [ident for ident, (walker, seen) in self.identities.items() if now - seen < ANNOUNCE_WINDOW]
            known = len(self.identities)
        for ident in recent:
            self._send(ident, {"type": "announce", "version": version})
        self.log("announce", version=version, walkers=known)

    def _handle(self, frames: list):
        ident, rid, kind = frames[0], None, None
        try:
            if len(frames) != 3:
                raise protocol.ProtocolError(protocol.MALFORMED, f"expected 2 frames [payload, mac], got {len(frames) - 1}")
            payload, mac = frames[1], frames[2]
            if len(payload) > self.cfg.max_message_bytes:
                raise protocol.ProtocolError(protocol.TOO_LARGE, f"message of {len(payload)} bytes exceeds the "
                                                                 f"limit of {self.cfg.max_message_bytes}")
            if not auth.verify(self.key, payload, mac):
                self.log("refused", reason="bad mac", peer=ident.hex())
                raise protocol.ProtocolError(protocol.UNAUTHENTICATED, "authentication failed: message not signed "
                                                                       "with the server's token (HMAC-SHA256)")
            msg = protocol.decode(payload, self.cfg.max_message_bytes)
            rid, kind = msg.get("rid"), msg["type"]
            if abs(msg["ts"] - time.time()) > self.cfg.max_clock_skew:
                raise protocol.ProtocolError(protocol.STALE, f"timestamp off by more than {self.cfg.max_clock_skew:g} s "
                                                             "(replayed message or unsynchronised clock)", kind)
            reply = getattr(self, f"_on_{kind}")(ident, msg)
        except protocol.ProtocolError as err:
            with self._state_lock:
                self.stats["protocol_errors"] += 1
            rid = rid if rid is not None else err.rid  # a message refused in validation still names its request
            reply = protocol.error_reply(err, rid)
            if err.code == protocol.BAD_CONFIG:
                self.log("rejected", reason=err.message)
        except Exception as err:  # never let one message take the server down
            self.log("internal_error", traceback=traceback.format_exc())
            reply = protocol.error_reply(protocol.ProtocolError(protocol.INTERNAL, f"{type(err).__name__}: {err}",
                                                                kind), rid)
        if rid is not None:
            reply["rid"] = rid
        self._send(ident, reply)

    def _contact(self, ident, walker: str, new_flags: int = 0, **fields):
        now = time.time()
        with self._state_lock:
            self.identities[ident] = (walker, now)
            w = self.walkers.setdefault(walker, dict(flags=0, first_contact=now))
            w.update(last_contact=now, **fields)
            w["flags"] += new_flags

    def _on_hello(self, ident, msg):
        self._contact(ident, msg["walker"], run_id=msg.get("run_id"))
        self.log("hello", walker=msg["walker"], run_id=msg.get("run_id"))
        cur = self.versions.current() or {}
        return {"type": "welcome", "server": protocol.PROTOCOL, "version": cur.get("version", -1),
                "species": list(self.spec.species), "max_message_bytes": self.cfg.max_message_bytes}

    def _on_flag(self, ident, msg):
        atoms = protocol.decode_config(msg["config"], self.spec.species, self.cfg.max_atoms)
        n_max = self.cfg.reference.label_max_atoms
        if n_max and len(atoms) > n_max:
            raise protocol.ProtocolError(protocol.BAD_CONFIG, f"{len(atoms)} atoms exceed [reference] label_max_atoms "
                                         f"= {n_max}; carve big cells (fix pylal label_max_atoms {n_max})", "flag")
        if any(i >= len(atoms) for i in msg["prov"].get("core", ())):
            raise protocol.ProtocolError(protocol.BAD_FIELD, f"flag: provenance 'core' indexes atoms beyond the "
                                         f"configuration's {len(atoms)}", "flag")
        prov = dict(msg["prov"])
        prov["walker"] = msg["walker"]
        prov["flag_id"] = msg.get("id")
        row_id, key, new = self.store.add_flag(atoms, prov)  # committed (fsync) before the ack below
        self._contact(ident, msg["walker"], new_flags=int(new))
        if new:
            self.wake_scheduler.set()
        self.log("flag", walker=msg["walker"], row=row_id, key=key, new=new, step=prov.get("step"),
                 f_max=prov.get("f_max"), n_atoms=len(atoms))
        return {"type": "ack", "id": msg.get("id"), "key": key, "row": row_id,
                "status": "queued" if new else "duplicate"}

    def _on_poll(self, ident, msg):
        self._contact(ident, msg["walker"], version=msg["version"])
        cur = self.versions.current()
        if cur is None or cur["version"] <= msg["version"]:
            with self._state_lock:  # the scheduler and refit threads add to these sets
                filtered = sorted(self.filtered.get(msg["walker"], ()))
                rejected = sorted(self.unanswered.get(msg["walker"], ()))
            return {"type": "none", "version": -1 if cur is None else cur["version"],
                    "filtered": filtered, "refit_rejected": rejected}
        pointer, data = self.versions.current_bytes()
        return {"type": "params", "version": pointer["version"], "hash": pointer["hash"], "data": data}

    def _on_status(self, ident, msg):
        return {"type": "status", **self.status()}

    # ---- status ---------------------------------------------------------------------------
    def status(self) -> dict:
        """A snapshot, safe to serialise or change in any thread: the shared state is copied under
        the state lock (the store and version files are read outside it)."""
        # refit_pending: a refit running, or due for labels already in (a version newer than the newest follows)
        pending = self._refitting or self.policy.due(self.refitter.new_labels(), 0.0)
        counts, versions, current = self.store.counts(), self.versions.versions(), self.versions.current()
        recent_errors = self.store.recent_errors(5)
        with self._state_lock:
            walkers, stats = copy.deepcopy(self.walkers), copy.deepcopy(self.stats)
        return dict(address=self.address, pid=os.getpid(), counts=counts, versions=versions, current=current,
                    walkers=walkers, recent_errors=recent_errors, stats={**stats, "refit_pending": pending},
                    time=time.time())

    # ---- what an in-process owner (pylal campaign) may ask --------------------------------------
    def newest_version(self) -> int | None:
        return self.versions.latest()

    def newest_params(self) -> Parameters | None:
        latest = self.versions.latest()
        return Parameters.load(self.versions.path(latest)) if latest is not None else None

    def labelled_atoms(self) -> list:
        """Every labelled flag (ase.Atoms with the reference's results), in labelling order."""
        return [atoms for _, atoms in self.store.labeled_atoms()]

    def holdout_errors(self, params) -> dict:
        """Held-out errors and calibration of `params` ([fit] holdout_file; {} without one)."""
        held = self.refitter.holdout
        if held is not None and held.spec != params.spec:  # a version from before the basis grew
            held = self.refitter._holdout(params.spec)
        return held.errors(params) if held is not None else {}

    def fit_all(self, **settings_changes):
        """Fit every label now with the refit settings changed by `settings_changes` (e.g. the campaign's
        final ARD fit), without publishing it. Returns (params, problems of pylal.fit.checks, held-out
        errors or {}). Call after the server stopped (the design is not shared across threads)."""
        return self.refitter.fit_unpublished(**settings_changes)

    def _write_status(self):
        _atomic_json(self.cfg.run_dir / "status.json", self.status())  # a snapshot: written without the lock

    # ---- labelling ------------------------------------------------------------------------
    def _scheduler(self):
        attempts: dict = {}
        round_started = 0  # labels started since the last refit (budget_per_round)
        refits_seen = 0
        references: list = []  # descriptors of labelled / in-flight rows (only with a budget)
        desc_cache: dict = {}
        budget = self.cfg.refit.budget_per_round
        last_status = last_notice = 0.0
        while not self.stop_event.is_set():
            for row_id, result in self.executor.collect(wait=0.1):
                n = attempts.pop(row_id, 1)
                if result["ok"]:
                    self.store.mark_labeled(row_id, result["results"], result["wall_time"], n)
                    self.log("labeled", row=row_id, seconds=round(result["wall_time"], 3), attempts=n)
                    # the refitter's label filter, at once (the walker learns it at its next poll)
                    problem = self.refitter.label_problem(self.store.labeled_atoms(ids=[row_id])[0][1])
                    if problem:  # e.g. a guard event's blown-up configuration: labelled, never fitted
                        self.refitter.filter_label(f"row {row_id}", problem, row_id)
                    else:
                        self.wake_refit.set()
                elif n <= self.cfg.executor.retries:
                    self.store.set_status(row_id, "queued", attempts=n, error=result["error"][:2000])
                    self.log("retry", row=row_id, attempt=n, error=result["error"])
                else:
                    self.store.mark_failed(row_id, result["error"], n)
                    with self._state_lock:
                        self.stats["label_errors"] += 1
                    self.log("label_failed", row=row_id, attempts=n, error=result["error"])
            if self.stats["refits"] != refits_seen:
                refits_seen, round_started = self.stats["refits"], 0
            free = self.executor.capacity()
            if budget:
                free = min(free, budget - round_started)
            if free > 0:
                queued = self.store.rows("queued", order="id", limit=None if budget else free)
                if budget and queued:
                    if not references:
                        references = [descriptor(r.toatoms(), self.spec.r_cut)
                                      for s in ("labeled", "labeling") for r in self.store.rows(s)]
                    queued.sort(key=lambda r: -(r.get("f_max") or 0.0))
                    cands = [(r.id, desc_cache.setdefault(r.id, descriptor(r.toatoms(), self.spec.r_cut)))
                             for r in queued]
                    policy = self.cfg.refit.selection
                    chosen, dropped = select_batch(cands, references, free if policy == "greedy_fi" else len(cands),
                                                   self.cfg.refit.duplicate_tol)
                    if len(chosen) > free:  # more distinct flags than the budget: the batch policy picks
                        chosen = self._pick(policy, [r for r in queued if r.id in set(chosen)], free)
                    for row_id, twin in dropped:
                        self.store.set_status(row_id, "dropped", error=f"near-duplicate of row {twin}"
                                              if twin else "near-duplicate of a labelled configuration")
                        self.log("dropped", row=row_id, twin=twin)
                    references.extend(desc_cache[i] for i in chosen)
                    queued = [r for r in queued if r.id in set(chosen)]
                for row in queued[:free]:
                    attempts[row.id] = row.get("attempts", 0) + 1
                    self.store.set_status(row.id, "labeling", attempts=attempts[row.id])
                    config = dict(numbers=row.numbers, positions=row.positions, cell=row.cell, pbc=row.pbc)
                    self.executor.submit(row.id, config)
                    round_started += 1
            now = time.time()
            if now - last_status > 2.0:
                self._write_status()
                last_status = now
                running = self.stats.get("refit_running")
                if running and now - running["started"] >= RUNNING_NOTICE and now - last_notice >= 30.0:
                    self.say(format_running(running, now))
                    last_notice = now

    def _pick(self, policy: str, rows: list, budget: int) -> list:
        """Batch selection (pylal.select, Zaverkin et al. 2022) among distinct queued flags: features
        are summed basis vectors in the posterior metric of the current training set (eq. 23);
        the rows not picked stay queued for the next round."""
        from pylal.select import select_batch as pick
        from pylal.select.features import basis_vectors, design_features

        t0 = time.perf_counter()
        atoms = [r.toatoms() for r in rows]
        phi_pool, phi_train = design_features(self.refitter.design, basis_vectors(self.refitter.spec, atoms))
        scores = [r.get("f_max") or 0.0 for r in rows]
        idx = pick(policy, phi_pool, phi_train, budget, np.random.default_rng(self.cfg.fit.seed + len(rows)),
                   scores=scores)
        chosen = [rows[i].id for i in idx]
        self.log("selected", policy=policy, chosen=chosen, candidates=len(rows),
                 seconds=round(time.perf_counter() - t0, 3))
        return chosen

    # ---- refits ---------------------------------------------------------------------------
    def _refit_loop(self):
        # the design of everything already labelled is built now (and JAX compiled), not at the first flag
        t0 = time.perf_counter()
        self.refitter.update_design()
        current = self.versions.current() or {}
        new = len(self.refitter.design) - current.get("n_configs", 0)  # configurations the current version lacks
        self.log("design_ready", configs=len(self.refitter.design), seconds=round(time.perf_counter() - t0, 3),
                 labels_not_in_current=new)
        if (current == {} and len(self.refitter.design)) or new:
            self._refit(reason="start")
        last_fit = time.time()
        while not self.stop_event.is_set():
            self.wake_refit.wait(0.2)
            self.wake_refit.clear()
            if (self.cfg.run_dir / "HOLD").exists():
                continue
            if self.policy.due(self.refitter.new_labels(), time.time() - last_fit):
                self._refit(reason="policy")
                last_fit = time.time()

    def _refit(self, reason: str):
        t0 = time.perf_counter()
        self._refitting = True
        try:
            self.refitter.update_design()  # (the refit does it too) to say what this refit fits
            running = dict(version=(self.versions.latest() or 0) + 1, started=time.time(),
                           configs=len(self.refitter.design), size=self.refitter.spec.size)
            with self._state_lock:
                self.stats["refit_running"] = running
            pointer = self.refitter.refit()
        finally:
            self._refitting = False
            with self._state_lock:
                self.stats["refit_running"] = None
        dt = time.perf_counter() - t0
        with self._state_lock:
            self.stats["refits"] += 1
            self.stats["refit_seconds"] = round(dt, 3)
        if "rejected" in pointer:  # the fit failed its sanity checks: walkers keep the current version
            from pylal.fit.checks import likely_cause

            rejection = dict(reasons=pointer["rejected"], file=pointer["file"], version=pointer.get("version"),
                             configs=pointer["n_configs"], likely_cause=likely_cause(pointer["rejected"]),
                             worst=pointer.get("worst", []), advice=pointer.get("advice", ""),
                             prior_force_rmse=pointer.get("prior_force_rmse"),
                             current=(self.versions.current() or {}).get("version"), time=time.time())
            with self._state_lock:  # the rejection first: whoever sees the count sees it
                self.stats["last_rejection"] = rejection
                self.stats["rejected_refits"] += 1
                self.stats["rejected_in_a_row"] += 1
            self.log("refit_rejected", reason=reason, problems=pointer["rejected"], file=pointer["file"],
                     configs=pointer["n_configs"], seconds=round(dt, 3), worst=rejection["worst"],
                     advice=rejection["advice"])
            self.say(format_rejection(rejection))
            rows = set(self.refitter.rows)
            # a walker holding at one of these flags (on_flag wait) learns no version follows it
            origins = [self.store.flag_origin(row_id) for row_id in sorted(rows - self._answered_rows)]
            with self._state_lock:
                for walker, flag_id in origins:
                    if flag_id:
                        self.unanswered.setdefault(walker, set()).add(flag_id)
                self._answered_rows = rows
            return
        growth = pointer.get("growth")
        with self._state_lock:
            self._answered_rows = set(self.refitter.rows)
            self.stats["rejected_in_a_row"] = 0
            self.stats["newest"] = dict(version=pointer["version"], configs=pointer["n_configs"],
                                        calibration_scale=pointer.get("calibration_scale"),
                                        holdout=pointer.get("holdout"))
            if "over_budget" in pointer:
                self.stats["over_budget"] = pointer["over_budget"]
            if "shrink" in pointer:
                self.stats["shrink"] = dict(pointer["shrink"], version=pointer["version"])
            if growth is not None:  # a copy: the refitter appends to its log outside the state lock
                self.stats["growth"] = list(self.refitter.growth_log)
        self.log("refit", reason=reason, version=pointer["version"], hash=pointer["hash"],
                 configs=pointer["n_configs"], seconds=round(dt, 3), calibration_scale=pointer.get("calibration_scale"),
                 holdout=pointer.get("holdout"))
        if dt >= RUNNING_NOTICE:
            self.say(f"refit v{pointer['version']} published: {pointer['n_configs']} configurations, {dt:.0f} s")
        if "over_budget" in pointer:
            self.log("refit_over_budget", message=pointer["over_budget"])
            self.say(pointer["over_budget"])
        if "shrink" in pointer:
            self.log("refit_shrunk_to_prior", **self.stats["shrink"])
            self.say(shrink_message(self.stats["shrink"]))
        if growth is not None:
            self.log("basis_growth", **growth)
            verdict = (f"v{pointer['version']} uses it" if growth["accepted"]
                       else "kept the current basis (cross-validation gain < 5%, or its checks failed)")
            self.say(f"basis growth after v{growth['version']}: tried {growth['tried']} ({growth['reason']}); "
                     f"CV force RMSE {growth['cv_force_rmse'][0]:.4f} -> {growth['cv_force_rmse'][1]:.4f} eV/A; "
                     f"{verdict}")


def shrink_message(shrink: dict) -> str:
    """One line for a version that was shrunk toward its prior (pylal.fit.committee.prior_shrinkage)."""
    return (f"refit v{shrink['version']}: cross-validation force RMSE {shrink['cv_force_rmse']:.3g} eV/A is worse than "
            f"the prior alone ({shrink['prior_force_rmse']:.3g}); the correction is scaled by {shrink['factor']:.2f} "
            f"toward the prior ({shrink['shrunk_force_rmse']:.3g} eV/A). More labels let the fit stand on its own; "
            f"if it persists, a smaller basis ([fit] n_max, l_max) or a physics prior ([fit] lammps_prior)")


def serve(config_path) -> int:
    cfg = ServerConfig.load(config_path)
    server = Server(cfg, console=True)
    print(f"pylal serve: listening on {server.address}; run folder {cfg.run_dir}; token {cfg.token_path}",
          flush=True)
    server.serve()
    return 0
