"""Assemble the report: load the run folder, evaluate models, draw every figure, write index.html.

Works on a running, finished or failed campaign: each piece is drawn from what exists and the
page lists what is missing. Only the output folder (default RUN_DIR/report/) is written.
"""
from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

from pylal.campaign.density import volume_range
from pylal.files import atomic_write
from pylal.report import html
from pylal.report.data import load_run
from pylal.report.evaluate import Evaluator, learning_curve, parity_data
from pylal.report.plot_calibration import calibration_data, plot_reliability
from pylal.report.plot_learning import plot_learning_curve
from pylal.report.plot_parity import plot_parity
from pylal.report.plot_time import plot_time_split
from pylal.report.plot_validation import plot_rdf
from pylal.report.plot_walkers import plot_tau, plot_uncertainty, plot_volume
from pylal.report.summary import duration, property_rows, summary_rows, time_split, walker_rows


@dataclasses.dataclass
class Report:
    out_dir: Path
    index: Path
    figures: list  # PNG paths, in page order
    missing: list  # what the run folder lacks (strings)
    curve: dict
    parity: dict | None
    summary: list  # (quantity, value, source)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "walker"


def build_report(run_dir, out_dir=None, now: float | None = None) -> Report:
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    run = load_run(run_dir)
    missing = list(run.missing)
    figures = []

    def figure(blocks, path, caption, why_not):
        if path is not None:
            figures.append(path)
            blocks.append(("figure", path, caption))
        else:
            blocks.append(("note", f"not drawn: {why_not}"))

    evaluator = Evaluator(run.holdout) if run.holdout is not None else None
    curve = learning_curve(run, out / "learning_curve.json", evaluator)
    curve["n_holdout"] = len(run.holdout) if run.holdout is not None else None
    missing.extend(curve["notes"])
    parity = parity_data(run, evaluator)

    learn = []
    figure(learn, plot_learning_curve(curve, out / "learning_curve.png") if curve["points"] or curve["final"] else None,
           "held-out RMSE of each published version (committee mean, tau = 0) against the number of "
           "configurations in its fit, initial set included (refit event `configs` or the file's hyper.n_configs); "
           "star: final fit. "
           f"Numbers in learning_curve.json ({curve['evaluated']} evaluated now, {curve['cached']} from the cache).",
           "needs holdout.xyz and at least one parameter version")

    walk = [("table", *walker_rows(run))] if run.walkers else []
    for w in run.walkers:
        figure(walk, plot_uncertainty(w, out / f"uncertainty_{safe_name(w.name)}.png"),
               f"walker {w.name}: max f_i (HAL eqs. 6-7) and softmax score (eq. 8) at every check step; red "
               f"crosses: flags; dashed: tolerance; dotted: the walker switched to a new parameter version.",
               f"walker {w.name} has no trace rows")
    if run.walkers:
        figure(walk, plot_tau(run.walkers, out / "tau.png"),
               "bias strength tau of E_HAL = E - tau sigma (HAL eq. 1), adaptive per eq. 12, per walker.",
               "no walker trace has tau values")
        figure(walk, plot_volume(run.walkers, out / "volume.png", volume_range(run.holdout or [])),
               "box volume per atom per walker; grey: the held-out set's range, dashed: 15% beyond it (outside, "
               "the held-out error does not measure the states the walker labels; docs/campaign.md).",
               "no walker trace has volumes (traces before 2026-12-02)")
    else:
        walk.append(("note", "no walkers"))

    par = []
    figure(par, plot_parity(parity, out / "parity.png") if parity is not None else None,
           "model (committee mean) against the reference on holdout.xyz: energy per atom and every force component.",
           "needs holdout.xyz and a loadable final/params.npz or parameter version")

    calibration = calibration_data(run)
    figure(par, plot_reliability(calibration, out / "reliability.png") if calibration is not None else None,
           "reliability of the committee (its spread as an error estimate: HAL, van der Oord et al. 2022): held-out force components binned by the committee's "
           "std, observed rms error per bin, per phase; on the dashed diagonal the spread equals the error.",
           "needs holdout.xyz and a loadable parameter file")
    split = time_split(run, now)
    tim = []
    if split is not None:
        rows = [[k, duration(v)] for k, v in split["seconds"].items()]
        rows += [["wall time", duration(split["wall"])]] if split.get("wall") is not None else []
        tim.append(("table", ["part", "time"], rows))
        tim.append(("note", f"source: {split['source']}"))
    figure(tim, plot_time_split(split, out / "time_split.png") if split is not None else None,
           "MD, labelling and fitting overlap in time (walkers run while the reference labels), so the bars "
           "need not add up to the wall time.", "no timings in campaign.json and no server log or traces")

    props = []
    header, rows = property_rows(run.validation)
    if rows:
        props.append(("table", header, rows))
    elif run.validation is not None:
        props.append(("note", "validation.json has no properties"))
    rdf = (run.validation or {}).get("rdf")
    if isinstance(rdf, dict):
        settings = rdf.get("settings") if isinstance(rdf.get("settings"), dict) else {}
        figure(props, plot_rdf(rdf, out / "rdf.png"), "radial distribution function of the liquid, model against "
               "reference (validation.json rdf)" + ("; " + ", ".join(f"{k} {v}" for k, v in settings.items())
                                                     if settings else "") + ".",
               "validation.json rdf has no usable r/model/reference arrays")
    elif run.validation is not None:
        props.append(("note", "no g(r) in validation.json"))
    if run.validation is None:
        props.append(("note", "no validation.json"))

    summary = summary_rows(run, curve, parity, now=now)
    sections = [("Summary", [("table", ["quantity", "value", "source"], [list(r) for r in summary], True)]),
                ("What is missing", [("list", missing)] if missing else [("text", "nothing: every expected file "
                                                                                  "and key is present.")]),
                ("Learning curve", learn), ("Walkers: uncertainty and tau", walk),
                ("Final model on the held-out set", par), ("Time", tim), ("Properties", props)]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now if now is not None else time.time()))
    page = html.render(f"pylal campaign report: {run_dir.resolve().name}",
                       f"run folder {run_dir.resolve()}; generated {stamp} by `pylal report`", sections)
    index = out / "index.html"
    atomic_write(index, page.encode())
    return Report(out_dir=out, index=index, figures=figures, missing=missing, curve=curve, parity=parity,
                  summary=summary)
