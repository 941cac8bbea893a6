"""HAL against plain on-the-fly active learning on Si with the Stillinger-Weber oracle (LAMMPS).

Claim tested (van der Oord et al. 2022, PEG benchmark): biasing MD toward configurations the committee
disagrees on (E_HAL = E - tau sigma, HAL eq. 1, adaptive tau from tau_rel, eq. 12) reaches a stable
potential after far fewer exploratory MD steps than plain AL (tau_rel = 0).

Protocol (pylal.ase_loop.hal_loop; identical for every tau_rel of a seed):
- 64-atom diamond Si; initial set: 5 cells rattled by 0.1 A (rattle seeds 100*seed + k), labelled
  with SW: the same 5 configurations for every tau_rel of a seed.
- Learning: Langevin MD at 1500 K (1 fs, friction 0.02/fs) on the committee (BRR, K = 32, basis Si
  n_max 8, l_max 4, r_cut 3.8 A, weights 5/1/1), biased with tau_rel (adaptive tau, window 100, burn-in
  again after each refit); f_i (eq. 6) every 5 steps; flag when max_i f_i > f_tol (eq. 7); a flagged
  configuration is labelled with SW, the committee refitted, and MD resumes from it with fresh
  velocities. Learning is stable after `stable_steps` (2000) flag-free steps.
- Verification: 20,000 steps of PLAIN MD (tau = 0) at 1500 K from the ideal diamond cell with the
  learnt committee, f_i checked with the same f_tol; a flag is labelled, refitted, and learning resumes.
- "Exploratory MD steps": all MD steps before the verification run that passes (learning steps +
  failed verification steps); "labels": reference calls (the 5 initial ones included).
- Caps: `max_labels` reference calls, `max_steps` exploratory steps; a run that hits a cap is reported
  with the cap ('>=') and counted as not stable, never dropped.
- f_tol: the default 0.01 is calibrated on this system: the committee fitted to the 5 initial cells
  (held-out force RMSE ~0.04 eV/A) has max_i f_i up to ~0.016 in 5000 steps of MD at 1500 K; one fitted
  to 30 oracle-MD configurations (RMSE ~0.002 eV/A) stays below ~0.003. The loop's old default 0.1
  never flags here (the 5-cell model "passes" untouched), which would make the comparison empty.
- Held-out force RMSE: 20 snapshots of oracle (SW) Langevin MD at 1500 K, every 50 steps of 2 fs.
- Properties (if pylal.validate is importable): a0, B, C11, C12, C44 of the final models against SW.

Last line: `hal_vs_al_md_steps: <ratio> x` = mean exploratory steps of AL (tau_rel 0) / mean of HAL at
tau_rel 0.1 ('>=' if an AL run hit a cap, '<=' if a HAL run did).
--quick (< 1 min): 1 seed, tau_rel 0 and 0.1, stable_steps 300, verification 1000 steps, 5 held-out
snapshots, no properties; says so in the output.
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

from _hal_report import fmt, markdown_table, ratio_text, stats, write_outputs  # noqa: E402
from pylal.ase_loop import LoopSettings, hal_loop  # noqa: E402
from pylal.model.basis import BasisSpec  # noqa: E402
from pylal.reference import label, make_calculator  # noqa: E402
from pylal.sampling import diamond_si, oracle_md  # noqa: E402

PROPERTIES = ("a0", "B", "C11", "C12", "C44")


def initial_set(reference, seed: int, n: int = 5, rattle: float = 0.1):
    out = []
    for k in range(n):
        result = label(diamond_si(2, rattle=rattle, seed=100 * seed + k), reference)
        if not result.ok:
            raise RuntimeError(f"labelling initial cell {k} of seed {seed} failed: {result.message}")
        out.append(result.atoms)
    return out


def property_errors(params, reference_props, log):
    """Relative errors of a0, B, C11, C12, C44 against SW, or None if pylal.validate is missing."""
    if reference_props is None:
        return None
    from pylal.validate import property_table

    table = property_table(params, reference_props, properties=("crystal",))
    out = {}
    for name in PROPERTIES:
        row = table.get(name, {})
        out[name] = row.get("rel_error")
        if row.get("error"):
            log(f"  property {name}: {row['error']}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 seed, tau_rel 0 and 0.1, short runs (< 1 min)")
    ap.add_argument("--seeds", type=int, help="number of seeds (3; quick 1)")
    ap.add_argument("--tau-rel", type=float, nargs="*", help="tau_rel values, 0 first (0 0.05 0.1 0.2)")
    ap.add_argument("--temperature", type=float, default=1500.0, help="K (1500)")
    ap.add_argument("--f-tol", type=float, default=0.01, help="max_i f_i trigger (0.01, see the docstring)")
    ap.add_argument("--check-every", type=int, default=5)
    ap.add_argument("--stable-steps", type=int, help="flag-free learning steps (2000; quick 300)")
    ap.add_argument("--verify-steps", type=int, help="plain-MD verification steps (20000; quick 1000)")
    ap.add_argument("--max-labels", type=int, default=60, help="cap on reference calls (60)")
    ap.add_argument("--max-steps", type=int, help="cap on exploratory MD steps (60000; quick 6000)")
    ap.add_argument("--no-properties", action="store_true", help="skip a0, B, C11, C12, C44")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"),
                    help="folder for hal_vs_al[_quick].json/.md (benchmarks/results)")
    ap.add_argument("--runs", help="folder for the loops' parameter files (default: a temporary folder)")
    args = ap.parse_args()
    q = args.quick
    seeds = args.seeds or (1 if q else 3)
    taus = args.tau_rel if args.tau_rel else ([0.0, 0.1] if q else [0.0, 0.05, 0.1, 0.2])
    if 0.0 not in taus:
        taus = [0.0] + list(taus)
    stable_steps = args.stable_steps or (300 if q else 2000)
    verify_steps = args.verify_steps or (1000 if q else 20000)
    max_steps = args.max_steps or (6000 if q else 60000)
    n_held = 5 if q else 20
    do_props = not (q or args.no_properties)

    def log(s):
        print(s, flush=True)

    t_start = time.perf_counter()
    reference = make_calculator("lammps")
    spec = BasisSpec(species=("Si",), r_cut=3.8, n_max=8, l_max=4)
    log(f"HAL vs AL, Si/SW, 64 atoms, {args.temperature:.0f} K; tau_rel {taus}, {seeds} seed(s); f_tol "
        f"{args.f_tol}, check_every {args.check_every}; learning stable after {stable_steps} flag-free steps, "
        f"verification {verify_steps} steps of plain MD; caps {args.max_labels} labels, {max_steps} steps; "
        f"basis {spec.size}, K 32")
    if q:
        log("QUICK: scaled down: 1 seed, tau_rel 0 and 0.1 only, stable_steps 300 (full 2000), verification "
            "1000 steps (full 20000), step cap 6000 (full 60000), 5 held-out snapshots (full 20), no properties")
    held_out = oracle_md(diamond_si(2), reference, args.temperature, n_held, stride=50, seed=4242)
    ref_props = None
    if do_props:
        try:
            from pylal.validate import compute_properties

            ref_props = compute_properties(reference, properties=("crystal",))
            log("SW crystal: " + ", ".join(f"{k} {ref_props['crystal'].get(k, float('nan')):.4g}"
                                           for k in PROPERTIES))
        except ImportError:
            log("pylal.validate not available: no property errors")
    runs_dir = Path(args.runs or tempfile.mkdtemp(prefix="hal_vs_al_"))
    runs = []
    for seed in range(seeds):
        initial = initial_set(reference, seed)
        for tau_rel in taus:
            settings = LoopSettings(temperature=args.temperature, tau_rel=tau_rel, f_tol=args.f_tol,
                                    check_every=args.check_every, stable_steps=stable_steps,
                                    verify_steps=verify_steps, max_labels=args.max_labels,
                                    max_steps=max_steps, seed=seed)
            log(f"\n--- seed {seed}, tau_rel {tau_rel} ---")
            t0 = time.perf_counter()
            s = hal_loop(spec, reference, initial, diamond_si(2), held_out, settings,
                         runs_dir / f"s{seed}_t{tau_rel}", log=log)
            wall = time.perf_counter() - t0
            props = None
            if ref_props is not None:
                from pylal.model.params import Parameters

                props = property_errors(Parameters.load(runs_dir / f"s{seed}_t{tau_rel}" / "params_final.npz"),
                                        ref_props, log)
            run = dict(seed=seed, tau_rel=tau_rel, stable=s["stable"], stop=s["stop"], labels=s["reference_calls"],
                       failed=s["failed"], exploratory_steps=s["exploratory_steps"], learn_steps=s["learn_steps"],
                       verify_failed_steps=s["verify_failed_steps"], rmse_forces=s["rmse_forces"],
                       properties=props, wall_s=wall, seconds=s["seconds"], history=s["history"])
            runs.append(run)
            log(f"seed {seed} tau_rel {tau_rel}: {s['stop']}, {s['reference_calls']} labels, "
                f"{s['exploratory_steps']} exploratory steps ({s['learn_steps']} learning + "
                f"{s['verify_failed_steps']} failed verification), force RMSE {1e3 * s['rmse_forces']:.2f} meV/A, "
                f"{wall:.0f} s")

    # --- table over seeds ---
    summary = {}
    rows = []
    for tau_rel in taus:
        rs = [r for r in runs if r["tau_rel"] == tau_rel]
        capped = any(not r["stable"] for r in rs)
        entry = dict(tau_rel=tau_rel, n_seeds=len(rs), n_stable=sum(r["stable"] for r in rs), capped=capped,
                     labels=stats([r["labels"] for r in rs]),
                     exploratory_steps=stats([r["exploratory_steps"] for r in rs]),
                     rmse_forces=stats([r["rmse_forces"] for r in rs]))
        if ref_props is not None:
            entry["property_abs_rel_error"] = {
                k: stats([abs(r["properties"][k]) if r["properties"] and r["properties"][k] is not None else None
                          for r in rs]) for k in PROPERTIES}
        summary[tau_rel] = entry
        row = [f"{tau_rel:g}" + (" (AL)" if tau_rel == 0 else ""), f"{entry['n_stable']}/{len(rs)}",
               fmt(entry["labels"], capped=capped and any(r["stop"] == "max_labels" for r in rs)),
               fmt(entry["exploratory_steps"], capped=capped),
               fmt(entry["rmse_forces"], 1e3, 2)]
        if ref_props is not None:
            row.append(" / ".join("n/a" if entry["property_abs_rel_error"][k]["mean"] is None
                                  else f"{100 * entry['property_abs_rel_error'][k]['mean']:.1f}" for k in PROPERTIES))
        rows.append(row)
    header = ["tau_rel", "stable", "labels", "exploratory MD steps", "force RMSE (meV/A)"]
    if ref_props is not None:
        header.append("abs. rel. error % a0 / B / C11 / C12 / C44")
    table = markdown_table(header, rows)
    log("\nmean +- std [min-max] over seeds; '>=' marks means that include a capped (unstable) run")
    log(table)
    al, hal = summary.get(0.0), summary.get(0.1)
    ratio = "n/a"
    if al and hal:
        ratio = ratio_text(al["exploratory_steps"]["mean"], hal["exploratory_steps"]["mean"], al["capped"],
                           hal["capped"])
    per_seed = markdown_table(
        ["seed", "tau_rel", "stop", "labels", "exploratory steps (learn + failed verify)", "RMSE (meV/A)"],
        [[r["seed"], f"{r['tau_rel']:g}", r["stop"], r["labels"],
          f"{r['exploratory_steps']} ({r['learn_steps']} + {r['verify_failed_steps']})",
          f"{1e3 * r['rmse_forces']:.2f}"] for r in runs])
    log("\n" + per_seed)
    total = time.perf_counter() - t_start
    config = dict(quick=q, seeds=seeds, tau_rel=taus, temperature=args.temperature, f_tol=args.f_tol,
                  check_every=args.check_every, stable_steps=stable_steps, verify_steps=verify_steps,
                  max_labels=args.max_labels, max_steps=max_steps, held_out=n_held, basis=spec.to_dict(),
                  n_members=32, wall_s=total)
    md = (f"Si/SW, 64 atoms, {args.temperature:.0f} K, f_tol {args.f_tol}, check_every {args.check_every}, "
          f"stable_steps {stable_steps}, verification {verify_steps} steps, {seeds} seed(s)"
          + (" (QUICK, scaled down)" if q else "") + "\n\n" + table + "\n\nPer run:\n\n" + per_seed
          + f"\n\nhal_vs_al_md_steps: {ratio} x (AL / HAL tau_rel 0.1 mean exploratory steps); wall {total:.0f} s")
    write_outputs(args.out, "hal_vs_al_quick" if q else "hal_vs_al",
                  dict(config=config, summary={str(k): v for k, v in summary.items()}, runs=runs, ratio=ratio), md, log)
    log(f"total {total:.0f} s; parameter files in {runs_dir}")
    print(f"hal_vs_al_md_steps: {ratio} x")


if __name__ == "__main__":
    main()
