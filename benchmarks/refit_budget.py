"""Refit time against the number of species, on the default basis and its growth ladder (issue: "no refit
of a campaign with up to 200 configurations of <= 128 atoms and up to 5 species takes more than 60 s").

For 1..5 species (Al, Si, Mg, Cu, Fe, randomly placed on a 108-atom fcc cell, rattled) the design rows of
N configurations are assembled as the refit server keeps them (one evaluation per label), then one whole
refit (pylal.fit.committee.fit_design: evidence BRR, cross-validated calibration, 32 members) is timed on
every step of the power basis's ladder with the default compressed chemical channels, and, for
comparison, the first step with one channel per species (chem_channels = 0, the basis before). Labels
are random (timing only). Prints one row per (species, basis) and the refit seconds the growth rule
predicts (pylal.fit.growth.RefitCost) next to the measured ones.
Last line: `refit_seconds_5_species: <s> s` (the largest basis the growth rule would reach within the
60 s budget, 5 species). --quick: 40 configurations of 32 atoms, species 1, 2 and 5, two ladder steps.
"""
import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

from pylal.fit.committee import FitSettings, fit_design  # noqa: E402
from pylal.fit.design import DesignSet  # noqa: E402
from pylal.fit.growth import RefitCost  # noqa: E402
from pylal.model.basis import BasisSpec  # noqa: E402

SPECIES = ("Al", "Si", "Mg", "Cu", "Fe")
BUDGET = 60.0


def configurations(n_species: int, n: int, repeat: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(repeat)
        atoms.symbols = list(rng.choice(SPECIES[:n_species], size=len(atoms)))
        atoms.rattle(0.1, seed=seed + k)
        atoms.calc = SinglePointCalculator(atoms, energy=-3.5 * len(atoms) + rng.normal(),
                                           forces=rng.normal(size=(len(atoms), 3)), stress=1e-3 * rng.normal(size=6))
        out.append(atoms)
    return out


def timed_refit(spec, configs):
    t0 = time.perf_counter()
    design = DesignSet(spec)
    for atoms in configs:
        design.add(atoms)
    rows = time.perf_counter() - t0
    params = fit_design(design, FitSettings(n_members=32), seed=0)
    return rows, params.hyper["seconds"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--configs", type=int, default=200)
    args = ap.parse_args()
    n, repeat = (40, (2, 2, 2)) if args.quick else (args.configs, (3, 3, 3))
    counts = (1, 2, 5) if args.quick else (1, 2, 3, 4, 5)
    cost = RefitCost()
    headline = None
    for s in counts:
        configs = configurations(s, n, repeat)
        spec = BasisSpec(species=SPECIES[:s], r_cut=5.0, r_min=1.85, n_max=4, l_max=3, chem_channels=2)
        steps = [spec]
        while steps[-1].grown() is not None and (not args.quick or len(steps) < 2):
            steps.append(steps[-1].grown())
        variants = [(st, "2 channels") for st in steps]
        if s >= 3:
            variants.append((dataclasses.replace(spec, chem_channels=0), "one per species"))
        for st, label in variants:
            predicted = cost.predict(st.size)
            if label == "2 channels" and st is not spec and predicted > 3 * BUDGET:
                print(f"{s} species  {st.size_label():32s} {label:16s} skipped: ~{predicted:.0f} s predicted")
                continue
            rows, seconds = timed_refit(st, configs)
            if label == "2 channels":
                cost.record(st.size, seconds)
                if s == 5 and seconds <= BUDGET:
                    headline = seconds
            print(f"{s} species  {st.size_label():32s} {label:16s} rows {rows:6.1f} s  refit {seconds:6.1f} s  "
                  f"(predicted {predicted:6.1f} s)", flush=True)
    print(f"{n} configurations of {len(configs[0])} atoms each; budget {BUDGET:g} s")
    print(f"refit_seconds_5_species: {headline if headline is not None else float('nan'):.1f} s")


if __name__ == "__main__":
    main()
