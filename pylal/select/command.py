"""`pylal filter POOL.xyz --budget N --method M -o SELECTED.xyz`: filter a labelled pool.

Writes the selected configurations (selection order; atoms.info['select_order'] and
['select_round']), SELECTED_curve.csv and SELECTED_curve.png: held-out force RMSE against the
number of labels for `method` and for random selection (mean +- std over --random-repeats seeds,
same initial configurations). Without --held-out the whole pool is the test set, i.e. the curve
says how well the subset represents the database (HAL's filtering criterion).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def add_parser(sub):
    from pylal.select.batch import METHODS

    p = sub.add_parser("filter", help="select a subset of a labelled pool (HAL greedy max f_i or a batch "
                                      "method) with a learning curve against random (docs/selection.md)")
    p.add_argument("pool", help="labelled configurations (extxyz/ASE db with energies and forces)")
    p.add_argument("--budget", type=int, required=True, help="configurations to select, initial ones included")
    p.add_argument("--method", choices=METHODS, default="greedy_fi")
    p.add_argument("--batch", type=int, default=1, help="configurations added per refit (1)")
    p.add_argument("--initial", type=int, default=1, help="random initial configurations (1)")
    p.add_argument("--held-out", help="labelled test set for the learning curve (default: the whole pool)")
    p.add_argument("-o", "--output", default="selected.xyz")
    p.add_argument("--curve", help="prefix of the CSV/PNG (default: OUTPUT without suffix + '_curve')")
    p.add_argument("--random-repeats", type=int, default=3, help="random-selection seeds to average (3)")
    p.add_argument("--noise", choices=["trace", "evidence"], default="trace",
                   help="sigma^2 of the posterior features: Zaverkin's trace heuristic or the fit's alpha/lambda")
    p.add_argument("--species", nargs="*")
    p.add_argument("--r-cut", type=float, default=3.8)
    p.add_argument("--n-max", type=int, default=8)
    p.add_argument("--l-max", type=int, default=4)
    p.add_argument("--members", type=int, default=32, help="committee size for greedy_fi (32)")
    p.add_argument("--weights", type=float, nargs=3, default=(5.0, 1.0, 1.0), metavar=("W_E", "W_F", "W_V"))
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
    return p


def _read_labelled(path, what):
    from ase.io import read

    data = read(path, index=":")
    for i, a in enumerate(data):
        results = a.calc.results if a.calc is not None else {}
        if "energy" not in results or "forces" not in results:
            raise SystemExit(f"pylal filter: {what} {path}: configuration {i} has no reference energy and forces")
    return data


def run(args) -> int:
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from pylal.fit.design import Weights
    from pylal.model.basis import BasisSpec
    from pylal.select.features import labelled_configs
    from pylal.select.filtering import HeldOut, mean_curve, run_selection
    from pylal.select.report import plot_curves, write_curves_csv

    t0 = time.perf_counter()
    pool_atoms = _read_labelled(args.pool, "pool")
    held_atoms = _read_labelled(args.held_out, "held-out set") if args.held_out else None
    if args.budget < 1 or args.batch < 1 or args.initial < 1:
        raise SystemExit("pylal filter: --budget, --batch and --initial must be >= 1")
    if args.initial > min(args.budget, len(pool_atoms)):
        raise SystemExit("pylal filter: --initial exceeds the budget or the pool")
    every = pool_atoms + (held_atoms or [])
    species = tuple(args.species or sorted({s for a in every for s in a.get_chemical_symbols()}))
    spec = BasisSpec(species=species, r_cut=args.r_cut, n_max=args.n_max, l_max=args.l_max)
    weights = Weights(*args.weights)
    pool = labelled_configs(spec, pool_atoms + (held_atoms or []), weights)
    held = HeldOut.from_configs(pool[len(pool_atoms):] if held_atoms else pool, weights)
    pool = pool[:len(pool_atoms)]
    print(f"pylal filter: pool {len(pool)} configurations, basis {spec.size}, design rows built in "
          f"{time.perf_counter() - t0:.1f} s; test set: {args.held_out or 'the whole pool'}", flush=True)
    initial = np.random.default_rng(args.seed).choice(len(pool), size=args.initial, replace=False)
    run_ = run_selection(pool, args.method, args.budget, initial, held, args.batch, args.seed, weights,
                         args.members, args.noise)
    randoms = [run_selection(pool, "random", args.budget, initial, held, args.batch, args.seed + 1000 + r,
                             weights).curve for r in range(args.random_repeats)]
    out = Path(args.output)
    selected = []
    round_of = {i: 0 for i in run_.order[:len(initial)]}
    for r, added in enumerate(run_.rounds, start=1):
        round_of.update({i: r for i in added})
    for k, i in enumerate(run_.order):
        a = pool_atoms[i].copy()
        a.calc = SinglePointCalculator(a, **pool_atoms[i].calc.results)
        a.info.update(select_order=k, select_round=round_of[i], pool_index=int(i))
        selected.append(a)
    out.parent.mkdir(parents=True, exist_ok=True)
    write(out, selected, format="extxyz")
    prefix = Path(args.curve) if args.curve else out.with_name(out.stem + "_curve")
    curves = {args.method: run_.curve}
    if randoms:
        curves[f"random (x{len(randoms)})"] = mean_curve(randoms)
    csv_path, png_path = prefix.with_suffix(".csv"), prefix.with_suffix(".png")
    write_curves_csv(csv_path, curves)
    plot_curves(png_path, curves, f"{Path(args.pool).name}: {args.method}, batch {args.batch}")
    print(f"{'labels':>7} {args.method:>12}" + (f" {'random':>12}" if randoms else ""))
    rnd = curves.get(f"random (x{len(randoms)})")
    for j, (n, r) in enumerate(run_.curve):
        print(f"{n:>7d} {r:12.4f}" + (f" {rnd[j][1]:12.4f}" if rnd else ""))
    print(f"selected {len(run_.order)} of {len(pool)} -> {out}; curve: {csv_path}, {png_path} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0
