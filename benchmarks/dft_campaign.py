"""DFT in the loop (issue 16): the on-the-fly campaign of inputs/dft/campaign.toml with CP2K as the reference.

Full run (default): `inputs/dft/campaign.toml` on a fresh run folder, the same code as `pylal campaign`, in
this process: 4 rattled 8-atom Si cells labelled by CP2K (PBE, SZV-MOLOPT-SR-GTH, 150 Ry, 3x3x3 k-points),
one HAL walker at 1000 K (LAMMPS + fix pylal) whose flags the refit server labels with CP2K in a worker
process, until 1000 flag-free steps on the newest version; final ARD fit; held-out errors on the cached
DFT MD snapshots of inputs/dft/holdout.xyz (inputs/dft/make_holdout.py). Prints a table (reference calls,
DFT seconds per label, MD / fit time, held-out errors) and writes benchmarks/results/dft_campaign.json and
the campaign's DFT data set benchmarks/results/dft_dataset.xyz (initial + flagged configurations).

--quick (well under a minute) runs no campaign: it refits the cached data set of the last full run
(benchmarks/results/dft_dataset.xyz, committed) with the campaign's basis (BRR, not ARD), evaluates it on
the held-out set, and makes ONE live CP2K label through the refit server's worker code
(pylal.server.executor.label_config) of the first held-out snapshot, compared with its cached label. Its
RMSE is that of a refit of the full run's data, not of a new campaign.

The last line is `dft_force_rmse: <x> eV/A` (goal <= 0.1).
Command: .venv/bin/python benchmarks/dft_campaign.py [--quick] [--run-dir DIR]
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import time

for _name, _value in (("OMP_NUM_THREADS", "1"), ("OPENBLAS_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"),
                      ("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")):
    os.environ.setdefault(_name, _value)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from ase.io import read, write  # noqa: E402

from pylal.campaign.config import CampaignConfig  # noqa: E402
from pylal.campaign.run import Campaign  # noqa: E402

CONFIG = Path(ROOT) / "inputs" / "dft" / "campaign.toml"
RESULTS = Path(ROOT) / "benchmarks" / "results"
DATASET = RESULTS / "dft_dataset.xyz"


def label_seconds(run: Path) -> list[float]:
    """DFT wall seconds of every label the refit server made (server.log.jsonl `labeled` events)."""
    out = []
    for line in (run / "server.log.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "labeled":
            out.append(event["seconds"])
    return out


def failures(run: Path) -> list[str]:
    return [json.loads(line)["error"] for line in (run / "server.log.jsonl").read_text().splitlines()
            if '"label_failed"' in line]


def table(rows):
    width = max(len(r[0]) for r in rows)
    print("\n| quantity | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


def full(run: Path) -> float:
    shutil.rmtree(run, ignore_errors=True)  # a fresh run folder: nothing reused from an earlier campaign
    cfg = CampaignConfig.load(CONFIG, run_dir=run)
    print(f"DFT campaign: {CONFIG.relative_to(ROOT)} -> {run}", flush=True)
    t0 = time.time()
    campaign = Campaign(cfg)
    initial_t0 = time.perf_counter()
    initial = campaign.initial_data()  # timed here: the initial labels are DFT calls in this process
    initial_seconds = time.perf_counter() - initial_t0
    record = campaign.execute()  # keeps RUN/initial.xyz
    wall = time.time() - t0
    fin, tim = record["final"], record["timings"]
    seconds = label_seconds(run)
    failed = failures(run)
    holdout = read(run / "holdout.xyz", index=":")
    dataset = read(run / "final" / "dataset.xyz", index=":")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write(DATASET, dataset)
    per_label = (f"{statistics.mean(seconds):.1f} / {statistics.median(seconds):.1f} / {max(seconds):.1f}"
                 if seconds else "none")
    table([
        ("status (termination)", f"{record['status']} ({record['termination'].get('reason')})"),
        ("reference (CP2K) calls: initial + flagged (+ failed)",
         f"{len(initial) + fin['n_labels'] + fin['n_failed']} ({len(initial)} + {fin['n_labels']} + {fin['n_failed']})"),
        ("DFT s per flagged label: mean / median / max", per_label),
        ("DFT s per initial label (mean, in the campaign process)", f"{initial_seconds / max(len(initial), 1):.1f}"),
        ("label failures (CP2K's messages)", "; ".join(failed) or "none"),
        ("parameter versions published", fin["versions"]),
        ("held-out DFT MD snapshots (cached, never trained on)", len(holdout)),
        ("held-out force RMSE (eV/A)", f"{fin['holdout_force_rmse']:.4f}"),
        ("held-out energy RMSE (meV/atom)", f"{1000 * fin['holdout_energy_rmse']:.2f}"),
        ("final fit", fin["method"]),
        ("wall time (s)", f"{wall:.0f}"),
        ("  DFT labels (flagged, summed, s)", f"{tim.get('label', 0):.0f}"),
        ("  walker MD without holds / held at flags (s)", f"{tim.get('md', 0):.0f} / {tim.get('waiting_at_flags', 0):.0f}"),
        ("  refits / final fit (s)", f"{tim.get('fit', 0):.1f} / {tim.get('final_fit', 0):.1f}"),
    ])
    out = RESULTS / "dft_campaign.json"
    out.write_text(json.dumps(dict(run_dir=str(run), wall=wall, label_seconds=seconds, initial_seconds=initial_seconds,
                                   failures=failed, record=record), indent=2, default=str))
    print(f"\nresults: {out.relative_to(ROOT)}; data set: {DATASET.relative_to(ROOT)}; report: {run / 'report' / 'index.html'}")
    return fin["holdout_force_rmse"]


def quick() -> float:
    from pylal.fit.committee import fit_parameters
    from pylal.fit.design import Weights
    from pylal.fit.holdout import HeldOut
    from pylal.server.executor import label_config
    from pylal.model.registry import spec_from_config

    if not DATASET.exists():
        raise SystemExit(f"{DATASET}: no cached data set; run the full benchmark first (without --quick)")
    cfg = CampaignConfig.load(CONFIG, run_dir=Path(ROOT) / "runs" / "dft_quick")
    print("DFT campaign --quick: no campaign; a refit of the last full run's cached DFT data set, its held-out "
          "errors, and one live CP2K label", flush=True)
    t0 = time.perf_counter()
    dataset = read(DATASET, index=":")
    holdout = read(cfg.holdout.file, index=":")
    fc = cfg.server.fit
    spec = spec_from_config(fc)
    params = fit_parameters(spec, dataset, Weights(*fc.weights), "brr", fc.n_members, seed=fc.seed)
    errors = HeldOut(spec, holdout).errors(params)
    fit_seconds = time.perf_counter() - t0
    ref = cfg.server.reference
    snap = holdout[0]
    config = dict(numbers=snap.numbers, positions=snap.positions, cell=snap.cell.array, pbc=snap.pbc)
    live = label_config(config, dict(calculator=ref.calculator, options=ref.options, properties=ref.properties))
    if not live["ok"]:
        raise SystemExit(f"the live CP2K label failed: {live['error']}")
    df = np.abs(live["results"]["forces"] - snap.get_forces()).max()
    table([
        ("cached DFT data set (configurations)", len(dataset)),
        ("refit (BRR) + held-out evaluation (s)", f"{fit_seconds:.1f}"),
        ("held-out DFT MD snapshots", len(holdout)),
        ("held-out force RMSE (eV/A)", f"{errors['force_rmse']:.4f}"),
        ("held-out energy RMSE (meV/atom)", f"{1000 * errors['energy_rmse']:.2f}"),
        ("live CP2K label: DFT seconds", f"{live['wall_time']:.1f}"),
        ("live label vs cached held-out label: max |dF| (eV/A)", f"{df:.1e}"),
    ])
    return errors["force_rmse"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="refit the cached data set + one live label (docstring)")
    ap.add_argument("--run-dir", default=None, help="run folder of the full run (emptied first); default runs/dft_benchmark")
    args = ap.parse_args()
    t0 = time.time()
    rmse = quick() if args.quick else full(Path(args.run_dir or Path(ROOT) / "runs" / "dft_benchmark"))
    print(f"\nbenchmark wall time {time.time() - t0:.0f} s")
    print(f"dft_force_rmse: {rmse:.4f} eV/A")
    return 0


if __name__ == "__main__":
    sys.exit(main())
