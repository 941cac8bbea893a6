"""Refit latency: the whole refit (pylal.fit.committee.fit_design: evidence BRR with the smoothness
prior, cross-validated calibration, K=32 committee samples) on
200 configurations x 64 atoms of Si (design rows assembled beforehand, as the refit server keeps
them incrementally; the time to build the rows is printed too).
Last line: `fit_time: <seconds> s`. --quick: 40 configurations.
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
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

from pylal.fit.committee import FitSettings, fit_design  # noqa: E402
from pylal.fit.design import DesignSet  # noqa: E402
from pylal.model.basis import BasisSpec  # noqa: E402
from pylal.sampling import diamond_si  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--configs", type=int, default=200)
    args = ap.parse_args()
    n = 40 if args.quick else args.configs
    spec = BasisSpec(species=("Si",), r_cut=3.8, n_max=8, l_max=4)
    rng = np.random.default_rng(0)
    design = DesignSet(spec)
    t0 = time.perf_counter()
    for i in range(n):
        atoms = diamond_si(2, rattle=0.15, seed=i)
        # labels do not matter for timing; random but well-formed
        atoms.calc = SinglePointCalculator(atoms, energy=-4.3 * len(atoms) + rng.normal(),
                                           forces=rng.normal(size=(len(atoms), 3)),
                                           stress=1e-3 * rng.normal(size=6))
        design.add(atoms)
    t_rows = time.perf_counter() - t0
    t0 = time.perf_counter()
    params = fit_design(design, FitSettings(n_members=32), seed=0)
    t_fit = time.perf_counter() - t0
    print(f"{n} configs x 64 atoms: design {params.hyper['n_rows']} rows x {spec.size} columns, "
          f"built in {t_rows:.1f} s ({t_rows / n * 1e3:.0f} ms/config incl. one compilation and the QR updates)")
    print(f"BRR (smoothness exponents {FitSettings().smoothness}) + {len(design.folds)}-fold cross-validated "
          f"calibration + {params.n_members} samples: {t_fit:.2f} s")
    print(f"fit_time: {t_fit:.2f} s")


if __name__ == "__main__":
    main()
