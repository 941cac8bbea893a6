"""Cost of the committee step on a 512-atom Si cell, side by side in one run (ratios).

mean-only step : forces of c_bar (a plain linear potential)
HAL step       : + sigma, grad sigma (one extra cotangent in the same reverse pass)
HAL + f_i      : + the forces of all K=32 members (relative force uncertainty, HAL eq. 6)
Bases side by side at about equal D (pylal's power basis n_max 8 l_max 4, D 189; ace-jax's ACE order 2
max_degree 16, D 180, the more accurate one in benchmarks/model_accuracy.py; --ace-degree sets another
degree); --basis picks some.
ACE twice: `ace` through ace-jax's XLA autodiff (exact radial), `ace-kernel` with its forces through
ace-jax's C++ kernel (pylal.model.ace_kernel, the default in LAMMPS and ASE) and the committee energies
from XLA features with the same radial table; `ace-kernel energies` is that forward pass alone (what the
committee energies cost). max|dF|: kernel against XLA, same configuration.
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


SPECS = ("power", "ace", "ace-kernel")
KINDS = {"mean-only": dict(bias=False), "HAL": dict(tau=0.1), "HAL + f_i": dict(tau=0.1, members=True)}


def specs(ace_degree=16):
    """The basis of each variant: `ace` and `ace-kernel` share one ACE spec (order 2, max_degree ace_degree)."""
    ace = AceSpec(species=("Si",), r_cut=3.8, order=2, max_degree=ace_degree)
    return {"power": BasisSpec(species=("Si",), r_cut=3.8, n_max=8, l_max=4), "ace": ace, "ace-kernel": ace}


def setup(name, spec, n_members):
    """The committee model of a named variant (random coefficients) and the 512-atom rattled Si cell."""
    rng = np.random.default_rng(0)
    mean = rng.normal(size=spec.size) * 1e-3
    params = Parameters(spec, mean, mean + 1e-4 * rng.normal(size=(n_members, spec.size)), 1e3)
    atoms = diamond_si(4, rattle=0.1, seed=1)
    return CommitteeModel(params, ace_kernel=name == "ace-kernel"), ase_pairs(atoms, spec.r_cut, spec.species)


def energies_timer(params, pairs):
    """The kernel step's forward pass alone (committee energies E^k from the tabulated XLA features)."""
    import jax

    from pylal.model.ace_kernel import ace_kernel
    from pylal.model.committee import bucket
    kernel = ace_kernel(params.spec)
    arrays, committee = kernel.arrays(params.committee), jax.numpy.asarray(params.committee)
    n_c = bucket(pairs.n_centers)
    v = np.zeros((bucket(pairs.n_pairs), 3))
    v[:, 0] = 2 * params.spec.r_cut
    v[: pairs.n_pairs] = pairs.vectors
    c = np.zeros(len(v), np.int32)
    c[: pairs.n_pairs] = pairs.centers
    z = np.zeros(len(v), np.int32)
    mask = (np.arange(len(v)) < pairs.n_pairs).astype(float)

    @jax.jit
    def energies(v):
        return committee @ kernel.features(v, c, z, z, n_c, mask, arrays).sum(0)

    return lambda: jax.block_until_ready(energies(v))


def timings(setups, n_members, reps, rounds) -> dict:
    """Best us/atom of every (basis, kind), interleaved: the machine's noise hits all alike."""
    runs = {}
    for name, (model, pairs) in setups.items():
        print(f"{name}: {pairs.n_centers} atoms, {pairs.n_pairs} pairs, basis {model.spec.size}, K={n_members}",
              flush=True)
        for kind, kw in KINDS.items():
            runs[name, kind] = lambda model=model, kw=kw: model.step(pairs, **kw)
        if name == "ace-kernel":
            runs[name, "energies"] = energies_timer(model.params, pairs)
    for run in runs.values():
        run()  # compile
    best = {key: np.inf for key in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            n = reps if key[0] != "ace" else max(1, reps // 10)
            t0 = time.perf_counter()
            for _ in range(n):
                run()
            best[key] = min(best[key], (time.perf_counter() - t0) / n / setups[key[0]][1].n_centers)
    out = {name: {kind: t for (nm, kind), t in best.items() if nm == name} for name in setups}
    for name, b in out.items():
        print(name)
        for kind, t in b.items():
            print(f"{kind:>10}: {t * 1e6:8.2f} us/atom/step  {t / b['mean-only']:5.2f} x mean-only", flush=True)
    return out


def kernel_agreement(setups):
    """max|dF| of the kernel step against the XLA step (HAL + f_i), same parameters and configuration."""
    (kernel, pairs), (xla, _) = setups["ace-kernel"], setups["ace"]
    a, b = kernel.step(pairs, tau=0.1, members=True), xla.step(pairs, tau=0.1, members=True)
    for name in ("forces_mean", "grad_sigma", "member_forces"):
        x, y = getattr(a, name), getattr(b, name)
        print(f"kernel - XLA, {name}: max|dF| {np.abs(x - y).max():.2e} eV/A (max|F| {np.abs(y).max():.2f})")
    print(f"kernel - XLA, e_members: max|dE| {np.abs(a.e_members - b.e_members).max():.2e} eV")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (< 1 min with --basis power)")
    ap.add_argument("--members", type=int, default=32)
    ap.add_argument("--basis", nargs="+", choices=SPECS, default=list(SPECS))
    ap.add_argument("--ace-degree", type=int, default=16, help="max_degree of the ACE basis (default 16: D 180)")
    args = ap.parse_args()
    reps, rounds = (10, 3) if args.quick else (50, 5)
    names = args.basis
    spec = specs(args.ace_degree)
    setups = {name: setup(name, spec[name], args.members) for name in names}
    best = timings(setups, args.members, reps, rounds)
    for ace in ("ace", "ace-kernel"):
        if ace in best and "power" in best:
            for kind in KINDS:
                print(f"{ace} / power, {kind}: {best[ace][kind] / best['power'][kind]:.1f} x")
    if "ace" in best and "ace-kernel" in best:
        kernel_agreement(setups)
    b = best["power" if "power" in best else names[0]]
    print(f"hal_cost: {b['HAL'] / b['mean-only']:.3f} x")
    print(f"committee_cost: {b['HAL + f_i'] / b['mean-only']:.3f} x")


if __name__ == "__main__":
    main()
