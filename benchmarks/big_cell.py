"""Big cell on 2 ranks, labels carved (issue 15): a Si/SW HAL campaign whose walker is a 4096-atom
diamond cell with 4 vacancies at 1500 K on 2 MPI ranks; every flag is carved into cells of at most
128 atoms (docs/carving.md) and only their core forces are fitted, together with five 64-atom
whole-cell initial labels.

Runs `inputs/si/big_cell.toml` (the same code as `pylal campaign`, in this process) with its held-out
set replaced by snapshots of reference (SW) MD of the big cell itself: a 4096-atom cell with 4 other
vacancies, Langevin at 1500 K (cached next to the run folder: the reference MD is deterministic).
Prints labels, reference atoms labelled in total, the largest label, held-out force RMSE, wall time
and, last, `big_cell_force_rmse: <x> eV/A` (goal <= 0.02). Results: benchmarks/results/big_cell[_quick].json.

--quick: a 512-atom walker cell (2 vacancies, 2 ranks), basis n_max 4 / l_max 2, K 8, 2 initial
cells, 30 quiet steps or 45 s of campaign, 3 held-out snapshots of the 512-atom cell: a smoke test
of the whole path (flag, carve on 2 ranks, label, refit, swap), not a converged potential.

Command: .venv/bin/python benchmarks/big_cell.py [--quick] [--run-dir DIR]
"""
import argparse
import json
import os
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

import ase.db  # noqa: E402
from ase.io import read, write  # noqa: E402

from pylal.campaign.cells import campaign_cell, reference_md, walker_cell  # noqa: E402
from pylal.campaign.config import CampaignConfig  # noqa: E402
from pylal.campaign.run import Campaign  # noqa: E402
from pylal.reference import make_calculator  # noqa: E402

CONFIG = Path(ROOT) / "inputs" / "si" / "big_cell.toml"
QUICK = {
    "fit": {"n_max": 4, "l_max": 2, "n_members": 8},
    "initial": {"n_configs": 2},
    "termination": {"quiet_steps": 30, "max_labels": 10, "max_minutes": 0.75},
}
QUICK_WALKER = {"repeat": [2, 2, 2], "vacancies": 2}
HOLDOUT = dict(n_samples=5, stride=50, equilibrate=200)  # snapshots of the big cell's reference MD
QUICK_HOLDOUT = dict(n_samples=3, stride=20, equilibrate=60)


def big_cell_holdout(raw: dict, path: Path, settings: dict) -> Path:
    """Labelled snapshots of reference MD of the walker's cell (other vacancies), cached in `path`."""
    if path.exists():
        return path
    init, walker = raw["initial"], raw["walkers"][0]
    cell = walker_cell(campaign_cell(init["bulk"], init["repeat"]), walker["repeat"], walker["vacancies"], seed=4321)
    frames = reference_md(cell, make_calculator(raw["reference"]["calculator"]), walker["temperature"], seed=4321,
                          **settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, frames)
    return path


def label_sizes(store_path: Path) -> tuple[list, int]:
    """Atoms of every labelled flag, and the largest flagged configuration the server received."""
    with ase.db.connect(store_path) as db:
        labelled = [row.natoms for row in db.select(status="labeled")]
        largest = max((row.natoms for row in db.select()), default=0)
    return labelled, largest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="scaled-down smoke run (see the module docstring)")
    ap.add_argument("--run-dir", default=None, help="run folder (emptied first); default runs/big_cell[_quick]")
    args = ap.parse_args()
    raw = tomllib.loads(CONFIG.read_text())
    if args.quick:
        for section, values in QUICK.items():
            raw.setdefault(section, {}).update(values)
        raw["walkers"][0].update(QUICK_WALKER)
    name = "big_cell_quick" if args.quick else "big_cell"
    run = Path(args.run_dir or Path(ROOT) / "runs" / name)
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.time()
    holdout_file = big_cell_holdout(raw, run.parent / f"{name}_holdout.xyz", QUICK_HOLDOUT if args.quick else HOLDOUT)
    raw["holdout"] = {"file": str(holdout_file), "headline": "big_cell_force_rmse"}
    cfg = CampaignConfig.from_dict(raw, base=CONFIG.parent, run_dir=run, name=name)
    n_walker = len(read(holdout_file, index=0))
    print(f"big-cell campaign: {CONFIG.relative_to(ROOT)} -> {run}; walker cell ~{n_walker} atoms on "
          f"{cfg.walkers[0].ranks} ranks, label_max_atoms {cfg.server.reference.label_max_atoms}", flush=True)
    t1 = time.time()
    record = Campaign(cfg).execute()
    wall, holdout_seconds = time.time() - t1, t1 - t0
    fin = record["final"]
    labelled, largest = label_sizes(run / "store.db")
    initial = read(run / "initial.xyz", index=":")
    holdout = read(run / "holdout.xyz", index=":")
    rows = [
        ("status (termination)", f"{record['status']} ({record['termination'].get('reason')})"),
        ("walker cell: atoms, ranks, temperature (K)", f"{n_walker}, {cfg.walkers[0].ranks}, {cfg.walkers[0].temperature:g}"),
        ("carved labels (one per region)", len(labelled)),
        ("atoms per carved label: min / max; largest flag received", f"{min(labelled, default=0)} / "
                                                                      f"{max(labelled, default=0)}; {largest}"),
        ("reference atoms labelled: initial + carved = total",
         f"{sum(map(len, initial))} + {sum(labelled)} = {sum(map(len, initial)) + sum(labelled)}"),
        ("parameter versions published", fin["versions"]),
        (f"held-out: {len(holdout)} snapshots of {len(holdout[0])} atoms, force RMSE (eV/A)",
         f"{fin['holdout_force_rmse']:.4f}"),
        ("held-out energy RMSE (meV/atom)", f"{1000 * fin['holdout_energy_rmse']:.2f}"),
        ("wall time: campaign / held-out reference MD (s)", f"{wall:.0f} / {holdout_seconds:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print("\n| quantity | value |\n|---|---|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")
    out = Path(ROOT) / "benchmarks" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(quick=args.quick, run_dir=str(run), wall=wall, labelled_atoms=labelled,
                                   largest_flag=largest, record=record), indent=2, default=str))
    print(f"\nresults: {out.relative_to(ROOT)}")
    print(f"big_cell_force_rmse: {fin['holdout_force_rmse']:.4f} eV/A")
    converged = args.quick or record["status"] in ("done", "saturated")  # --quick stops at 45 s by design
    ok = converged and labelled and largest <= cfg.server.reference.label_max_atoms
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
