"""The report's tables as plain rows (strings), from whatever the run folder holds.

Every summary value says where it came from: campaign.json first, then store.db, the server log
or the traces as fallbacks (a running or failed campaign has no `final` block yet).
"""
from __future__ import annotations

import datetime as _dt
import time

import numpy as np

from pylal.report.data import finite


def _when(t) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if finite(t) else "-"


def duration(seconds) -> str:
    if not finite(seconds):
        return "-"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _trace_times(run) -> tuple[float | None, float | None]:
    times = [w.trace["wall_time"] for w in run.walkers if w.trace is not None and w.n_rows]
    times = np.concatenate(times) if times else np.array([])
    times = times[np.isfinite(times)]
    log_times = [e["time"] for e in run.events if finite(e.get("time"))]
    allt = np.concatenate([times, np.array(log_times, dtype=float)])
    return (float(allt.min()), float(allt.max())) if len(allt) else (None, None)


def summary_rows(run, curve: dict | None, parity: dict | None, now: float | None = None) -> list[tuple[str, str, str]]:
    """(quantity, value, source) rows of the summary table."""
    now = time.time() if now is None else now
    c = run.campaign or {}
    final = c.get("final") if isinstance(c.get("final"), dict) else {}
    rows = []
    rows.append(("status", str(c["status"]) if c.get("status") else "unknown", "campaign.json" if c.get("status")
                 else "no status in campaign.json" if run.campaign else "no campaign.json"))
    if c.get("error"):
        rows.append(("error", str(c["error"]), "campaign.json"))
    first, last = _trace_times(run)
    started = c.get("started") if finite(c.get("started")) else None
    rows.append(("started", _when(started if started is not None else first),
                 "campaign.json" if started is not None else "first trace row / log event" if first else "missing"))
    wall, wall_source = wall_time(run, now)
    rows.append(("wall time", duration(wall) + (" so far" if wall_source.startswith("now") else ""), wall_source))
    if last is not None and c.get("status") != "done":  # when did a running or failed campaign last move
        rows.append(("last activity", f"{_when(last)} ({duration(now - last)} ago)", "traces and server log"))
    names = [w.name for w in run.walkers]
    rows.append(("walkers", f"{len(names)}" + (f" ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
                                               if names else ""), "campaign.json + walkers/"))
    n_labels, source = final.get("n_labels"), "campaign.json final.n_labels"
    if not isinstance(n_labels, int) and run.store_counts is not None:
        n_labels, source = run.store_counts["labeled"], "store.db (server labels only)"
    if not isinstance(n_labels, int) and run.events:
        n_labels, source = len(run.events_of("labeled")), "server.log.jsonl labeled events"
    rows.append(("labelled configurations", str(n_labels) if isinstance(n_labels, int) else "-",
                 source if isinstance(n_labels, int) else "missing"))
    calls, source = final.get("n_reference_calls"), "campaign.json final.n_reference_calls"
    if not isinstance(calls, int) and run.events:
        calls = sum(len(run.events_of(k)) for k in ("labeled", "retry", "label_failed"))
        source = "server.log.jsonl labeled + retry + label_failed events"
    rows.append(("reference calls", str(calls) if isinstance(calls, int) else "-",
                 source if isinstance(calls, int) else "missing"))
    if run.store_counts is not None:
        s = run.store_counts
        rows.append(("flagged configurations", f"{s['flagged']} = {s['queued']} queued + {s['labeling']} labeling + "
                     f"{s['labeled']} labeled + {s['failed']} failed + {s['dropped']} dropped", "store.db"))
    vs = list(run.versions)
    rows.append(("parameter versions", f"{len(vs)}" + (f" (v{vs[0]} ... v{vs[-1]})" if len(vs) > 1 else
                                                       f" (v{vs[0]})" if vs else ""), "versions/"))
    term = c.get("termination") if isinstance(c.get("termination"), dict) else {}
    if term:
        rows.append(("termination", ", ".join(f"{k} {v}" for k, v in term.items()), "campaign.json"))
    fit = [f"{k} {final[k]}" for k in ("method", "version", "n_configs", "n_initial", "n_failed") if k in final]
    if fit:
        rows.append(("final fit", ", ".join(fit), "campaign.json final"))
    if finite(final.get("holdout_force_rmse")) or finite(final.get("holdout_energy_rmse")):
        rows.append(("final holdout RMSE (campaign)", _rmse_text(final.get("holdout_energy_rmse"),
                                                                  final.get("holdout_force_rmse")),
                     "campaign.json final"))
    if parity is not None:
        rows.append((f"holdout RMSE of the {parity['label']} (this report)",
                     _rmse_text(parity.get("energy_rmse"), parity.get("force_rmse")),
                     f"{parity['file']} on holdout.xyz ({len(parity['ref_e'])} configurations)"))
    elif curve is not None and curve.get("points"):
        p = curve["points"][-1]
        rows.append(("holdout RMSE, newest version", _rmse_text(p.get("energy_rmse"), p.get("force_rmse")),
                     p["file"]))
    return rows


def wall_time(run, now: float) -> tuple[float | None, str]:
    """(seconds, source): timings.wall, finished - started, now - started (running), or the span of
    trace rows and log events."""
    c = run.campaign or {}
    timings = c.get("timings") if isinstance(c.get("timings"), dict) else {}
    started = c.get("started") if finite(c.get("started")) else None
    if finite(timings.get("wall")):
        return float(timings["wall"]), "campaign.json timings.wall"
    if started is not None and finite(c.get("finished")):
        return float(c["finished"] - started), "campaign.json finished - started"
    if started is not None:
        return float(now - started), "now - campaign.json started"
    first, last = _trace_times(run)
    if first is not None:
        return float(last - first), "first to last trace row / log event"
    return None, "missing"


def _rmse_text(e, f) -> str:
    parts = []
    if finite(e):
        parts.append(f"energy {e * 1e3:.3g} meV/atom")
    if finite(f):
        parts.append(f"forces {f:.3g} eV/A")
    return ", ".join(parts) or "-"


def walker_rows(run) -> tuple[list[str], list[list[str]]]:
    header = ["walker", "T (K)", "P (bar)", "ranks", "check rows", "last step", "flags", "versions seen",
              "last max f_i", "f_tol", "s_tol"]
    rows = []
    for w in run.walkers:
        info, t, tol = w.info, w.trace, w.tolerance or {}
        if t is not None and w.n_rows:
            v = t["version"][np.isfinite(t["version"])]
            cols = [str(w.n_rows), f"{t['step'][-1]:.0f}", f"{int(np.nansum(t['flagged'] == 1))}",
                    f"{len(np.unique(v))}" if len(v) else "-", f"{t['f_max'][-1]:.3g}"]
        else:
            cols = ["0" if t is not None else "no trace", "-", "-", "-", "-"]
        rows.append([w.name, _fmt(info.get("temperature")), _fmt(info.get("pressure")), _fmt(info.get("ranks"))]
                    + cols + [_fmt(tol.get("f_tol")), _fmt(tol.get("s_tol"))])
    return header, rows


def _fmt(x) -> str:
    return f"{x:g}" if finite(x) else ("-" if x is None else str(x))


def time_split(run, now: float | None = None) -> dict | None:
    """{"seconds": {label: s}, "wall": s|None, "source": str} from campaign.json timings, else from
    the server log (labelled and refit seconds) and the traces (MD: each walker's first-to-last row)."""
    c = run.campaign or {}
    timings = c.get("timings") if isinstance(c.get("timings"), dict) else {}
    names = (("md", "MD (walkers)"), ("label", "labelling"), ("fit", "refits"), ("final_fit", "final fit"),
             ("validation", "validation"))
    seconds = {label: float(timings[k]) for k, label in names if finite(timings.get(k))}
    known = {k for k, _ in names} | {"wall"}
    seconds.update({k.replace("_", " "): float(v) for k, v in timings.items() if k not in known and finite(v)})
    if seconds:
        return {"seconds": seconds, "wall": timings.get("wall") if finite(timings.get("wall")) else None,
                "source": "campaign.json timings"}
    labelled = [e["seconds"] for e in run.events if e.get("event") in ("labeled",) and finite(e.get("seconds"))]
    refits = [e["seconds"] for e in run.events if e.get("event") == "refit" and finite(e.get("seconds"))]
    md = [float(w.trace["wall_time"][-1] - w.trace["wall_time"][0]) for w in run.walkers
          if w.trace is not None and w.n_rows > 1 and np.isfinite(w.trace["wall_time"][[0, -1]]).all()]
    if md:
        seconds["MD (trace spans)"] = sum(md)
    if labelled:
        seconds["labelling (labeled events)"] = sum(labelled)
    if refits:
        seconds["refits (refit events)"] = sum(refits)
    if not seconds:
        return None
    wall, _ = wall_time(run, time.time() if now is None else now)
    return {"seconds": seconds, "wall": wall,
            "source": "no timings in campaign.json: MD = sum over walkers of first-to-last trace row, "
                      "labelling and refits = sum of server.log.jsonl event seconds"}


def property_rows(validation: dict | None) -> tuple[list[str], list[list[str]]]:
    """Rows of the property table: every key of validation.json except "rdf"; model, reference,
    relative error, unit, then any other fields (e.g. an error message) as a note."""
    header = ["property", "model", "reference", "rel. error", "unit", "note"]
    rows = []
    for name, entry in (validation or {}).items():
        if name == "rdf":
            continue
        if not isinstance(entry, dict):
            rows.append([name, _fmt(entry), "-", "-", "-", "not an object"])
            continue
        rel = entry.get("rel_error")
        note = "; ".join(f"{k}: {v}" for k, v in entry.items() if k not in ("model", "reference", "rel_error", "unit"))
        rows.append([name, _num(entry.get("model")), _num(entry.get("reference")),
                     f"{rel * 100:+.2f} %" if finite(rel) else _fmt(rel), str(entry.get("unit", "")), note])
    return header, rows


def _num(x) -> str:
    return f"{x:.5g}" if finite(x) else _fmt(x)
