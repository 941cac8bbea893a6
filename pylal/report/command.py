"""`pylal report RUN_DIR [--out DIR]`: figures and index.html of a campaign run folder (docs/report.md)."""
from __future__ import annotations

import time


def add_parser(sub):
    p = sub.add_parser("report", help="plots and one self-contained HTML page of a campaign run folder "
                                      "(docs/report.md)")
    p.add_argument("run_dir", help="campaign run folder (campaign.json, walkers/, versions/, holdout.xyz, ...)")
    p.add_argument("--out", help="output folder (default RUN_DIR/report)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from pylal.report.build import build_report

    t0 = time.perf_counter()
    report = build_report(args.run_dir, args.out)
    for quantity, value, source in report.summary:
        print(f"{quantity}: {value}  [{source}]")
    curve = report.curve
    print(f"learning curve: {len(curve['points'])} versions ({curve['evaluated']} evaluated, "
          f"{curve['cached']} cached)")
    for p in curve["points"][-5:]:
        e = f"{p['energy_rmse'] * 1e3:.3g} meV/atom" if p.get("energy_rmse") is not None else "-"
        print(f"  v{p['version']}: {p.get('n_configs') if p.get('n_configs') is not None else '?'} configs, "
              f"energy {e}, forces {p['force_rmse']:.4g} eV/A")
    if report.missing:
        print(f"missing ({len(report.missing)}):")
        for m in report.missing:
            print(f"  - {m}")
    print(f"{len(report.figures)} figures in {report.out_dir}; page {report.index} "
          f"({report.index.stat().st_size / 1024:.0f} KiB, {time.perf_counter() - t0:.1f} s)")
    return 0
