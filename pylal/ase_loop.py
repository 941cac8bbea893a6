"""ASE-driven HAL loop (HAL sec. 3): HAL-MD on the committee, label flagged configurations with
the reference, refit, repeat until `stable_steps` of HAL-MD pass without a flag.

Optionally (`verify_steps` > 0) a stable committee must then also pass a verification run: plain
MD (tau = 0) from the start configuration with fresh velocities, f_i checked with the same
tolerance; a flag there is labelled, refitted, and learning resumes. "Exploratory" MD steps are
all MD steps before the verification run that passes (learning + failed verification steps).

Flags are decided by the calculator's HAL controller (pylal.hal.controller, the same as `fix
pylal`'s) on every check step (every `check_every` force calls, HAL eqs. 6-8) with the loop's rule
(`LoopSettings.rule`), whatever the phase of the calculator's call counter.

Blow-ups: the controller's guard (pylal.hal.guard, the same rule as `fix pylal`'s guard) looks at
every step (exploding forces, close contacts, a sigma jump, too long a step); an optional
`guard(atoms)` (e.g. a bond stretched far beyond equilibrium) adds the user's own rule on check
steps. A guard event is labelled like a flag, and MD resumes from the last good state (the last
check step that passed; the start configuration before the first) with fresh velocities, as `fix
pylal` rolls back.

This is the plain-ASE path (no LAMMPS); the LAMMPS path runs the same committee inside `fix pylal`.
Works for periodic cells and for molecules (pbc False: no stress, no virial rows).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
from ase import units
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from pylal.calculator import PylalCalculator
from pylal.fit.checks import label_problem
from pylal.fit.committee import FitSettings, fit_design
from pylal.fit.holdout import HeldOut
from pylal.fit.design import DesignSet, Weights
from pylal.hal.controller import HalRule
from pylal.hal.guard import GuardRule
from pylal.model.basis import BasisSpec
from pylal.model.committee import TRACE_COUNTS
from pylal.reference.labeling import label


@dataclasses.dataclass
class LoopSettings:
    """Defaults follow the HAL paper where it gives one (tau_rel 0.05-0.25, K 32, window 100)."""

    temperature: float = 1000.0  # K
    timestep_fs: float = 1.0
    friction: float = 0.02  # Langevin, 1/fs
    tau_rel: float = 0.1  # 0: plain active learning
    tau_window: int = HalRule.tau_window
    n_members: int = 32
    s_tol: float | None = None  # softmax criterion (eq. 8); 1/N-like for large cells
    f_tol: float | None = 0.1  # max_i f_i (eq. 7), size independent
    sigma_tol: float | None = None  # committee energy spread per atom (eV/atom); none by default
    cooldown: int = 0  # force calls after a flag without a new one (0: every check step may flag); the campaign's choice
    check_every: int = 5  # steps between f_i evaluations; the campaign's choice ([hal] in pylal.campaign.config)
    stable_steps: int = 2000  # learning is stable when this many HAL-MD steps pass without a flag
    max_labels: int = 60  # cap on reference calls (initial + flagged, failures included)
    weights: Weights = dataclasses.field(default_factory=Weights)
    seed: int = 0
    verify_steps: int = 0  # plain-MD (tau = 0) verification run after stable learning; 0: none
    max_steps: int | None = None  # cap on exploratory MD steps (None: no cap)
    restart: str = "flagged"  # MD resumes after a label from the "flagged" or the "start" configuration
    reset_tau: bool = True  # adaptive tau burns in again after each refit (as fix pylal after a swap)
    guard: Callable | None = None  # guard(atoms) -> reason (str) if unphysical, else None (check steps)
    # the blow-up guard of every step (fix pylal's defaults; skin 1.0 A as `neighbor 1.0` in the decks); None: off
    guard_rule: GuardRule | None = dataclasses.field(default_factory=lambda: GuardRule(skin=1.0))

    def __post_init__(self):
        if self.restart not in ("flagged", "start"):
            raise ValueError(f"LoopSettings.restart: expected 'flagged' or 'start', got {self.restart!r}")
        if self.check_every < 1:
            raise ValueError(f"LoopSettings.check_every must be >= 1, got {self.check_every}")

    def rule(self, tau_rel: float | None = None) -> HalRule:
        """The HAL policy of the loop's calculators. tau_rel None: a fixed tau = 0 (verification)."""
        tau = dict(tau_rel=tau_rel, tau_window=self.tau_window) if tau_rel is not None else dict(tau=0.0)
        return self.flag_rule(HalRule(**tau, check_every=self.check_every))

    def flag_rule(self, rule: HalRule) -> HalRule:
        """`rule` with the loop's flag criteria; a flag stops the MD segment."""
        return dataclasses.replace(rule, s_tol=self.s_tol, f_tol=self.f_tol, sigma_tol=self.sigma_tol,
                                   cooldown=self.cooldown, stop_on_flag=True)


@dataclasses.dataclass
class Segment:
    """Outcome of one MD segment: steps run, and why it stopped (None: ran to the end)."""

    steps: int
    event: str | None  # "flag", "guard", or None
    f_max: float  # largest max_i f_i seen on the check steps of the segment
    detail: str = ""
    last_good: tuple | None = None  # (positions, cell) of the last check step that passed, if any


def run_segment(dyn, calc: PylalCalculator, n_steps: int, settings: LoopSettings) -> Segment:
    """Step `dyn` up to n_steps; stop at the first check step whose decision says stop (the
    controller, with the loop's flag rule) or at the first configuration the guard rejects. Each
    step is one force call, so every check step the calculator makes (n_calls % check_every == 0)
    is seen, even when a refit shifted the phase."""
    calc.controller.set_rule(settings.flag_rule(calc.controller.rule))
    atoms = dyn.atoms
    f_seen, good = 0.0, None
    for step in range(1, n_steps + 1):
        try:
            dyn.step()
            dyn.nsteps += 1
        except Exception as err:  # non-finite positions break the neighbour list: a blown-up run
            if np.isfinite(atoms.positions).all():
                raise
            return Segment(step, "guard", f_seen, f"non-finite positions ({type(err).__name__})", good)
        decision = calc.decision
        if decision.guard is not None:
            return Segment(step, "guard", f_seen, decision.guard.describe(), good)
        if not decision.check:
            continue
        f_seen = max(f_seen, decision.f_max)
        if decision.stop:
            return Segment(step, "flag", decision.f_max, "", good)
        if settings.guard is not None:
            reason = settings.guard(atoms)
            if reason:
                return Segment(step, "guard", f_seen, reason, good)
        good = (atoms.get_positions(), atoms.get_cell())
    return Segment(n_steps, None, f_seen, "", good)


def _langevin(atoms, settings: LoopSettings, rng):
    return Langevin(atoms, settings.timestep_fs * units.fs, temperature_K=settings.temperature,
                    friction=settings.friction / units.fs, fixcm=False, rng=rng)


def hal_loop(spec: BasisSpec, reference, initial, start, held_out, settings: LoopSettings,
             out_dir: Path, log=print):
    """Run the loop; returns a summary dict. Flagged configs and every version are written to out_dir.

    held_out: labelled configurations for the force RMSE after each refit (None or [] to skip).
    summary: labels (successful reference calls, initial included), failed, reference_calls,
    exploratory_steps, md_steps (all MD steps, the passing verification included), stable
    (learning stable and, if verify_steps, verified), stop ("stable", "max_labels", "max_steps"),
    history (one record per refit: phase, event, labels, steps, tau, f_max, rmse_forces).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    compilations_before = sum(TRACE_COUNTS.values())
    design = DesignSet(spec, settings.weights)
    for atoms in initial:
        design.add(atoms)
    n_labels, n_failed, version = len(initial), 0, 0
    rng = np.random.default_rng(settings.seed)
    t_fit = t_md = t_label = 0.0

    def refit():
        nonlocal version, t_fit
        t0 = time.perf_counter()
        params = fit_design(design, FitSettings(n_members=settings.n_members), seed=settings.seed + version,
                            version=version)
        params.save(out_dir / f"params_v{version:03d}.npz")
        version += 1
        t_fit += time.perf_counter() - t0
        return params

    held = HeldOut(spec, held_out) if held_out else None  # design rows built once (pylal.fit.holdout)

    def rmse_of(params):
        return held.errors(params)["force_rmse"] if held is not None else None

    calc = PylalCalculator(refit(), settings.rule(settings.tau_rel), guard=settings.guard_rule)
    atoms = start.copy()
    good = (start.get_positions(), start.get_cell())  # where MD resumes after a guard event
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=settings.temperature, rng=rng)
    dyn = _langevin(atoms, settings, rng)
    history = []
    learn_steps = verify_failed_steps = verify_passed_steps = n_verify = 0
    since_flag, f_max, stop, n_guard, n_filtered = 0, 0.0, None, 0, 0
    log(f"{'iter':>4} {'phase':>6} {'event':>5} {'labels':>6} {'steps':>7} {'tau':>9} {'max_f_i':>8} {'rmse_F':>8}"
        "  (eV/A)")

    def exploratory():
        return learn_steps + verify_failed_steps

    while True:
        if n_labels + n_failed >= settings.max_labels:
            stop = "max_labels"
            break
        budget = settings.stable_steps - since_flag
        if settings.max_steps is not None:
            budget = min(budget, settings.max_steps - exploratory())
            if budget <= 0:
                stop = "max_steps"
                break
        # --- learning: HAL-MD (tau_rel > 0) or plain MD (tau_rel = 0) ---
        t0 = time.perf_counter()
        seg = run_segment(dyn, calc, budget, settings)
        t_md += time.perf_counter() - t0
        learn_steps += seg.steps
        since_flag += seg.steps
        if seg.last_good is not None:
            good = seg.last_good
        phase, flagged_atoms = "learn", atoms
        if seg.event is None and since_flag < settings.stable_steps:
            continue  # stopped by max_steps: the check at the top ends the loop
        if seg.event is None and settings.verify_steps > 0:
            # --- verification: plain MD from the start configuration with the current committee ---
            n_verify += 1
            vcalc = PylalCalculator(calc.params, settings.rule(), guard=settings.guard_rule)
            vatoms = start.copy()
            vatoms.calc = vcalc
            vrng = np.random.default_rng([settings.seed, 7919, n_verify])
            MaxwellBoltzmannDistribution(vatoms, temperature_K=settings.temperature, rng=vrng)
            t0 = time.perf_counter()
            seg = run_segment(_langevin(vatoms, settings, vrng), vcalc, settings.verify_steps, settings)
            t_md += time.perf_counter() - t0
            if seg.event is None:
                verify_passed_steps = seg.steps
                log(f"verification passed: {seg.steps} steps of plain MD, max f_i {seg.f_max:.4f}")
            else:
                verify_failed_steps += seg.steps
                phase, flagged_atoms = "verify", vatoms
                log(f"verification {seg.event} after {seg.steps} steps (f_i {seg.f_max:.4f}) {seg.detail}")
        if seg.event is None:
            stop = "stable"
            break
        f_max = seg.f_max
        # --- label the flagged (or guard-rejected) configuration, refit ---
        t0 = time.perf_counter()
        result = label(flagged_atoms, reference)
        t_label += time.perf_counter() - t0
        problem = label_problem(result.atoms) if result.ok else None
        if problem:  # a blown-up configuration: labelled, kept out of the fit (pylal.fit.checks)
            n_filtered += 1
            log(f"label kept out of the fit: {problem}")
        elif result.ok:
            design.add(result.atoms)
            write(out_dir / "flagged.xyz", result.atoms, append=True)
            n_labels += 1
        else:
            n_failed += 1
            log(f"label failed: {result.error_type}: {result.message}")
        tau_used = calc.tau
        calc.set_parameters(refit(), burn_in=settings.reset_tau)  # the old |grad sigma| belongs to the old committee
        rmse = rmse_of(calc.params)
        n_guard += seg.event == "guard"
        history.append(dict(iteration=version - 1, phase=phase, event=seg.event, detail=seg.detail,
                            labels=n_labels, failed=n_failed, steps=exploratory(), tau=tau_used,
                            f_max=f_max, rmse_forces=rmse))
        log(f"{version - 1:4d} {phase:>6} {seg.event:>5} {n_labels:6d} {exploratory():7d} {tau_used:9.4f} "
            f"{f_max:8.3f} {rmse if rmse is not None else float('nan'):8.4f}" + (f"  {seg.detail}" if seg.detail else ""))
        since_flag = 0
        # resume learning; fresh velocities (HAL-driven MD can heat up); after a guard event from
        # the last good state (the rollback of fix pylal)
        if seg.event == "guard" and phase == "learn":
            atoms.set_cell(good[1])
            atoms.set_positions(good[0])
        elif settings.restart == "start" or seg.event == "guard" or not result.ok:
            atoms.set_positions(start.get_positions())
            atoms.set_cell(start.get_cell())
        else:
            atoms.set_positions(flagged_atoms.get_positions())
        calc.new_trajectory()
        MaxwellBoltzmannDistribution(atoms, temperature_K=settings.temperature, rng=rng)
    final = calc.params
    final.save(out_dir / "params_final.npz")
    summary = dict(labels=n_labels, failed=n_failed, reference_calls=n_labels + n_failed, versions=version,
                   exploratory_steps=exploratory(), learn_steps=learn_steps,
                   verify_failed_steps=verify_failed_steps, verify_passed_steps=verify_passed_steps,
                   md_steps=exploratory() + verify_passed_steps, stable=stop == "stable", stop=stop,
                   guard_events=n_guard, filtered_labels=n_filtered,
                   rmse_forces=rmse_of(final),
                   compilations=sum(TRACE_COUNTS.values()) - compilations_before,
                   seconds=dict(md=t_md, label=t_label, fit=t_fit), history=history)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
