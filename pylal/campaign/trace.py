"""Walker traces (`fix pylal ... trace FILE`: one CSV row per check step, columns TRACE_COLUMNS) and the
termination rule. volume_per_atom exists since 2026-12-02: older traces lack it, and read as NaN."""
from __future__ import annotations

import csv
import dataclasses
import math
import statistics
from pathlib import Path


@dataclasses.dataclass
class TraceSummary:
    rows: int = 0
    step: int = 0
    version: int = -1
    tau: float = 0.0
    sigma: float = 0.0
    f_max: float = 0.0
    n_flags: int = 0
    quiet_steps: int = 0  # steps run on the newest version since this walker's last flag
    waiting: float = 0.0  # seconds held at flags (on_flag wait), from the gaps after flagged rows
    volume_per_atom: float = float("nan")  # box volume per atom (A^3), median of the last VOLUME_ROWS rows


TRACE_COLUMNS = ("wall_time", "step", "version", "tau", "energy", "sigma", "f_max", "softmax", "n_flags", "flagged",
                 "volume_per_atom")  # written by pylal.lammps.walker, read here and by pylal.report.data
FLOAT_COLUMNS = ("wall_time", "tau", "energy", "sigma", "f_max", "softmax", "volume_per_atom")
VOLUME_ROWS = 20  # a walker's volume is the median of its last 20 check steps: a brief excursion is not a state


def read_trace(path) -> list[dict]:
    """All complete rows (a row being written at this moment is skipped)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    lines = text.splitlines()
    if text and not text.endswith("\n"):
        lines = lines[:-1]
    rows = []
    for row in csv.DictReader(lines):
        try:
            rows.append({k: (float(v) if k in FLOAT_COLUMNS else int(v)) for k, v in row.items()})
        except (TypeError, ValueError):
            continue
    return rows


def summarize(rows: list[dict], newest_version: int) -> TraceSummary:
    """Quiet steps: the trailing stretch of rows without a flag that all ran `newest_version`
    (HAL's termination: the final potential runs M steps without triggering)."""
    if not rows:
        return TraceSummary()
    last = rows[-1]
    start = None
    for row in reversed(rows):
        if row["flagged"] or row["version"] != newest_version:
            break
        start = row["step"]
    quiet = 0 if start is None else last["step"] - start
    waiting = sum(max(0.0, b["wall_time"] - a["wall_time"]) for a, b in zip(rows, rows[1:]) if a["flagged"])
    return TraceSummary(rows=len(rows), step=last["step"], version=last["version"], tau=last["tau"],
                        sigma=last["sigma"], f_max=last["f_max"], n_flags=last["n_flags"], quiet_steps=quiet,
                        waiting=waiting, volume_per_atom=_median_volume(rows[-VOLUME_ROWS:]))


def _median_volume(rows: list[dict]) -> float:
    volumes = [r["volume_per_atom"] for r in rows if math.isfinite(r.get("volume_per_atom", math.nan))]
    return statistics.median(volumes) if volumes else math.nan
