"""`pylal prior ...`: deck lines of a parameter file's prior, Morse fits from dimer curves, show.

  pylal prior commands PARAMS --elements Si [C ...]      the pair_style / pair_coeff lines for a deck
  pylal prior show PARAMS                                the prior stored in a parameter file (JSON)
  pylal prior fit-morse --reference lammps --species Si -o prior.json
"""
from __future__ import annotations

import json
import sys


def _load_prior(path: str, r_cut: float | None):
    """(prior, model cutoff) from a parameter file, or from a prior JSON file (then r_cut is needed)."""
    from pylal.model.params import ParameterFileError, Parameters
    from pylal.prior.spec import LammpsPrior

    if path.endswith((".json", ".toml")):
        return LammpsPrior.load(path), r_cut
    try:
        params = Parameters.load(path)
    except ParameterFileError as err:
        raise SystemExit(f"pylal prior: {err}") from err
    return params.lammps_prior, r_cut if r_cut is not None else params.spec.r_cut


def _commands(args):
    from pylal.prior.deck import lammps_commands

    prior, r_cut = _load_prior(args.params, args.r_cut)
    if prior is None:
        print(f"# {args.params} has no LAMMPS prior: fix pylal is the whole potential", file=sys.stderr)
        print(f"pair_style zero {r_cut!r}\npair_coeff * *")
        return 0
    if r_cut is None:
        raise SystemExit("pylal prior commands: a prior file needs --r-cut (the model cutoff)")
    print("\n".join(lammps_commands(prior, args.elements, r_cut)))
    return 0


def _show(args):
    prior, _ = _load_prior(args.params, None)
    print(json.dumps(prior.to_dict() if prior is not None else None, indent=1, sort_keys=True))
    return 0


def _option(text: str):
    key, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"pylal prior fit-morse: --option {text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _fit_morse(args):
    from pylal.prior.morse import dimer_morse, morse_prior
    from pylal.reference import make_calculator

    options = dict(_option(o) for o in args.option)
    if args.reference == "lammps":
        options.setdefault("species", list(args.species))
    calc = make_calculator(args.reference, **options)
    fitted = {}
    for element in args.species:
        m = dimer_morse(calc, element, args.r_min, args.r_max, args.points)
        fitted[element] = m
        print(f"{element}-{element}: D_e {m.d_e:.6g} eV, r_e {m.r_e:.6g} A, a {m.a:.6g} 1/A")
    prior = morse_prior(fitted, cutoff=args.cutoff, style=args.style)
    for key, values in prior.coeffs:
        a, b = key.split("-")
        if a != b:
            print(f"{key} (mixed): D_e {values[0]:.6g} eV, r_e {values[2]:.6g} A, a {values[1]:.6g} 1/A")
    prior.save(args.output)
    print(f"prior ({prior.style}, cutoff {prior.cutoff} A) -> {args.output}")
    return 0


def add_parser(sub):
    p = sub.add_parser("prior", help="physics prior as a LAMMPS pair style (docs/prior.md)")
    ps = p.add_subparsers(dest="prior_command", required=True)
    c = ps.add_parser("commands", help="print the deck's pair_style / pair_coeff lines for a parameter file")
    c.add_argument("params", help="parameter file (or a prior .json with --r-cut)")
    c.add_argument("--elements", nargs="+", required=True, help="element of each LAMMPS atom type 1..n")
    c.add_argument("--r-cut", type=float, help="cutoff of the `zero` overlay (default: the model's)")
    c.set_defaults(func=_commands)
    s = ps.add_parser("show", help="print the prior stored in a parameter file (JSON)")
    s.add_argument("params")
    s.set_defaults(func=_show)
    m = ps.add_parser("fit-morse", help="per-element Morse parameters from reference dimer curves, mixed")
    m.add_argument("--reference", default="lammps", help="calculator name (pylal.reference.make_calculator)")
    m.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="calculator option (JSON value), e.g. potential=\"eam-alcu\"")
    m.add_argument("--species", nargs="+", required=True)
    m.add_argument("--r-min", type=float, default=1.2, help="shortest dimer distance scanned, A (1.2)")
    m.add_argument("--r-max", type=float, default=5.0, help="longest dimer distance scanned, A (5.0)")
    m.add_argument("--points", type=int, default=60, help="scan points (60)")
    m.add_argument("--cutoff", type=float, help="prior cutoff, A (default: where |E| < 0.5%% of D_e)")
    m.add_argument("--style", default="morse/smooth/linear", help="LAMMPS style (morse/smooth/linear)")
    m.add_argument("-o", "--output", default="prior.json")
    m.set_defaults(func=_fit_morse)
    return p
