"""`pylal report RUN_DIR`: PNG figures and one self-contained index.html for a campaign run folder.

Modules (one job each):
  data             read the run folder (campaign.json, walkers/*/trace.csv and tolerance.json,
                   server.log.jsonl, versions/, final/, holdout.xyz, validation.json, store.db);
                   every absence recorded in RunData.missing
  evaluate         held-out RMSE of every version (learning curve, cached in learning_curve.json)
                   and the final model's predictions (parity)
  summary          the tables (summary, walkers, time split, properties) as plain rows
  plot_learning, plot_walkers, plot_parity, plot_time, plot_validation   one figure kind each
  html             the page, PNGs embedded as base64
  build            build_report(run_dir, out_dir=None) -> Report: everything above in order
                   (make_report(run_dir, out_dir=None) -> index.html path)
  command          the CLI subcommand
See docs/report.md.
"""
from pylal.report.build import Report, build_report


def make_report(run_dir, out_dir=None):
    """Build the report; returns the path of index.html (what `pylal campaign` prints)."""
    return build_report(run_dir, out_dir).index


__all__ = ["Report", "build_report", "make_report"]
