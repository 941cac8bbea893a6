"""HAL against plain active learning on a small molecule with GFN2-xTB (tblite): stability of the models.

Scaled down from HAL's PEG(n=2) benchmark (van der Oord et al. 2022): ethanol (C2H6O, 9 atoms,
non-periodic) instead of diethylene glycol (17 atoms): with the pylal basis (3 species) a DEG model
needs D ~ 1500-2100 functions, a 12-33 s refit and hundreds of labels, beyond this benchmark's budget.

Protocol (pylal.ase_loop.hal_loop; identical for every tau_rel of a learning seed):
- Molecule relaxed with GFN2-xTB. Initial set: 5 snapshots of GFN2-xTB Langevin MD at T (every 20
  steps of 1 fs after 50), seed = learning seed: the same 5 for every tau_rel of a seed.
- Model: BasisSpec(H, C, O; r_cut 4.0 A, r_min 0.7 A, n_max 4, l_max 2; ZBL prior switched off between
  0.5 and 0.8 A), D = 741, BRR committee K = 32, weights 5/1 (no virial: not periodic).
- Learning at T (600 K): Langevin (1 fs, friction 0.02/fs), tau_rel 0 (AL), 0.1, 0.2 (HAL, adaptive tau
  eq. 12, window 100, kept across refits: early on flags come every 5-50 steps, and a 100-step burn-in
  after each refit would leave HAL unbiased, i.e. identical to AL, until the model is nearly stable;
  --reset-tau restores the burn-in); f_i every 5 steps, flag when max_i f_i > f_tol (0.1); learning ends when
  `stable_steps` (1000) steps pass without a flag or at the caps (max_labels 40 reference calls,
  max_steps 20000). The physical guard below also stops learning MD: that configuration is labelled
  and MD restarts from the relaxed molecule.
- Judgement: each final model runs plain MD (tau = 0) at T from the relaxed molecule with 10 velocity
  seeds, capped at `test_steps` (20000) steps. Unstable (checked every step): a bond of the relaxed
  molecule (ASE natural cutoffs) stretched beyond 1.5x its equilibrium length, two atoms closer than
  0.6 A, or non-finite positions/energy/forces. Score = MINIMUM stable steps over the 10 seeds (the mean
  is reported too).
- Held-out force RMSE: 10 snapshots of GFN2-xTB MD at T (every 50 steps).

Last line: `hal_vs_al_molecule_min_stable_steps: <ratio> x` = min stable steps of HAL (best of tau_rel
0.1 and 0.2, each averaged over learning seeds) / that of AL; both at the cap means "1.00 (both capped)".
--quick (< 1 min): 1 learning seed, tau_rel 0 and 0.1, max_labels 12, stable_steps 200, 3 test seeds of
at most 1000 steps.
"""
import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from ase import units  # noqa: E402
from ase.build import molecule  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution  # noqa: E402
from ase.neighborlist import NeighborList, natural_cutoffs  # noqa: E402
from ase.optimize import BFGS  # noqa: E402

from _hal_report import fmt, markdown_table, stats, write_outputs  # noqa: E402
from pylal.calculator import PylalCalculator  # noqa: E402
from pylal.fit.design import Weights  # noqa: E402
from pylal.ase_loop import LoopSettings, hal_loop  # noqa: E402
from pylal.model.basis import BasisSpec  # noqa: E402
from pylal.model.params import Parameters  # noqa: E402
from pylal.reference import make_calculator  # noqa: E402
from pylal.sampling import oracle_md  # noqa: E402


class BondGuard:
    """Physical instability of a molecule: a bond of the reference geometry stretched beyond
    `stretch` x its length, two atoms closer than `min_distance`, or non-finite positions."""

    def __init__(self, reference_atoms, stretch=1.5, min_distance=0.6):
        nl = NeighborList(natural_cutoffs(reference_atoms), self_interaction=False, bothways=False)
        nl.update(reference_atoms)
        self.bonds = np.array([(i, j) for i in range(len(reference_atoms)) for j in nl.get_neighbors(i)[0]])
        if not len(self.bonds):
            raise ValueError("BondGuard: the reference geometry has no bonds")
        pos = reference_atoms.positions
        self.r0 = np.linalg.norm(pos[self.bonds[:, 0]] - pos[self.bonds[:, 1]], axis=1)
        self.stretch, self.min_distance = stretch, min_distance

    def __call__(self, atoms):
        pos = atoms.positions
        if not np.isfinite(pos).all():
            return "non-finite positions"
        r = np.linalg.norm(pos[self.bonds[:, 0]] - pos[self.bonds[:, 1]], axis=1)
        k = int(np.argmax(r / self.r0))
        if r[k] > self.stretch * self.r0[k]:
            i, j = self.bonds[k]
            return f"bond {atoms[i].symbol}{i}-{atoms[j].symbol}{j} at {r[k]:.2f} A ({r[k] / self.r0[k]:.2f}x)"
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(pos)) * 1e9
        if d.min() < self.min_distance:
            return f"atoms {d.min():.2f} A apart"
        return None


def relaxed_molecule(name, reference):
    atoms = molecule(name)
    atoms.pbc = False
    atoms.calc = reference
    BFGS(atoms, logfile=None).run(fmax=0.005, steps=500)
    atoms.calc = None
    return atoms


def stable_steps(params, start, guard, temperature, cap, seed, check=100):
    """Plain MD (tau = 0) with the model until the guard trips (checked every step) or `cap` steps."""
    calc = PylalCalculator(params, tau=0.0, check_every=0)
    atoms = start.copy()
    atoms.calc = calc
    rng = np.random.default_rng([seed, 31337])
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=temperature, friction=0.02 / units.fs, fixcm=False,
                   rng=rng)
    for step in range(1, cap + 1):
        try:
            dyn.step()
        except Exception as err:  # a blown-up run breaks the neighbour list
            if np.isfinite(atoms.positions).all():
                raise
            return step, f"non-finite positions ({type(err).__name__})"
        reason = guard(atoms)
        if reason is None and not (np.isfinite(calc.results["energy"]) and np.isfinite(calc.results["forces"]).all()):
            reason = "non-finite energy/forces"
        if reason:
            return step - 1, reason  # the last stable step
    return cap, None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 seed, tau_rel 0 and 0.1, short runs (< 1 min)")
    ap.add_argument("--molecule", default="CH3CH2OH", help="ase.build.molecule name (CH3CH2OH = ethanol)")
    ap.add_argument("--learn-seeds", type=int, help="learning seeds (2; quick 1)")
    ap.add_argument("--tau-rel", type=float, nargs="*", help="tau_rel values (0 0.1 0.2; quick 0 0.1)")
    ap.add_argument("--temperature", type=float, default=600.0, help="K (600)")
    ap.add_argument("--f-tol", type=float, default=0.1)
    ap.add_argument("--check-every", type=int, default=5)
    ap.add_argument("--reset-tau", action="store_true", help="adaptive tau burns in again after each refit")
    ap.add_argument("--stable-steps", type=int, help="flag-free learning steps (1000; quick 200)")
    ap.add_argument("--max-labels", type=int, help="cap on reference calls (40; quick 12)")
    ap.add_argument("--max-steps", type=int, default=20000, help="cap on learning MD steps (20000)")
    ap.add_argument("--test-seeds", type=int, help="plain-MD seeds per model (10; quick 3)")
    ap.add_argument("--test-steps", type=int, help="cap of each plain-MD run (20000; quick 1000)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--runs", help="folder for the loops' parameter files (default: a temporary folder)")
    args = ap.parse_args()
    q = args.quick
    learn_seeds = args.learn_seeds or (1 if q else 2)
    taus = args.tau_rel if args.tau_rel else ([0.0, 0.1] if q else [0.0, 0.1, 0.2])
    if 0.0 not in taus:
        taus = [0.0] + list(taus)
    stable = args.stable_steps or (200 if q else 1000)
    max_labels = args.max_labels or (12 if q else 40)
    test_seeds = args.test_seeds or (3 if q else 10)
    test_steps = args.test_steps or (1000 if q else 20000)
    T = args.temperature

    def log(s):
        print(s, flush=True)

    t_start = time.perf_counter()
    reference = make_calculator("tblite")  # GFN2-xTB
    start = relaxed_molecule(args.molecule, reference)
    guard = BondGuard(start)
    spec = BasisSpec(species=("H", "C", "O"), r_cut=4.0, r_min=0.7, n_max=4, l_max=2, prior=(0.5, 0.8))
    missing = set(start.get_chemical_symbols()) - set(spec.species)
    if missing:
        raise ValueError(f"molecule {args.molecule} has elements {sorted(missing)} outside the basis {spec.species}")
    log(f"HAL vs AL, {args.molecule} ({start.get_chemical_formula()}, {len(start)} atoms, non-periodic), "
        f"GFN2-xTB; {T:.0f} K; tau_rel {taus}, {learn_seeds} learning seed(s); f_tol {args.f_tol}, check_every "
        f"{args.check_every}, learning stable after {stable} flag-free steps, caps {max_labels} labels / "
        f"{args.max_steps} steps; test: {test_seeds} seeds x <= {test_steps} steps of plain MD; basis {spec.size}; "
        f"{len(guard.bonds)} bonds guarded (1.5x stretch, 0.6 A contact)")
    if q:
        log("QUICK: scaled down: 1 learning seed (full 2), tau_rel 0 and 0.1 (full 0, 0.1, 0.2), max_labels 12 "
            "(full 40), stable_steps 200 (full 1000), 3 test seeds (full 10) of <= 1000 steps (full 20000)")
    held_out = oracle_md(start, reference, T, 5 if q else 10, stride=50, equilibrate=100, timestep_fs=1.0,
                         seed=4242)
    runs_dir = Path(args.runs or tempfile.mkdtemp(prefix="hal_vs_al_mol_"))
    runs = []
    for seed in range(learn_seeds):
        initial = oracle_md(start, reference, T, 5, stride=20, equilibrate=50, timestep_fs=1.0, seed=seed)
        for tau_rel in taus:
            settings = LoopSettings(temperature=T, tau_rel=tau_rel, f_tol=args.f_tol, check_every=args.check_every,
                                    stable_steps=stable, max_labels=max_labels, max_steps=args.max_steps,
                                    weights=Weights(5.0, 1.0, 0.0), seed=seed, guard=guard,
                                    reset_tau=args.reset_tau)
            log(f"\n--- learning seed {seed}, tau_rel {tau_rel} ---")
            t0 = time.perf_counter()
            folder = runs_dir / f"s{seed}_t{tau_rel}"
            s = hal_loop(spec, reference, initial, start, held_out, settings, folder, log=log)
            t_learn = time.perf_counter() - t0
            params = Parameters.load(folder / "params_final.npz")
            tests = [stable_steps(params, start, guard, T, test_steps, k) for k in range(test_seeds)]
            steps = [n for n, _ in tests]
            run = dict(seed=seed, tau_rel=tau_rel, stop=s["stop"], labels=s["reference_calls"], failed=s["failed"],
                       learn_steps=s["exploratory_steps"],
                       guard_events=sum(h["event"] == "guard" for h in s["history"]),
                       rmse_forces=s["rmse_forces"], test_steps=steps, min_stable=min(steps),
                       mean_stable=float(np.mean(steps)), test_failures=[r for _, r in tests if r],
                       wall_s=dict(learn=t_learn, test=time.perf_counter() - t0 - t_learn))
            runs.append(run)
            log(f"seed {seed} tau_rel {tau_rel}: learning {s['stop']} after {s['exploratory_steps']} steps, "
                f"{s['reference_calls']} labels ({run['guard_events']} guard events), force RMSE "
                f"{s['rmse_forces']:.3f} eV/A; plain MD stable steps {steps} (min {min(steps)}); "
                f"{t_learn:.0f} s + {run['wall_s']['test']:.0f} s")
            for r in run["test_failures"][:3]:
                log(f"    unstable: {r}")

    summary, rows = {}, []
    for tau_rel in taus:
        rs = [r for r in runs if r["tau_rel"] == tau_rel]
        entry = dict(tau_rel=tau_rel, labels=stats([r["labels"] for r in rs]),
                     learn_steps=stats([r["learn_steps"] for r in rs]),
                     rmse_forces=stats([r["rmse_forces"] for r in rs]),
                     min_stable=stats([r["min_stable"] for r in rs]),
                     mean_stable=stats([r["mean_stable"] for r in rs]),
                     n_at_cap=sum(r["min_stable"] >= test_steps for r in rs), stops=[r["stop"] for r in rs])
        summary[tau_rel] = entry
        rows.append([f"{tau_rel:g}" + (" (AL)" if tau_rel == 0 else ""), fmt(entry["labels"]),
                     fmt(entry["learn_steps"]), fmt(entry["rmse_forces"], 1e3, 0),
                     fmt(entry["min_stable"]), fmt(entry["mean_stable"]),
                     f"{entry['n_at_cap']}/{len(rs)}", ", ".join(entry["stops"])])
    table = markdown_table(["tau_rel", "labels", "learning MD steps", "force RMSE (meV/A)",
                            f"min stable steps ({test_seeds} seeds)", "mean stable steps",
                            "min at cap", "learning stop"], rows)
    log(f"\nmean +- std [min-max] over {learn_seeds} learning seed(s); stable steps capped at {test_steps}")
    log(table)
    per_run = markdown_table(["seed", "tau_rel", "labels", "learning steps", "RMSE (meV/A)", "stable steps per test seed"],
                             [[r["seed"], f"{r['tau_rel']:g}", r["labels"], r["learn_steps"],
                               f"{1e3 * r['rmse_forces']:.0f}", " ".join(map(str, r["test_steps"]))] for r in runs])
    log("\n" + per_run)
    al = summary[0.0]["min_stable"]["mean"]
    hal = [(summary[t]["min_stable"]["mean"], t) for t in taus if t > 0]
    best, best_tau = max(hal) if hal else (None, None)
    if best is None or not al:
        ratio = "n/a" if best is None else f">={best:.0f}/0"
    else:
        both_capped = al >= test_steps and best >= test_steps
        ratio = "1.00 (both capped)" if both_capped else (
            (">=" if best >= test_steps else "") + f"{best / al:.2f}")
    total = time.perf_counter() - t_start
    config = dict(quick=q, molecule=args.molecule, temperature=T, tau_rel=taus, learn_seeds=learn_seeds,
                  reset_tau=args.reset_tau,
                  f_tol=args.f_tol, check_every=args.check_every, stable_steps=stable, max_labels=max_labels,
                  max_steps=args.max_steps, test_seeds=test_seeds, test_steps=test_steps, basis=spec.to_dict(),
                  wall_s=total)
    md = (f"{args.molecule} ({len(start)} atoms), GFN2-xTB, {T:.0f} K, f_tol {args.f_tol}, max_labels {max_labels}, "
          f"test {test_seeds} seeds x <= {test_steps} steps" + (" (QUICK, scaled down)" if q else "")
          + "\n\n" + table + "\n\nPer run:\n\n" + per_run
          + f"\n\nhal_vs_al_molecule_min_stable_steps: {ratio} x (HAL tau_rel {best_tau} / AL); wall {total:.0f} s")
    write_outputs(args.out, "hal_vs_al_molecule_quick" if q else "hal_vs_al_molecule",
                  dict(config=config, summary={str(k): v for k, v in summary.items()}, runs=runs, ratio=ratio,
                       hal_tau_rel=best_tau), md, log)
    log(f"total {total:.0f} s; parameter files in {runs_dir}")
    print(f"hal_vs_al_molecule_min_stable_steps: {ratio} x")


if __name__ == "__main__":
    main()
