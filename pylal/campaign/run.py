"""`pylal campaign CONFIG.toml`: a whole on-the-fly HAL campaign in one command.

1. initial data (labelled by the reference) and a held-out reference MD set;
2. the refit server (pylal/server, in this process) fits version 1 and then labels, refits and
   publishes while the walkers run;
3. LAMMPS walkers (`mpirun -np N lmp -in DECK`, fix pylal with `on_flag wait`) explore with the
   HAL bias; fix pylal rolls a blown-up step back to its last good state, and a walker that dies
   anyway restarts from its last checkpoint with a new seed (campaign.json: walkers[].restarts,
   walkers[].recoveries);
4. termination (HAL: "stable for 5000 steps"): every walker ran `quiet_steps` on the newest version
   without a flag, with nothing left to label and no refit running or due; or a cap (labels, minutes) ends
   it unconverged;
5. the final fit after data generation (ARD, HAL sec. 2.2 eq. 28), the data set, held-out errors,
   properties against the reference (pylal.validate) and the report (pylal.report).
Everything lands in the run folder (docs/campaign.md); nothing is lost when a step fails: the
labelled data stay in RUN/store.db and every version in RUN/versions/.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
from ase.io import read, write

from pylal.campaign.cells import campaign_cell, reference_md
from pylal.campaign.config import CampaignConfig
from pylal.campaign.density import outside_holdout, volume_range
from pylal.campaign.saturation import LearningCurve
from pylal.campaign.trace import read_trace, summarize
from pylal.campaign.walkers import WalkerRun
from pylal.files import atomic_write


def _exit_record(walker_dir: Path) -> dict | None:
    """Why a walker's run ended, as `fix pylal` recorded it (exit_file, pylal/lammps/walker.py)."""
    try:
        return json.loads((walker_dir / "pylal_exit.json").read_text())
    except (OSError, ValueError):
        return None


class Campaign:
    def __init__(self, cfg: CampaignConfig, log=print):
        self.cfg = cfg
        self.run = cfg.server.run_dir
        self.run.mkdir(parents=True, exist_ok=True)
        self.print = log
        self.t0 = time.time()
        self.record = dict(config=cfg.raw, started=self.t0, finished=None, status="running",
                           walkers=[dict(name=w.name, temperature=w.temperature,
                                         pressure=w.pressure if w.pressure >= 0 else None,
                                         ranks=w.ranks, deck=w.deck) for w in cfg.walkers],
                           termination=dict(quiet_steps=cfg.termination.quiet_steps,
                                            max_labels=cfg.termination.max_labels,
                                            max_minutes=cfg.termination.max_minutes),
                           timings={}, final={})
        self.decided_on = {}  # per walker: step, version and quiet steps the termination was decided on
        self.holdout_volumes = None  # (min, max) volume per atom of the held-out set
        self.server = None
        self.walkers: list[WalkerRun] = []
        self.reference = None

    # ---- bookkeeping ------------------------------------------------------------------------
    def say(self, text: str):
        line = f"[{time.time() - self.t0:6.0f} s] {text}"
        self.print(line, flush=True)
        with open(self.run / "campaign.log", "a") as f:
            f.write(line + "\n")

    def warn(self, text: str):
        """A WARNING in the log and in campaign.json "warnings"."""
        self.say(f"WARNING: {text}")
        self.record.setdefault("warnings", []).append(text)

    def save_record(self):
        atomic_write(self.run / "campaign.json", json.dumps(self.record, indent=2, default=str).encode())

    def reference_calculator(self):
        if self.reference is None:
            from pylal.reference import make_calculator
            ref = self.cfg.server.reference
            self.reference = make_calculator(ref.calculator, **ref.options)
        return self.reference

    def bulk_cell(self, seed: int = 0):
        """The [initial] bulk cell; with [initial] substitute a random alloy arrangement per seed."""
        init = self.cfg.initial
        return campaign_cell(init.bulk, init.repeat, init.substitute, seed)

    # ---- 1: data --------------------------------------------------------------------------------
    def initial_data(self) -> list:
        from pylal.reference import label

        path = self.run / "initial.xyz"
        if path.exists():  # a resumed campaign keeps its initial set
            return read(path, index=":")
        init = self.cfg.initial
        if init.file:
            configs = read(init.file, index=":")
        else:
            configs = []
            for i in range(init.n_configs):
                atoms = self.bulk_cell(init.seed + i)
                atoms.rattle(init.rattle, seed=init.seed + i)
                configs.append(atoms)
        labelled = []
        for atoms in configs:
            if atoms.calc is not None and "forces" in atoms.calc.results:
                labelled.append(atoms)
                continue
            result = label(atoms, self.reference_calculator(), self.cfg.server.reference.properties)
            if not result.ok:
                raise RuntimeError(f"initial configuration could not be labelled: {result.message}")
            labelled.append(result.atoms)
            self.record["final"]["initial_reference_calls"] = self.record["final"].get("initial_reference_calls", 0) + 1
        write(path, labelled)
        return labelled

    def holdout(self) -> list:
        """Reference MD at each held-out temperature (n_configs snapshots each), NVT or, with
        [holdout] pressure >= 0, with a barostat; an alloy cell gets its own arrangement per run.
        With [holdout] file: those labelled configurations, as they are (no reference MD)."""
        path = self.run / "holdout.xyz"
        if path.exists():
            return read(path, index=":")
        h = self.cfg.holdout
        if h.file:  # cached reference data (e.g. DFT MD, inputs/dft/make_holdout.py): never recomputed
            frames = read(h.file, index=":")
            unlabelled = [i for i, a in enumerate(frames) if a.calc is None or "forces" not in a.calc.results]
            if unlabelled:
                raise ValueError(f"[holdout] file {h.file}: configuration(s) {unlabelled[:5]} carry no reference "
                                 "forces (the held-out set must be labelled)")
            write(path, frames)
            return frames
        frames = []
        for k, temperature in enumerate(h.temperatures or [h.temperature]):
            run = reference_md(self.bulk_cell(h.seed + k), self.reference_calculator(), temperature, h.n_configs,
                               stride=h.stride, seed=h.seed + k, equilibrate=h.equilibrate, pressure=h.pressure)
            for atoms in run:
                atoms.info["holdout_temperature"] = float(temperature)
            frames += run
        write(path, frames)
        return frames

    # ---- 2: server ------------------------------------------------------------------------------
    def start_server(self):
        from pylal.server.server import Server

        self.cfg.server.fit.initial_data = [str(self.run / "initial.xyz")]
        self.cfg.server.fit.holdout_file = str(self.run / "holdout.xyz")  # every version's held-out errors
        self.choose_basis()
        self.server = Server(self.cfg.server)
        self.server_thread = threading.Thread(target=self.server.serve, kwargs=dict(install_signals=False),
                                              name="refit-server", daemon=True)
        self.server_thread.start()
        if not self.server.ready.wait(300):
            raise RuntimeError("the refit server did not start within 300 s (see RUN/server.log.jsonl)")
        deadline = time.time() + 600
        while self.server.status()["current"] is None:
            rejected = self.server.status()["stats"].get("last_rejection")
            if rejected:
                raise RuntimeError(self.no_usable_fit(rejected))
            if time.time() > deadline or not self.server_thread.is_alive():
                raise RuntimeError("the refit server published no first version (see RUN/server.log.jsonl)")
            time.sleep(0.5)
        self.say(f"refit server at {self.server.address}: version {self.server.newest_version()} fitted to "
                 f"{len(self.server.initial)} initial configurations")

    def choose_basis(self):
        """What the campaign derives for the basis from its own system, printed: r_min from the initial
        structure when [fit] r_min is unset (pylal.model.basis.default_r_min), and the starting size."""
        from pylal.model.basis import R_MIN_FRACTION, shortest_distance, default_r_min
        from pylal.model.registry import basis_grows, spec_from_config

        fit = self.cfg.server.fit
        if fit.basis == "power" and not fit.r_min:
            init = self.cfg.initial
            structures = read(init.file, index=":") if init.file else [self.bulk_cell(init.seed)]
            fit.r_min = default_r_min(fit.species, structures)
            self.say(f"basis: r_min {fit.r_min:.2f} A ({R_MIN_FRACTION:g} x the shortest distance "
                     f"{min(shortest_distance(a) for a in structures):.2f} A of the initial structure)")
        if not fit.initial_params:
            spec = spec_from_config(fit)
            grows = (f"grows with the data within [fit] refit_budget {fit.refit_budget:g} s per refit"
                     if basis_grows(fit) else "fixed by [fit]")
            self.say(f"basis: {fit.basis} {spec.size_label()}"
                     + (f", {spec.n_chemical} chemical channels for {spec.n_species} species" if fit.basis == "power"
                        else "") + f"; {grows}")

    @staticmethod
    def no_usable_fit(rejected: dict) -> str:
        from pylal.fit.checks import describe_worst

        return (f"no usable fit: the refit of {rejected['configs']} configurations failed its sanity checks ("
                + "; ".join(rejected["reasons"]) + f"); it is kept in {rejected['file']}. "
                + (f"Worst configurations: {describe_worst(rejected['worst'])}. " if rejected.get("worst") else "")
                + (f"To change it: {rejected['advice']}. " if rejected.get("advice") else "")
                + "Likely cause: " + rejected["likely_cause"])

    def server_news(self, stats: dict, seen: dict):
        """Console lines for what the server did since the last call: labels filtered, refits rejected."""
        from pylal.server.status import format_rejection

        n = stats.get("filtered_labels", 0)
        if n > seen.get("filtered", 0):
            for f in (stats.get("filtered") or [])[-(n - seen.get("filtered", 0)):]:
                self.say(f"label {f['name']} filtered, not fitted: {f['problem']}")
            seen["filtered"] = n
        growth = stats.get("growth") or []
        for g in growth[seen.get("growth", 0):]:
            self.say(f"basis growth after v{g['version']}: tried {g['tried']} ({g['reason']}): CV force RMSE "
                     f"{g['cv_force_rmse'][0]:.4f} -> {g['cv_force_rmse'][1]:.4f} eV/A"
                     + (f", held-out {g['holdout_force_rmse'][0]:.4f} -> {g['holdout_force_rmse'][1]:.4f}"
                        if "holdout_force_rmse" in g else "")
                     + ("; published" if g["accepted"] else "; kept the current basis"))
        seen["growth"] = len(growth)
        if stats.get("over_budget") and stats["over_budget"] != seen.get("over_budget"):
            self.warn(stats["over_budget"])
            seen["over_budget"] = stats["over_budget"]
        shrink = stats.get("shrink")
        if shrink and shrink.get("version") != seen.get("shrink"):
            from pylal.server.server import shrink_message

            self.say(shrink_message(shrink))
            seen["shrink"] = shrink.get("version")
        rejection = stats.get("last_rejection")
        if rejection and rejection.get("time") != seen.get("rejection"):
            self.say(format_rejection(rejection))
            seen["rejection"] = rejection.get("time")

    def stop_server(self):
        if self.server is not None:
            self.server.stop_event.set()
            self.server_thread.join(60)

    # ---- 3, 4: walkers until termination -----------------------------------------------------------
    def start_walkers(self):
        params = self.run / "current.npz"
        r_cut = self.server.spec.r_cut
        for k, w in enumerate(self.cfg.walkers):
            walker = WalkerRun(w, self.cfg, params, self.bulk_cell(self.cfg.initial.seed + 1000 + k), r_cut)
            walker.start()
            self.walkers.append(walker)
            (walker.dir / "tolerance.json").write_text(json.dumps(dict(f_tol=w.hal.get("f_tol", self.cfg.hal.f_tol),
                                                                          s_tol=None, sigma_tol=w.hal.get("sigma_tol", self.cfg.hal.sigma_tol) or None,
                                                                          n_atoms=walker.n_atoms)))
            self.say(f"walker {w.name}: {w.temperature:g} K, {w.ranks} rank(s), deck {w.deck}")

    def status_line(self, summaries, status: dict) -> str:
        counts = status["counts"]
        queue = counts.get("queued", 0) + counts.get("labeling", 0)
        held = (status["stats"].get("newest") or {}).get("holdout") or {}
        running = status["stats"].get("refit_running")
        parts = [f"labels {counts.get('labeled', 0)} (queue {queue}, failed {counts.get('failed', 0)}"
                 + (f", filtered {counts['filtered']}" if counts.get("filtered") else "") + ") "
                 f"version {status['versions'][-1] if status['versions'] else None}"
                 + (f" (held-out F RMSE {held['force_rmse']:.3g} eV/A, rms z {held['force_rms_z']:.2f})"
                    if held.get("force_rms_z") is not None else "")]
        if running and time.time() - running["started"] >= 10.0:
            from pylal.server.status import format_running

            parts.append(format_running(running))
        m = self.cfg.termination.quiet_steps
        for walker, s in zip(self.walkers, summaries):
            state = "" if walker.returncode is None else f" ended({walker.returncode})"
            parts.append(f"{walker.cfg.name}: step {s.step} v{s.version} tau {s.tau:.3g} sigma {s.sigma:.3g} "
                         f"f_max {s.f_max:.3g} flags {s.n_flags} quiet {min(s.quiet_steps, m)}/{m}"
                         f"{f' V {s.volume_per_atom:.1f} A^3/atom' if np.isfinite(s.volume_per_atom) else ''}{state}")
        return " | ".join(parts)

    def monitor(self, every: float = 10.0) -> str:
        """Returns why the campaign ended: converged, saturated, max_labels, max_minutes, walkers_failed,
        fits_rejected, server_failed."""
        t = self.cfg.termination
        last_print = 0.0
        curve = LearningCurve()
        warned_degrading = False
        warned_density = set()
        news: dict = {}
        while True:
            time.sleep(1.0)
            if not self.server_thread.is_alive():
                return "server_failed"
            status = self.server.status()  # the server's public status (as status.json / pylal status)
            stats, counts = status["stats"], status["counts"]
            self.server_news(stats, news)
            if stats.get("rejected_in_a_row", 0) >= t.max_rejected_refits:
                self.say(self.no_usable_fit(stats["last_rejection"]))
                return "fits_rejected"
            newest = status["versions"][-1] if status["versions"] else None
            summaries = [summarize(read_trace(w.trace), newest) for w in self.walkers]
            self.decided_on = {w.cfg.name: dict(step=s.step, version=s.version, quiet_steps=s.quiet_steps)
                               for w, s in zip(self.walkers, summaries)}  # what the walkers had run at the decision
            for w, s in zip(self.walkers, summaries):
                warning = outside_holdout(w.cfg.name, s.volume_per_atom, self.holdout_volumes)
                if warning is not None and w.cfg.name not in warned_density:
                    self.warn(warning)
                    warned_density.add(w.cfg.name)
            newest_fit = stats.get("newest") or {}
            held = newest_fit.get("holdout") or {}
            if held.get("force_rmse") is not None:
                curve.add(newest_fit["configs"], held["force_rmse"], min((s.step for s in summaries), default=0))
                warning = curve.degrading()
                if warning is not None and not warned_degrading:
                    self.warn(warning)
                    warned_degrading = True
                # over at least one quiet window of MD: walkers that flag at every check have not explored yet
                message = curve.saturated(t.saturation_labels, t.saturation_gain, min_steps=t.quiet_steps)
                if message is not None:
                    self.say(self.status_line(summaries, status))
                    self.say(message)
                    return "saturated"
            for walker in self.walkers:
                code = walker.poll()
                if code not in (None, 0) and walker.ended and walker.restarts < t.max_restarts:
                    tail = walker.log_tail()
                    if "Unrecognized fix style 'pylal'" in tail:
                        raise RuntimeError(
                            f"walker {walker.cfg.name}: this lmp does not load the pylal plugin. Is pylal installed "
                            f"(pip install .) in {Path(sys.executable).parent.parent}, and not shadowed by a source "
                            f"tree on PYTHONPATH ({os.environ.get('PYTHONPATH', '')!r})? (docs/fix_pylal.md, Loading)")
                    record = _exit_record(walker.dir) or {}
                    reason = record.get("reason")
                    lost = reason == "lost_atoms" or "Lost atoms" in tail  # the log text: fallback
                    why = (" (the potential is not yet stable there: atoms flew apart)" if lost
                           else f" ({reason}: {record.get('message', '')})" if reason not in (None, "running") else "")
                    self.say(f"walker {walker.cfg.name} exited with code {code}{why}; its flags are kept; log tail:\n"
                             f"{tail}")
                    record = walker.restart(self.run / "current.npz", reason=(reason if reason not in (None, "running")
                                                                               else "lost_atoms" if lost else f"exit code {code}"))
                    self.say(f"walker {walker.cfg.name}: restart {walker.restarts} from its {record['source']} "
                             f"with seed {walker.seed}")
                    self.record_recoveries()
                    self.save_record()
            status = self.server.status()
            counts = status["counts"]
            busy = (counts.get("queued", 0) + counts.get("labeling", 0)) or status["stats"].get("refit_pending")
            if time.time() - last_print >= every:
                self.say(self.status_line(summaries, status))
                last_print = time.time()
            if not busy and all(s.quiet_steps >= t.quiet_steps for s in summaries):
                self.say(self.status_line(summaries, status))
                return "converged"
            if counts.get("labeled", 0) >= t.max_labels:
                return "max_labels"
            if time.time() - self.t0 > 60 * t.max_minutes:
                return "max_minutes"
            if all(w.returncode is not None for w in self.walkers):
                return "walkers_ended" if all(w.returncode == 0 for w in self.walkers) else "walkers_failed"

    def record_recoveries(self):
        """campaign.json: per walker, every restart (reason, from where) and every rollback inside LAMMPS."""
        for entry, walker in zip(self.record["walkers"], self.walkers):
            events = walker.recoveries()
            entry.update(restarts=walker.restart_log, recoveries=events,
                         n_rollbacks=sum(1 for e in events if e.get("rollback_to") is not None))

    def stop_walkers(self, grace: float = 60.0):
        for w in self.walkers:
            w.request_stop()
        deadline = time.time() + grace
        while time.time() < deadline and any(w.poll() is None for w in self.walkers):
            time.sleep(0.5)
        for w in self.walkers:
            if w.poll() is None:
                self.say(f"walker {w.cfg.name} did not stop within {grace:g} s; terminating it")
                w.kill()

    # ---- 5: final fit, held-out errors, validation, report ------------------------------------------
    def final_fit(self):
        """The final fit ([final] method, HAL: ARD) on every label, with progress and a time bound. It
        replaces the newest BRR version only when it finishes, passes the sanity checks and is not
        worse on the held-out set; otherwise the newest BRR version is the final potential."""
        from pylal.fit.bayes import FitTimeout

        t0 = time.perf_counter()
        f = self.cfg.final
        newest = self.server.newest_params()
        version = (newest.version if newest is not None else 0) + 1
        n_configs = len(self.server.initial) + len(self.server.labelled_atoms())
        self.say(f"final {f.method} fit on {n_configs} configurations (at most {f.max_minutes:g} min) ...")
        params, errors, why = None, {}, ""
        try:
            params, problems, errors = self.server.fit_all(
                method=f.method, n_members=f.n_members, ard_seconds=60 * f.max_minutes, version=version,
                seed=self.cfg.server.fit.seed + version,
                progress=lambda it, kept, sec: self.say(f"final fit: iteration {it}, {kept} coefficients kept, {sec:.0f} s"))
            params.hyper["final_fit"] = f.method
            if problems:
                why = "it failed its sanity checks: " + "; ".join(problems)
        except FitTimeout as err:
            why = str(err)
        newest_errors = self.server.holdout_errors(newest) if newest is not None else {}
        if not why and newest_errors and errors["force_rmse"] > newest_errors["force_rmse"]:
            why = (f"its held-out force RMSE {errors['force_rmse']:.4f} eV/A is worse than version {newest.version}'s "
                   f"{newest_errors['force_rmse']:.4f}")
        method = f.method
        if why:
            if newest is None:
                raise RuntimeError(f"final fit unusable and no earlier version: {why}")
            self.say(f"WARNING: the final {f.method} fit is not used ({why}); the final potential is version "
                     f"{newest.version} (BRR)")
            params, errors, method = newest, newest_errors, f"brr (version {newest.version}; {f.method} not used)"
        out = self.run / "final"
        out.mkdir(exist_ok=True)
        params.save(out / "params.npz")
        self.export_yace(params, out / "potential.yace")
        dataset = read(self.run / "initial.xyz", index=":") + self.server.labelled_atoms()
        write(out / "dataset.xyz", dataset)
        self.record["timings"]["final_fit"] = time.perf_counter() - t0
        self.record["final"].update(params="final/params.npz", dataset="final/dataset.xyz", version=params.version,
                                    method=method, n_configs=len(dataset), calibration_scale=params.hyper.get(
                                        "calibration", {}).get("scale"), newest_brr_version=newest_errors and {
                                        "version": newest.version, **newest_errors},
                                    **{f"holdout_{k}": v for k, v in errors.items()})
        return params

    def export_yace(self, params, path):
        """An ACE potential also goes out as a PACE .yace (+ its LAMMPS lines), for production runs."""
        if getattr(params.spec, "kind", "") != "ace":
            return
        from pylal.model.export import ExportError, write_yace, yace_pair_style

        try:
            write_yace(params, path)
        except ExportError as err:
            self.say(f"WARNING: no .yace written: {err}")
            return
        path.with_suffix(".lammps").write_text(yace_pair_style(params, path.name))
        self.record["final"]["yace"] = str(path.relative_to(self.run))
        self.say(f"final potential also written as {path} (docs/export.md)")

    def validate(self, params):
        if not self.cfg.validate.enabled:
            return
        try:
            from pylal.validate import property_table, write_validation
        except ImportError as err:
            self.say(f"validation skipped: {err}")
            return
        t0 = time.perf_counter()
        v = self.cfg.validate
        properties, settings = tuple(v.properties), {}
        try:
            if getattr(v, "system", "diamond-si") == "campaign":  # from the campaign's structure and walkers
                from pylal.validate.derive import campaign_settings
                from pylal.validate.table import structure_statement

                crystal, liquids = campaign_settings(self.cfg.initial, [w.temperature for w in self.cfg.walkers],
                                                     quick=v.quick, liquid_temperatures=v.liquid_temperatures)
                settings = dict(crystal=crystal, liquid=liquids)
                if "crystal" in properties:
                    self.say(f"validation crystal: {structure_statement(crystal)}")
                if "liquid" in properties and not liquids:
                    self.say("validation: no liquid g(r): no walker is hot (>= 1.5 x the coldest walker's temperature) "
                             "and [validate] liquid_temperatures is empty")
                    properties = tuple(p for p in properties if p != "liquid")
                elif "liquid" in properties:
                    self.say(f"validation liquid: g(r) at {', '.join(f'{s.t_liquid:g}' for s in liquids)} K from "
                             f"{structure_statement(liquids[0])}")
            self.say(f"validation: {', '.join(properties) or 'no'} properties of the final potential and of the "
                     f"reference{' (quick settings)' if v.quick else ''} ...")
            # Parameters: the unbiased mean potential without f_i checks (tau 0, check_every 0). A PylalCalculator
            # with its defaults computed the K member forces at every step (validation 66 s instead of about 20)
            table = property_table(params, self.reference_calculator(), quick=v.quick, properties=properties,
                                   **settings)
            write_validation(table, self.run / "validation.json")
        except Exception:  # a failed validation must not lose the campaign's results
            self.say(f"validation failed:\n{traceback.format_exc()}")
        self.record["timings"]["validation"] = time.perf_counter() - t0

    def report(self):
        try:
            from pylal.report import make_report
        except ImportError as err:
            self.say(f"report skipped: {err}")
            return None
        self.say("report: evaluating every version on the held-out set ...")
        try:
            return make_report(self.run)
        except Exception:
            self.say(f"report failed:\n{traceback.format_exc()}")
            return None

    def timings(self):
        """MD (walker wall time without the holds at flags), labelling and fitting seconds."""
        label = fit = 0.0
        try:
            for line in (self.run / "server.log.jsonl").read_text().splitlines():
                event = json.loads(line)
                if event.get("event") == "labeled":
                    label += event.get("seconds", 0.0)
                elif event.get("event") == "refit":
                    fit += event.get("seconds", 0.0)
        except (OSError, ValueError):
            pass
        newest = self.server.newest_version() if self.server else -1
        waiting = sum(summarize(read_trace(w.trace), newest).waiting for w in self.walkers)
        md = sum(w.seconds for w in self.walkers) - waiting
        self.record["timings"].update(wall=time.time() - self.t0, md=md, waiting_at_flags=waiting, label=label,
                                      fit=fit)

    # ---- the whole thing --------------------------------------------------------------------------
    def execute(self) -> dict:
        self.save_record()
        try:
            initial = self.initial_data()
            self.say(f"initial set: {len(initial)} labelled configurations ({self.run / 'initial.xyz'})")
            holdout = self.holdout()
            self.holdout_volumes = volume_range(holdout)
            h = self.cfg.holdout
            temperatures = ", ".join(f"{t:g}" for t in h.temperatures or [h.temperature])
            source = f"from {h.file}" if h.file else f"of reference MD at {temperatures} K"
            self.say(f"held-out set: {len(holdout)} snapshots {source} ({self.run / 'holdout.xyz'}, never trained on)")
            self.start_server()
            self.start_walkers()
            self.save_record()
            reason = self.monitor()
            status = self.server.status()  # the state the decision was made on (a flag may still follow)
            self.record["termination"].update(at=time.time(), reason=reason, walkers=self.decided_on,
                                              newest_version=self.server.newest_version(),
                                              newest_version_holdout=(status["stats"].get("newest") or {}).get("holdout"),
                                              rejected_refits=status["stats"].get("rejected_refits", 0))
            self.say(f"termination: {reason}")
            self.stop_walkers()
            self.record_recoveries()
            # the server's threads stop first: the final fit uses its design (and prior evaluator) alone
            self.stop_server()
            params = self.final_fit()
            fin = self.record["final"]
            self.say(f"final potential ({fin['method']}) on {fin['n_configs']} configurations: held-out force RMSE "
                     f"{fin['holdout_force_rmse']:.4f} eV/A, energy RMSE {fin['holdout_energy_rmse'] * 1000:.2f} meV/atom")
            self.say(calibration_line(fin))
            counts = self.server.status()["counts"]
            n_init = len(initial)
            self.record["final"].update(
                n_labels=counts.get("labeled", 0), n_failed=counts.get("failed", 0),
                n_reference_calls=self.record["final"].get("initial_reference_calls", 0)
                + counts.get("labeled", 0) + counts.get("failed", 0),
                n_initial=n_init, versions=len(self.server.status()["versions"]))
            self.timings()
            self.record["status"] = {"converged": "done", "saturated": "saturated"}.get(reason, "unconverged")
            self.save_record()
            self.validate(params)
            self.record["finished"] = time.time()
            self.timings()
            self.save_record()
            page = self.report()
            if page is not None:
                self.say(f"report: {page}")
        except BaseException as err:
            self.record["status"] = "failed"
            self.record["error"] = f"{type(err).__name__}: {err}"
            self.say(f"campaign failed: {type(err).__name__}: {err}")
            raise
        finally:
            for w in self.walkers:
                w.kill()
            self.stop_server()
            if self.record["finished"] is None:
                self.record["finished"] = time.time()
            self.save_record()
        return self.record


def calibration_line(final: dict) -> str:
    """How honest the final committee is on the held-out set (held-out z-scores, Tran et al. 2020), per phase."""
    parts = [f"calibration on the held-out set: force rms z {final['holdout_force_rms_z']:.2f} "
             f"(1 is calibrated), 95% interval holds {100 * final['holdout_force_coverage95']:.0f}% of the errors"]
    for phase, p in (final.get("holdout_phases") or {}).items():
        parts.append(f"{phase} K: RMSE {p['force_rmse']:.4f} eV/A, rms z {p['force_rms_z']:.2f}, "
                     f"{100 * p['force_coverage95']:.0f}%")
    return "; ".join(parts)


def run_campaign(config_path, run_dir=None) -> int:
    cfg = CampaignConfig.load(config_path, run_dir=run_dir)
    campaign = Campaign(cfg)
    campaign.say(f"pylal campaign {config_path}: run folder {cfg.server.run_dir}")
    record = campaign.execute()
    final = record["final"]
    print(f"final fit ({final['method']}) on {final['n_configs']} configurations: {cfg.server.run_dir / 'final'}")
    print(f"reference calls: {final['n_reference_calls']} ({final.get('initial_reference_calls', 0)} initial + "
          f"{final['n_labels']} flagged, {final['n_failed']} failed); held-out set: {len(read(cfg.server.run_dir / 'holdout.xyz', index=':'))} "
          f"more, never trained on")
    print(f"held-out energy RMSE {final['holdout_energy_rmse'] * 1000:.2f} meV/atom; status {record['status']}; "
          f"wall time {record['timings']['wall']:.0f} s")
    print(f"{cfg.holdout.headline}: {final['holdout_force_rmse']:.4f} eV/A")
    return 0 if record["status"] in ("done", "saturated") else 1
