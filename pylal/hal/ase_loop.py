"""ASE-driven HAL loop (HAL sec. 3): HAL-MD on the committee, label flagged configurations with
the reference, refit, repeat until `stable_steps` of HAL-MD pass without a flag.

This is the plain-ASE path (no LAMMPS); the LAMMPS path runs the same committee inside `fix pylal`.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from pylal.calculator import PylalCalculator
from pylal.fit.bayes import fit_design
from pylal.fit.design import DesignSet, Weights
from pylal.hal.physics import triggered
from pylal.model.basis import BasisSpec
from pylal.model.committee import TRACE_COUNTS
from pylal.reference.labeling import label


@dataclasses.dataclass
class LoopSettings:
    """Defaults follow the HAL paper where it gives one (tau_rel 0.05-0.25, K 32, window 100)."""

    temperature: float = 1000.0  # K
    timestep_fs: float = 1.0
    friction: float = 0.02  # Langevin, 1/fs
    tau_rel: float = 0.1
    tau_window: int = 100
    n_members: int = 32
    s_tol: float | None = None  # softmax criterion (eq. 8); 1/N-like for large cells
    f_tol: float | None = 0.1  # max_i f_i (eq. 7), size independent
    check_every: int = 5  # steps between f_i evaluations
    stable_steps: int = 2000  # stop when this many HAL-MD steps pass without a flag
    max_labels: int = 60
    weights: Weights = dataclasses.field(default_factory=Weights)
    seed: int = 0


def force_rmse(calc, configurations) -> float:
    err = []
    for ref in configurations:
        a = ref.copy()
        a.calc = calc
        err.append(a.get_forces() - ref.get_forces())
    return float(np.sqrt(np.mean(np.square(np.concatenate(err)))))


def hal_loop(spec: BasisSpec, reference, initial, start, held_out, settings: LoopSettings,
             out_dir: Path, log=print):
    """Run the loop; returns a summary dict. Flagged configs and every version are written to out_dir."""
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
        params = fit_design(spec, *design.arrays(), settings.weights, "brr", settings.n_members,
                            seed=settings.seed + version, version=version)
        params.save(out_dir / f"params_v{version:03d}.npz")
        version += 1
        t_fit += time.perf_counter() - t0
        return params

    calc = PylalCalculator(refit(), tau_rel=settings.tau_rel, tau_window=settings.tau_window,
                           check_every=settings.check_every)
    atoms = start.copy()
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=settings.temperature, rng=rng)
    dyn = Langevin(atoms, settings.timestep_fs * units.fs, temperature_K=settings.temperature,
                   friction=settings.friction / units.fs, fixcm=False, rng=rng)
    history = []
    since_flag, total_steps, f_max = 0, 0, 0.0
    log(f"{'iter':>4} {'labels':>6} {'steps':>7} {'tau':>9} {'max_f_i':>8} {'rmse_F':>8}  (eV/A)")
    while since_flag < settings.stable_steps and n_labels < settings.max_labels:
        t0 = time.perf_counter()
        flagged = False
        while since_flag < settings.stable_steps:
            dyn.run(settings.check_every)
            total_steps += settings.check_every
            since_flag += settings.check_every
            r = calc.results
            if "f_i" not in r:
                continue
            f_max = r["f_max"]
            if triggered(r["softmax"], f_max, settings.s_tol, settings.f_tol):
                flagged = True
                break
        t_md += time.perf_counter() - t0
        if not flagged:
            break
        t0 = time.perf_counter()
        result = label(atoms, reference)
        t_label += time.perf_counter() - t0
        if result.ok:
            design.add(result.atoms)
            write(out_dir / "flagged.xyz", result.atoms, append=True)
            n_labels += 1
        else:
            n_failed += 1
            log(f"label failed: {result.error_type}: {result.message}")
        calc.set_parameters(refit())
        rmse = force_rmse(PylalCalculator(calc.params), held_out)
        history.append(dict(iteration=version - 1, labels=n_labels, steps=total_steps, tau=calc.tau,
                            f_max=f_max, rmse_forces=rmse))
        log(f"{version - 1:4d} {n_labels:6d} {total_steps:7d} {calc.tau:9.4f} {f_max:8.3f} {rmse:8.4f}")
        since_flag = 0
        # restart from the flagged configuration with fresh velocities (HAL-driven MD can heat up)
        MaxwellBoltzmannDistribution(atoms, temperature_K=settings.temperature, rng=rng)
    final = calc.params
    final.save(out_dir / "params_final.npz")
    summary = dict(labels=n_labels, failed=n_failed, versions=version, md_steps=total_steps,
                   stable=since_flag >= settings.stable_steps,
                   rmse_forces=force_rmse(PylalCalculator(final), held_out),
                   compilations=sum(TRACE_COUNTS.values()) - compilations_before,
                   seconds=dict(md=t_md, label=t_label, fit=t_fit), history=history)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
