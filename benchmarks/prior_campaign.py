"""The same on-the-fly campaign (`pylal campaign`) with and without a physics prior (Delta-learning,
Shuaibi et al. 2020; docs/prior.md): labels to stability, reference failures, walker restarts.

Per seed, two fresh run folders from the same campaign file (default inputs/si/campaign.toml: 64-atom
Si, SW oracle, a solid 1200 K and a liquid 2500 K walker, HAL bias, refit after every label):
  none    the committee learns the whole SW energy (the model's own short-range ZBL stays on, as in
          the demo: it is part of the basis, not a LAMMPS prior);
  morse   `[fit] lammps_prior_file`: a Morse pair (morse/smooth/linear) fitted to the SW Si dimer by
          `pylal prior fit-morse`; the server fits labels minus the prior and the walkers run
          `pair_style hybrid/overlay morse/smooth/linear ... zero` (pylal/campaign/walkers.py).
The prior's cutoff defaults to the model cutoff r_cut (3.8 A), not fit-morse's default (where the
tail is below 0.5% of D_e, 6.6 A for Si): SW ends at 3.77 A, and Morse forces between 3.8 and 6.6 A
are beyond the learned part's reach (a BRR fit to SW MD with the 6.6 A prior is off by ~180 meV/A).
The seed changes the initial set's rattle and the walkers' velocity/thermostat seeds; the held-out
set (reference MD at 1200 K) is the same for every run.

From each RUN/campaign.json and RUN/store.db: labels (flagged configurations labelled), failed
labels (reference failures), reference calls (initial + flagged), versions, walker restarts
(crashes; from the walkers' log.<restart>.lammps files), the smallest interatomic distance among
flagged configurations, held-out force RMSE of the final (ARD) fit, status and wall time.
Last line: `prior_label_ratio: <mean labels without / mean labels with> x`.

--quick: 1 seed, an 8-atom cell, one walker (1200 K), quiet_steps 200, 8-minute cap per run.
Threads: one per process (the campaign pins its walkers; XLA/BLAS here). --jobs 2 runs the two arms
of a seed at the same time (each campaign is a server process plus one LAMMPS process per walker).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PINNED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
          "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
os.environ.update(PINNED)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("none", "morse")


# ---- a minimal TOML writer (tables, arrays of tables, inline values) --------------------------------
def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(raw: dict) -> str:
    lines = [f"{k} = {_value(v)}" for k, v in raw.items() if not isinstance(v, (dict, list))
             or (isinstance(v, list) and not all(isinstance(x, dict) for x in v))]
    for k, v in raw.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {_value(vv)}" for kk, vv in v.items()]
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                lines += ["", f"[[{k}]]"] + [f"{kk} = {_value(vv)}" for kk, vv in item.items()]
    return "\n".join(lines) + "\n"


# ---- the runs -----------------------------------------------------------------------------------------
def fit_prior(runs: Path, cutoff: float, log) -> Path:
    """`pylal prior fit-morse` on the SW dimer (the campaign's reference)."""
    out = runs / "si_morse.json"
    cmd = [sys.executable, "-m", "pylal.cli", "prior", "fit-morse", "--reference", "lammps", "--species", "Si",
           "--cutoff", repr(cutoff), "-o", str(out)]
    log("$ pylal prior fit-morse --reference lammps --species Si --cutoff " + repr(cutoff) + f" -o {out}")
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=runs)
    if res.returncode != 0:
        raise SystemExit(f"pylal prior fit-morse failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    for line in res.stdout.splitlines():
        log("  " + line)
    return out


def campaign_config(base: dict, base_dir: Path, arm: str, seed: int, prior_file: Path, args) -> dict:
    raw = json.loads(json.dumps(base))  # deep copy
    raw.pop("run_dir", None)
    raw.setdefault("initial", {})["seed"] = 10 * seed
    walkers = raw.get("walkers", [{"name": "T1200"}])
    if args.quick:
        walkers = walkers[:1]
        raw["initial"]["repeat"] = [1, 1, 1]
        raw.setdefault("holdout", {})["n_configs"] = 5
    for w in walkers:
        w["deck"] = str((base_dir / w.get("deck", "in.walker")).resolve())
        w["seed"] = int(w.get("seed", 1)) + 100 * seed
    raw["walkers"] = walkers
    term = raw.setdefault("termination", {})
    term["quiet_steps"] = args.quiet_steps
    term["max_minutes"] = float(args.max_minutes)
    term["max_labels"] = args.max_labels
    raw["validate"] = {"enabled": False}  # properties are not what is compared here
    fit = raw.setdefault("fit", {})
    fit.pop("lammps_prior", None)
    fit.pop("lammps_prior_file", None)
    if arm == "morse":
        fit["lammps_prior_file"] = str(prior_file)  # absolute: [fit] paths are relative to run_dir
    return raw


def run_one(runs: Path, name: str, raw: dict, args, log) -> Path:
    run = runs / name
    if run.exists():
        shutil.rmtree(run)  # fresh: a campaign on an old folder would resume from its store
    config = runs / f"{name}.toml"
    config.write_text(to_toml(raw))
    cmd = [sys.executable, "-m", "pylal.cli", "campaign", str(config), "--run-dir", str(run)]
    t0 = time.time()
    with open(runs / f"{name}.log", "w") as out:
        try:
            code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=runs,
                                  env=dict(os.environ, **PINNED), timeout=60 * (args.max_minutes + 20)).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    log(f"  {name}: exit {code} after {time.time() - t0:.0f} s ({runs / (name + '.log')})")
    return run


def min_distance(atoms) -> float:
    d = atoms.get_all_distances(mic=True)
    return float(np.min(d[np.triu_indices(len(atoms), 1)])) if len(atoms) > 1 else float("inf")


def holdout_rmse(run: Path) -> dict:
    """Held-out force RMSE (eV/A) of the final ARD fit and of the newest BRR version the walkers ran.
    The final fit is taken with the run's LAMMPS prior: the campaign's final ARD fit is made on the
    prior-subtracted design but (at the time of writing) saved without the prior, so its own
    `holdout_force_rmse` in campaign.json misses the prior's forces; `prior_reattached` says so."""
    import dataclasses

    from ase.io import read

    from pylal.fit.holdout import HeldOut
    from pylal.model.params import Parameters

    def holdout_errors(params, frames):
        return {f"holdout_{k}": v for k, v in HeldOut(params.spec, frames, params.lammps_prior).errors(params).items()}

    out = {}
    try:
        holdout = read(run / "holdout.xyz", index=":")
        current = Parameters.load(run / "current.npz")
        out["rmse_brr"] = holdout_errors(current, holdout)["holdout_force_rmse"]
        final = Parameters.load(run / "final" / "params.npz")
    except (OSError, ValueError) as err:
        out["rmse_error"] = str(err)
        return out
    out["prior_reattached"] = final.lammps_prior != current.lammps_prior
    if out["prior_reattached"]:
        final = dataclasses.replace(final, lammps_prior=current.lammps_prior)
    out["rmse"] = holdout_errors(final, holdout)["holdout_force_rmse"]
    return out


def collect(run: Path, arm: str, seed: int) -> dict:
    """The numbers of one run from RUN/campaign.json, RUN/store.db and the walkers' logs."""
    row = dict(arm=arm, seed=seed, status="missing", reason="", labels=None, failed=None, calls=None,
               versions=None, restarts=None, d_min=None, rmse=None, rmse_brr=None, wall=None, errors=[])
    try:
        rec = json.loads((run / "campaign.json").read_text())
    except (OSError, ValueError):
        return row
    fin, tim = rec.get("final", {}), rec.get("timings", {})
    row.update(status=rec.get("status"), reason=rec.get("termination", {}).get("reason", ""),
               labels=fin.get("n_labels"), failed=fin.get("n_failed"), calls=fin.get("n_reference_calls"),
               versions=fin.get("versions"), rmse=fin.get("holdout_force_rmse"), wall=tim.get("wall"))
    row.update(holdout_rmse(run))
    # walker restarts: one LAMMPS log per start (log.0.lammps, log.1.lammps, ...)
    per_walker = [max(len(list(d.glob("log.*.lammps"))) - 1, 0) for d in sorted((run / "walkers").glob("*"))
                  if d.is_dir()]
    row["restarts"] = sum(per_walker) if per_walker else 0
    if (run / "store.db").exists():
        from pylal.server.store import Store

        store = Store(run / "store.db")
        counts = store.counts()
        row["labels"] = counts.get("labeled", row["labels"])
        row["failed"] = counts.get("failed", row["failed"])
        distances = [min_distance(r.toatoms()) for r in store.rows() if r.get("status") in ("labeled", "failed")]
        row["d_min"] = min(distances) if distances else None
        row["errors"] = [e["error"] for e in store.recent_errors(3)]
    # a campaign that failed after its walkers (e.g. in the final fit) has no final counts: from the folder
    if row["calls"] is None and row["labels"] is not None:
        n_initial = fin.get("initial_reference_calls", 0)
        row["calls"] = n_initial + row["labels"] + (row["failed"] or 0)
    if row["versions"] is None and (run / "versions").is_dir():
        row["versions"] = len(list((run / "versions").glob("*.npz")))
    if row["wall"] is None and rec.get("finished") and rec.get("started"):
        row["wall"] = rec["finished"] - rec["started"]
    row["error"] = rec.get("error")
    return row


def fmt(v, spec="", none="-"):
    return none if v is None else format(v, spec)


def mev(x):
    return None if x is None else 1e3 * x


def table(rows, log):
    log(f"{'arm':>6} {'seed':>4} {'status':>11} {'labels':>6} {'failed':>6} {'calls':>5} {'vers':>4} "
        f"{'restarts':>8} {'d_min A':>7} {'RMSE meV/A':>10} {'BRR RMSE':>8} {'wall s':>7}")
    for r in rows:
        log(f"{r['arm']:>6} {r['seed']:>4} {r['status']:>11} {fmt(r['labels']):>6} {fmt(r['failed']):>6} "
            f"{fmt(r['calls']):>5} {fmt(r['versions']):>4} {fmt(r['restarts']):>8} {fmt(r['d_min'], '.2f'):>7} "
            f"{fmt(mev(r['rmse']), '.1f'):>10} {fmt(mev(r['rmse_brr']), '.1f'):>8} {fmt(r['wall'], '.0f'):>7}")
    means = {}
    for arm in ARMS:
        sel = [r for r in rows if r["arm"] == arm and r["labels"] is not None]
        if not sel:
            continue
        m = {k: float(np.mean([r[k] for r in sel if r[k] is not None])) if any(r[k] is not None for r in sel)
             else None for k in ("labels", "failed", "calls", "versions", "restarts", "rmse", "rmse_brr", "wall")}
        m["converged"] = sum(r["status"] == "done" for r in sel)
        m["n"] = len(sel)
        m["labels_std"] = float(np.std([r["labels"] for r in sel]))
        m["d_min"] = min((r["d_min"] for r in sel if r["d_min"] is not None), default=None)
        means[arm] = m
        log(f"{arm:>6} {'mean':>4} {str(m['converged']) + '/' + str(m['n']) + ' done':>11} {m['labels']:6.1f} "
            f"{fmt(m['failed'], '6.1f')} {fmt(m['calls'], '5.1f')} {fmt(m['versions'], '4.1f')} {m['restarts']:8.1f} "
            f"{fmt(m['d_min'], '.2f'):>7} {fmt(mev(m['rmse']), '.1f'):>10} {fmt(mev(m['rmse_brr']), '.1f'):>8} "
            f"{fmt(m['wall'], '.0f'):>7}")
    return means


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 seed, 8-atom cell, one walker, quiet_steps 200")
    ap.add_argument("--seeds", type=int, help="seeds (3; quick 1)")
    ap.add_argument("--config", default=str(ROOT / "inputs" / "si" / "campaign.toml"), help="base campaign file")
    ap.add_argument("--runs", help="folder for the run folders (runs/prior_campaign[_quick])")
    ap.add_argument("--quiet-steps", type=int, help="[termination] quiet_steps (2000; quick 200)")
    ap.add_argument("--max-minutes", type=float, help="[termination] max_minutes per run (20; quick 8)")
    ap.add_argument("--max-labels", type=int, default=100, help="[termination] max_labels (100)")
    ap.add_argument("--prior-cutoff", type=float, default=3.8, help="Morse cutoff, A (3.8 = the model's r_cut)")
    ap.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS)
    ap.add_argument("--jobs", type=int, default=1, help="campaigns run at the same time (1)")
    ap.add_argument("--only", nargs="*", metavar="ARM_sSEED",
                    help="(re)run only these run folders, e.g. morse_s1; tabulate the others as they are")
    ap.add_argument("--collect-only", action="store_true", help="tabulate the run folders already in --runs")
    args = ap.parse_args()
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.quiet_steps = args.quiet_steps or (200 if args.quick else 2000)
    args.max_minutes = args.max_minutes or (8.0 if args.quick else 20.0)
    runs = Path(args.runs or ROOT / "runs" / ("prior_campaign_quick" if args.quick else "prior_campaign")).resolve()
    runs.mkdir(parents=True, exist_ok=True)

    def log(s):
        print(s, flush=True)

    t_start = time.time()
    base_path = Path(args.config).resolve()
    base = tomllib.loads(base_path.read_text())
    prior_file = runs / "si_morse.json" if args.collect_only else fit_prior(runs, args.prior_cutoff, log)
    log(f"campaign {base_path} ({'quick' if args.quick else 'full'}): {args.seeds} seed(s), arms {args.arms}, "
        f"quiet_steps {args.quiet_steps}, caps {args.max_labels} labels / {args.max_minutes:g} min; runs in {runs}")
    jobs = [(seed, arm) for seed in range(args.seeds) for arm in args.arms]

    def one(job):
        seed, arm = job
        name = f"{arm}_s{seed}"
        if not args.collect_only and (args.only is None or name in args.only):
            run_one(runs, name, campaign_config(base, base_path.parent, arm, seed, prior_file, args), args, log)
        return runs / name

    # --jobs 2: the arms of a seed side by side (same machine load for both; wall times then include it)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        folders = list(pool.map(one, jobs))
    rows = [collect(run, arm, seed) for run, (seed, arm) in zip(folders, jobs)]
    log("\nlabels: flagged configurations labelled; failed: reference failures; calls: reference calls "
        "(initial + flagged); restarts: walker crashes; d_min: shortest distance in any flagged configuration; "
        "RMSE: held-out force RMSE of the final ARD fit (with the prior); BRR RMSE: of the newest version the "
        "walkers ran")
    means = table(rows, log)
    for r in rows:
        if r["errors"]:
            log(f"{r['arm']} seed {r['seed']}: reference errors, e.g. {r['errors'][0][:200]}")
        if r.get("prior_reattached"):
            log(f"{r['arm']} seed {r['seed']}: final/params.npz has no LAMMPS prior although the fit was on "
                f"prior-subtracted labels; RMSE taken with the prior re-attached")
        if r.get("error"):
            log(f"{r['arm']} seed {r['seed']}: the campaign failed after its walkers: {r['error'][:200]}")
        if r["status"] not in ("done",):
            log(f"{r['arm']} seed {r['seed']}: status {r['status']} ({r['reason']}): labels are a lower bound")
    json.dump(dict(rows=rows, means=means, args=vars(args)), open(runs / "summary.json", "w"), indent=1, default=str)
    log(f"\ntotal {time.time() - t_start:.0f} s; summary {runs / 'summary.json'}")
    if "none" in means and "morse" in means and means["morse"]["labels"] > 0:
        print(f"prior_label_ratio: {means['none']['labels'] / means['morse']['labels']:.2f} x")


if __name__ == "__main__":
    main()
