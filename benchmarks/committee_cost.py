"""Cost of the committee step on a 512-atom Si cell, side by side in one run (ratios).

mean-only step : forces of c_bar (a plain linear potential)
HAL step       : + sigma, grad sigma (one extra cotangent in the same reverse pass)
HAL + f_i      : + the forces of all K=32 members (relative force uncertainty, HAL eq. 6)
Bases side by side at about equal D (pylal's power basis n_max 8 l_max 4, D 189; ace-jax's ACE order 2
max_degree 16, D 180, the more accurate one in benchmarks/model_accuracy.py); --basis picks one.
Last line: `committee_cost: <HAL+f_i / mean-only> x` of the power basis (goal <= 2; HAL/mean goal <= 1.1).
Run with one thread: OMP_NUM_THREADS=1 and XLA_FLAGS set below.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from pylal.model.ace import AceSpec  # noqa: E402
from pylal.model.basis import BasisSpec  # noqa: E402
from pylal.model.committee import CommitteeModel  # noqa: E402
from pylal.model.neighbors import ase_pairs  # noqa: E402
from pylal.model.params import Parameters  # noqa: E402
from pylal.sampling import diamond_si  # noqa: E402


SPECS = {"power": BasisSpec(species=("Si",), r_cut=3.8, n_max=8, l_max=4),
         "ace": AceSpec(species=("Si",), r_cut=3.8, order=2, max_degree=16)}
KINDS = {"mean-only": dict(bias=False), "HAL": dict(tau=0.1), "HAL + f_i": dict(tau=0.1, members=True)}


def timings(spec, n_members, reps, rounds) -> dict:
    rng = np.random.default_rng(0)
    mean = rng.normal(size=spec.size) * 1e-3
    params = Parameters(spec, mean, mean + 1e-4 * rng.normal(size=(n_members, spec.size)), 1e3)
    model = CommitteeModel(params)
    atoms = diamond_si(4, rattle=0.1, seed=1)
    pairs = ase_pairs(atoms, spec.r_cut, spec.species)
    for kw in KINDS.values():
        model.step(pairs, **kw)  # compile
    best = {k: np.inf for k in KINDS}
    for _ in range(rounds):  # interleaved rounds: the machine's noise hits all kinds alike
        for name, kw in KINDS.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                model.step(pairs, **kw)
            best[name] = min(best[name], (time.perf_counter() - t0) / reps / len(atoms))
    print(f"{spec.kind}: {len(atoms)} atoms, {pairs.n_pairs} pairs, basis {spec.size}, K={n_members}", flush=True)
    for name, t in best.items():
        print(f"{name:>10}: {t * 1e6:8.2f} us/atom/step  {t / best['mean-only']:5.2f} x mean-only", flush=True)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (< 1 min with --basis power)")
    ap.add_argument("--members", type=int, default=32)
    ap.add_argument("--basis", choices=["both", *SPECS], default="both")
    args = ap.parse_args()
    reps, rounds = (10, 3) if args.quick else (50, 5)
    names = list(SPECS) if args.basis == "both" else [args.basis]
    best = {name: timings(SPECS[name], args.members, reps if name == "power" else max(1, reps // 10), rounds)
            for name in names}
    if len(best) == 2:
        for kind in KINDS:
            print(f"ace / power, {kind}: {best['ace'][kind] / best['power'][kind]:.1f} x")
    b = best[names[0]]
    print(f"hal_cost: {b['HAL'] / b['mean-only']:.3f} x")
    print(f"committee_cost: {b['HAL + f_i'] / b['mean-only']:.3f} x")


if __name__ == "__main__":
    main()
