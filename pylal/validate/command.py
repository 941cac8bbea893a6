"""`pylal validate PARAMS.npz`: the property table of a parameter file against a reference."""
from __future__ import annotations

import time
from pathlib import Path


def add_parser(sub):
    v = sub.add_parser("validate", help="properties (a0, B, C_ij, liquid g(r)) of a model vs the reference "
                                        "(docs/validation.md)")
    v.add_argument("params", help="parameter file (.npz)")
    v.add_argument("--reference", default="lammps",
                   help="reference calculator name for pylal.reference.make_calculator (default lammps: SW Si)")
    v.add_argument("--quick", action="store_true", help="short liquid MD (tests, smoke runs)")
    v.add_argument("--out", help="folder for validation.json and validation.md (default: the params folder)")
    v.add_argument("--skip", action="append", default=[], choices=["crystal", "liquid"],
                   help="skip a property group (repeatable)")
    v.set_defaults(func=run)
    return v


def run(args) -> int:
    from pylal.calculator import PylalCalculator
    from pylal.reference import make_calculator
    from pylal.validate.table import GROUPS, failures, property_table, render_markdown, write_validation

    t0 = time.perf_counter()
    properties = tuple(g for g in GROUPS if g not in args.skip)
    if not properties:
        raise SystemExit("pylal validate: nothing to do (every property group skipped)")
    model = PylalCalculator(args.params, tau=0.0, check_every=0)
    reference = make_calculator(args.reference)
    table = property_table(model, reference, quick=args.quick, properties=properties,
                           log=lambda s: print(s, flush=True))
    out = Path(args.out) if args.out else Path(args.params).resolve().parent
    write_validation(table, out / "validation.json")
    print(render_markdown(table), end="")
    print(f"written {out / 'validation.json'} and {out / 'validation.md'} in {time.perf_counter() - t0:.0f} s")
    bad = failures(table)
    return 1 if bad else 0
