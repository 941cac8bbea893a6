"""Batch selection on a pool from SW-oracle MD of Si: held-out force RMSE against number of labels for
random, MAXDIAG, MAXDET, MAXDIST, LCMD, uncertainty+clustering and HAL's greedy max f_i
(pylal.select; Zaverkin et al. 2022, Ghosh et al. 2024, van der Oord et al. 2022).

Pool: labelled snapshots of Langevin MD on the Stillinger-Weber oracle (LAMMPS): 64-atom diamond
cells at 300-1500 K and liquid-ish cells at 2000 K; the full run adds a vacancy cell (63 atoms) and
a (100) slab (64 atoms, 10 A vacuum, periodic). Held-out set: separate trajectories of the same kinds.
Per seed: 5 random initial configurations (shared by all methods), then batches of b up to the
label budget (labels count the initial 5); every method refits (BRR) after each batch.
Basis: Si, r_cut 3.8 A, n_max 8, l_max 4 (189 functions), weights 5/1/1.

Last line: `selection_label_savings: <ratio> x` = (labels random selection needs to reach the
force RMSE that the best method reaches with `budget` labels) / budget, from the seed-averaged
curves (random is run to 3x the budget, 2x in --quick; '>=' if it never gets there). Near the
model's floor this ratio is fragile (a 0.1% RMSE difference decides it), so the script also prints
the labels each needs to come within --tolerance (5%) of that RMSE, and the ratio per label count. The issue asks for budget 50;
--quick uses budget 25, batch 5, 2 seeds and a ~100-configuration pool (< 1 min).
"""
import argparse
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
from ase.build import bulk  # noqa: E402

from pylal.fit.design import Weights  # noqa: E402
from pylal.model.basis import BasisSpec  # noqa: E402
from pylal.reference import make_calculator  # noqa: E402
from pylal.sampling import diamond_si, oracle_md  # noqa: E402
from pylal.select.batch import METHODS  # noqa: E402
from pylal.select.features import labelled_configs  # noqa: E402
from pylal.select.filtering import HeldOut, labels_to_reach, mean_curve, run_selection  # noqa: E402


def vacancy_cell():
    atoms = diamond_si(2)
    del atoms[0]
    return atoms


def slab_100():
    """(100) slab, 8 layers, 10 A of vacuum along z. Kept 3D-periodic (the gap is far beyond the
    3.8 A cutoff) because pylal.sampling.oracle_md asks every snapshot for its stress."""
    atoms = bulk("Si", "diamond", 5.431, cubic=True).repeat((2, 2, 2))
    atoms.center(vacuum=5.0, axis=2)
    atoms.pbc = True
    return atoms


def trajectories(quick: bool):
    """(name, atoms, temperature K, samples in the pool, samples held out)."""
    n, h = (16, 4) if quick else (40, 8)
    out = [(f"diamond {t} K", diamond_si(2), t, n, h) for t in (300, 600, 900, 1200, 1500)]
    out.append(("liquid-ish 2000 K", diamond_si(2), 2000, 20 if quick else 40, h))
    if not quick:
        out.append(("vacancy 900 K", vacancy_cell(), 900, 30, h))
        out.append(("(100) slab 900 K", slab_100(), 900, 30, h))
    return out


def build_pool(quick: bool, stride: int, log):
    reference = make_calculator("lammps")
    pool, held = [], []
    for k, (name, atoms, temp, n_pool, n_held) in enumerate(trajectories(quick)):
        t0 = time.perf_counter()
        pool += oracle_md(atoms, reference, temp, n_pool, stride=stride, equilibrate=200, seed=100 + k)
        held += oracle_md(atoms, reference, temp, n_held, stride=2 * stride, equilibrate=200, seed=900 + k)
        log(f"  {name:>18}: {n_pool} pool + {n_held} held-out snapshots ({time.perf_counter() - t0:.1f} s)")
    return pool, held


def synthetic_timing(log, n=10_000, d=200, m=50, b=20):
    """Selection time alone on a synthetic pool (low rank + noise, like MD features)."""
    from pylal.select import select_batch

    rng = np.random.default_rng(0)
    pool = rng.normal(size=(n, 30)) @ rng.normal(size=(30, d)) + 0.1 * rng.normal(size=(n, d))
    train = pool[rng.choice(n, m)] + 0.01
    times = {}
    for method in METHODS[1:]:
        t0 = time.perf_counter()
        select_batch(method, pool, train, b, np.random.default_rng(0))
        times[method] = time.perf_counter() - t0
    log(f"selection time, pool {n} x {d} features, {m} training points, b = {b}: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="budget 25, batch 5, 2 seeds, ~100-config pool (< 1 min)")
    ap.add_argument("--budget", type=int, help="labels per method, initial 5 included (50; quick 25)")
    ap.add_argument("--batch", type=int, nargs="*", help="batch sizes (5 20; quick 5); the first gives the headline")
    ap.add_argument("--seeds", type=int, help="seeds (5; quick 2)")
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    ap.add_argument("--noise", choices=["trace", "evidence"], default="trace")
    ap.add_argument("--stride", type=int, default=20, help="MD steps (2 fs) between pool snapshots (20)")
    ap.add_argument("--random-factor", type=float, help="random selection runs to this x budget (3; quick 2)")
    ap.add_argument("--tolerance", type=float, default=0.05,
                    help="also report labels to come within this fraction of the best RMSE (0.05)")
    ap.add_argument("--out", help="folder for selection_b<B>.csv/.png learning curves (optional)")
    args = ap.parse_args()
    budget = args.budget or (25 if args.quick else 50)
    batches = args.batch or ([5] if args.quick else [5, 20])
    seeds = args.seeds or (2 if args.quick else 5)
    n_initial = 5

    def log(s):
        print(s, flush=True)

    t_start = time.perf_counter()
    synthetic_timing(log)
    log(f"pool from SW-oracle Langevin MD ({'quick' if args.quick else 'full'}), snapshots every {args.stride} steps:")
    pool_atoms, held_atoms = build_pool(args.quick, args.stride, log)
    spec = BasisSpec(species=("Si",), r_cut=3.8, n_max=8, l_max=4)
    weights = Weights()
    t0 = time.perf_counter()
    configs = labelled_configs(spec, pool_atoms + held_atoms, weights)
    pool = configs[:len(pool_atoms)]
    held = HeldOut.from_configs(configs[len(pool_atoms):], weights)
    log(f"pool {len(pool)}, held-out {len(held_atoms)} configurations; basis {spec.size}; design rows "
        f"{time.perf_counter() - t0:.1f} s; budget {budget} labels (initial {n_initial}), batches {batches}, "
        f"{seeds} seeds, noise {args.noise}")
    random_budget = min(int((args.random_factor or (2 if args.quick else 3)) * budget), len(pool))
    headline = None
    for b in batches:
        curves = {m: [] for m in args.methods}
        timing = {m: 0.0 for m in args.methods}
        for seed in range(seeds):
            initial = np.random.default_rng(seed).choice(len(pool), n_initial, replace=False)
            for m in args.methods:
                t0 = time.perf_counter()
                run = run_selection(pool, m, random_budget if m == "random" else budget, initial, held, b,
                                    seed, weights, noise=args.noise)
                timing[m] += time.perf_counter() - t0
                curves[m].append(run.curve)
        mean = {m: mean_curve(c) for m, c in curves.items()}
        counts = [p[0] for p in mean[args.methods[0]] if p[0] <= budget]
        log(f"\nbatch {b}: held-out force RMSE (meV/A), mean over {seeds} seeds; labels ->")
        log(f"{'method':>12} " + " ".join(f"{n:>6d}" for n in counts) + "   s/run")
        for m in args.methods:
            row = {p[0]: p[1] for p in mean[m]}
            log(f"{m:>12} " + " ".join(f"{1e3 * row[n]:6.1f}" if n in row else f"{'':>6}" for n in counts)
                + f"  {timing[m] / seeds:6.1f}")
        if "random" in mean:
            beyond = [p for p in mean["random"] if p[0] > budget]
            if beyond:
                log("      random beyond the budget: " + ", ".join(f"{p[0]}: {1e3 * p[1]:.1f}" for p in beyond))
            others = {m: c for m, c in mean.items() if m != "random"}
            at_budget = {m: [p[1] for p in c if p[0] == budget][0] for m, c in others.items()}
            if at_budget:
                best = min(at_budget, key=at_budget.get)
                need = labels_to_reach(mean["random"], at_budget[best])
                text = f">= {random_budget / budget:.2f}" if need is None else f"{need / budget:.2f}"
                per_n = []
                for n in counts[1:]:
                    at_n = {m: [p[1] for p in c if p[0] == n][0] for m, c in others.items()}
                    m_n = min(at_n, key=at_n.get)
                    r_n = labels_to_reach(mean["random"], at_n[m_n])
                    per_n.append(f"{n}: {'>' if r_n is None else ''}{(r_n or random_budget) / n:.2f} x ({m_n})")
                log(f"batch {b}: random labels / best method's labels for the same RMSE, by label count: "
                    + ", ".join(per_n))
                log(f"batch {b}: best at {budget} labels: {best} ({1e3 * at_budget[best]:.1f} meV/A); random "
                    f"needs {'> ' + str(random_budget) if need is None else f'{need:.1f}'} labels -> {text} x")
                target = (1 + args.tolerance) * at_budget[best]
                reach = {m: labels_to_reach(c, target) for m, c in others.items()}
                reach = {m: v for m, v in reach.items() if v is not None}
                m_t = min(reach, key=reach.get)
                r_t = labels_to_reach(mean["random"], target)
                log(f"batch {b}: labels to come within {args.tolerance:.0%} of that ({1e3 * target:.2f} meV/A): "
                    f"{m_t} {reach[m_t]:.1f}, random {'> ' + str(random_budget) if r_t is None else f'{r_t:.1f}'}"
                    f" -> {'>= ' if r_t is None else ''}{(r_t or random_budget) / reach[m_t]:.2f} x")
                if headline is None:
                    headline = (text, b, best)
        if args.out:
            from pylal.select.report import plot_curves, write_curves_csv

            named = {m: [p for p in c if m == "random" or p[0] <= budget] for m, c in mean.items()}
            write_curves_csv(os.path.join(args.out, f"selection_b{b}.csv"), named)
            plot_curves(os.path.join(args.out, f"selection_b{b}.png"), named,
                        f"SW Si pool {len(pool)}, batch {b}, {seeds} seeds")
    log(f"\ntotal {time.perf_counter() - t_start:.0f} s"
        + (f"; headline from batch {headline[1]}, best method {headline[2]}, budget {budget} labels"
           + (" (quick: not the issue's 50)" if budget != 50 else "") if headline else ""))
    if headline:
        print(f"selection_label_savings: {headline[0]} x")


if __name__ == "__main__":
    main()
