"""Markdown tables from the learning-curve CSVs of benchmarks/selection.py --out DIR (selection_b<B>.csv:
method, n_labels, force RMSE and its spread over seeds, both in eV/A, the mean over seeds).

Per CSV: held-out force RMSE (meV/A, mean +- std over seeds) at the given label counts for every
method, and the labels each method needs to come within --tolerance (5%) of the best RMSE any
non-random method reaches with --budget labels (from the seed-averaged curve, linearly interpolated:
pylal.select.filtering.labels_to_reach; random runs past the budget, the others stop there).

    python benchmarks/selection_tables.py benchmarks/results/selection/selection_b{1,5,20}.csv

Last line: `selection_within_tolerance_savings: <random labels / best method's labels> x` of the first
CSV.
"""
import argparse
import csv
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pylal.select.filtering import labels_to_reach  # noqa: E402


def read_curves(path):
    curves = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            std = row.get("std_eV_per_A") or "nan"
            curves[row["method"]].append((int(row["n_labels"]), float(row["force_rmse_eV_per_A"]), float(std)))
    return {m: sorted(c) for m, c in curves.items()}


def tables(path, counts, budget, tolerance, out=print):
    curves = read_curves(path)
    methods = list(curves)
    available = sorted({p[0] for c in curves.values() for p in c if p[0] <= budget})
    cols = [n for n in counts if n in available] or available
    if len(cols) < 3:  # large batches: few refits below the budget; show them all
        cols = available
    out(f"| method | " + " | ".join(str(n) for n in cols) + f" | labels to within {tolerance:.0%} |")
    out("|---|" + "---|" * (len(cols) + 1))
    others = {m: c for m, c in curves.items() if m != "random"}
    at_budget = {m: next((p[1] for p in c if p[0] == budget), None) for m, c in others.items()}
    at_budget = {m: v for m, v in at_budget.items() if v is not None}
    best = min(at_budget, key=at_budget.get) if at_budget else None
    target = (1 + tolerance) * at_budget[best] if best else None
    reach = {}
    for m in methods:
        row = {p[0]: p for p in curves[m]}
        cells = [f"{1e3 * row[n][1]:.1f} +- {1e3 * row[n][2]:.1f}" if n in row else "" for n in cols]
        need = labels_to_reach([p[:2] for p in curves[m]], target) if target else None
        reach[m] = need
        last = max(p[0] for p in curves[m])
        out(f"| {m} | " + " | ".join(cells) + f" | {'> ' + str(last) if need is None else f'{need:.1f}'} |")
    if best:
        out(f"\nbest at {budget} labels: {best} {1e3 * at_budget[best]:.2f} meV/A; within {tolerance:.0%}: "
            f"<= {1e3 * target:.2f} meV/A")
    return reach, best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--counts", type=int, nargs="*", default=[5, 10, 15, 20, 30, 40, 50])
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--tolerance", type=float, default=0.05)
    args = ap.parse_args()
    headline = None
    for path in args.csv:
        print(f"\n{os.path.basename(path)}:\n")
        reach, best = tables(path, args.counts, args.budget, args.tolerance)
        fastest = min((m for m in reach if m != "random" and reach[m] is not None), key=reach.get, default=None)
        if headline is None and fastest and reach.get("random"):
            headline = (reach["random"] / reach[fastest], fastest)
    if headline:
        print(f"selection_within_tolerance_savings: {headline[0]:.2f} x")


if __name__ == "__main__":
    main()
