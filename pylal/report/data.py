"""Read a campaign run folder as it is: every piece optional, every absence recorded.

`load_run(run_dir)` returns a `RunData`; `RunData.missing` lists, in words, what was not found
or could not be read (a file, a key of campaign.json, a malformed line), so the report can say
so instead of failing. Nothing in the run folder is written or locked here.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np

from pylal.campaign.trace import TRACE_COLUMNS

TIMING_KEYS = ("wall", "md", "label", "fit", "final_fit", "validation")
FINAL_KEYS = ("params", "n_labels", "n_reference_calls", "holdout_force_rmse", "holdout_energy_rmse")
VERSION_FILE = re.compile(r"params_v(\d+)\.npz$")  # as pylal.server.refit (not imported: it creates folders)


@dataclasses.dataclass
class Walker:
    name: str
    info: dict  # the campaign.json entry (temperature, pressure, ranks, deck), {} when not listed
    trace: dict | None = None  # column -> float array (rows in file order), None when no trace.csv
    tolerance: dict | None = None  # {"f_tol": x|None, "s_tol": y|None}, None when no tolerance.json

    @property
    def n_rows(self) -> int:
        return 0 if self.trace is None else len(self.trace["step"])


@dataclasses.dataclass
class RunData:
    run_dir: Path
    campaign: dict | None = None
    walkers: list = dataclasses.field(default_factory=list)  # [Walker]
    events: list = dataclasses.field(default_factory=list)  # server.log.jsonl objects, file order
    versions: dict = dataclasses.field(default_factory=dict)  # version number -> Path
    final_params: Path | None = None
    holdout: list | None = None  # [ase.Atoms] with reference results
    holdout_path: Path | None = None
    validation: dict | None = None
    store_counts: dict | None = None  # statuses of store.db rows
    missing: list = dataclasses.field(default_factory=list)

    def events_of(self, kind: str) -> list:
        return [e for e in self.events if e.get("event") == kind]

    def refit_configs(self) -> dict:
        """version -> number of configurations in its fit (`configs` of its refit event; last one wins)."""
        out = {}
        for e in self.events_of("refit"):
            if isinstance(e.get("version"), int) and isinstance(e.get("configs"), int):
                out[e["version"]] = e["configs"]
        return out


def load_run(run_dir) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    run = RunData(run_dir=run_dir)
    run.campaign = _load_campaign(run_dir / "campaign.json", run.missing)
    run.walkers = _load_walkers(run_dir, run.campaign, run.missing)
    run.events = _load_events(run_dir / "server.log.jsonl", run.missing)
    run.versions = _version_files(run_dir / "versions", run.missing)
    run.final_params = _final_params(run_dir, run.campaign, run.missing)
    run.holdout_path = run_dir / "holdout.xyz"
    run.holdout = _load_holdout(run.holdout_path, run.missing)
    run.validation = _load_json(run_dir / "validation.json", run.missing, "no property table or g(r)")
    run.store_counts = _store_counts(run_dir / "store.db", run.missing)
    return run


def _load_json(path: Path, missing: list, consequence: str):
    if not path.is_file():
        missing.append(f"{path.name}: not found ({consequence})")
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        missing.append(f"{path.name}: unreadable ({e}; {consequence})")
        return None
    if not isinstance(obj, dict):
        missing.append(f"{path.name}: expected a JSON object, got {type(obj).__name__} ({consequence})")
        return None
    return obj


def _load_campaign(path: Path, missing: list) -> dict | None:
    campaign = _load_json(path, missing, "summary from the other files only")
    if campaign is None:
        return None
    for key in ("config", "started", "finished", "status", "walkers", "termination", "timings", "final"):
        if key not in campaign:
            missing.append(f"campaign.json: no '{key}'")
    for group, keys in (("timings", TIMING_KEYS), ("final", FINAL_KEYS)):
        block = campaign.get(group)
        if isinstance(block, dict):
            absent = [k for k in keys if block.get(k) is None]
            if absent:
                missing.append(f"campaign.json: {group} without {', '.join(absent)}")
        elif block is not None:
            missing.append(f"campaign.json: '{group}' is not an object")
            campaign[group] = {}
    return campaign


def _load_walkers(run_dir: Path, campaign: dict | None, missing: list) -> list:
    listed = {}
    for w in (campaign or {}).get("walkers") or []:
        if isinstance(w, dict) and w.get("name"):
            listed[str(w["name"])] = w
    folder = run_dir / "walkers"
    found = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    names = list(listed) + [n for n in found if n not in listed]
    if not names:
        missing.append("walkers: none in campaign.json and no walkers/ folder (no uncertainty or tau traces)")
    walkers = []
    for name in names:
        w = Walker(name=name, info=listed.get(name, {}))
        w.trace = read_trace(folder / name / "trace.csv", missing)
        tol_path = folder / name / "tolerance.json"
        if tol_path.is_file():
            w.tolerance = _load_json(tol_path, missing, f"walker {name}: no tolerance line")
        else:
            missing.append(f"walkers/{name}/tolerance.json: not found (no tolerance line)")
        walkers.append(w)
    return walkers


def read_trace(path: Path, missing: list) -> dict | None:
    """trace.csv -> {column: float array}. A row with the wrong number of fields or a value that is
    not a number (e.g. the line the walker is writing right now) is skipped and counted."""
    name = f"{path.parent.parent.name}/{path.parent.name}/{path.name}"
    if not path.is_file():
        missing.append(f"{name}: not found (no trace for this walker)")
        return None
    lines = path.read_text().splitlines()
    if not lines:
        missing.append(f"{name}: empty")
        return None
    header = [h.strip() for h in lines[0].split(",")]
    absent = [c for c in ("step", "f_max") if c not in header]
    if absent:
        missing.append(f"{name}: header {lines[0]!r} lacks {', '.join(absent)} (trace not used)")
        return None
    rows, bad = [], 0
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) != len(header):
            bad += 1
            continue
        try:
            rows.append([float(x) for x in fields])
        except ValueError:
            bad += 1
    if bad:
        missing.append(f"{name}: {bad} malformed row(s) skipped")
    table = np.array(rows, dtype=float).reshape(-1, len(header))
    out = {h: table[:, i] for i, h in enumerate(header)}
    for c in TRACE_COLUMNS:
        if c not in out:
            out[c] = np.full(len(table), np.nan)
    return out


def _load_events(path: Path, missing: list) -> list:
    if not path.is_file():
        missing.append("server.log.jsonl: not found (no refit/label events)")
        return []
    events, bad = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(obj, dict):
            events.append(obj)
        else:
            bad += 1
    if bad:
        missing.append(f"server.log.jsonl: {bad} malformed line(s) skipped")
    return events


def _version_files(folder: Path, missing: list) -> dict:
    files = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = VERSION_FILE.match(p.name)
            if m:
                files[int(m.group(1))] = p
    if not files:
        missing.append("versions/: no parameter versions (no learning curve)")
    return dict(sorted(files.items()))


def _final_params(run_dir: Path, campaign: dict | None, missing: list) -> Path | None:
    rel = ((campaign or {}).get("final") or {}).get("params") or "final/params.npz"
    path = run_dir / rel
    if path.is_file():
        return path
    missing.append(f"{rel}: not found (parity plots use the newest version)")
    return None


def _load_holdout(path: Path, missing: list) -> list | None:
    if not path.is_file():
        missing.append("holdout.xyz: not found (no learning curve or parity plots)")
        return None
    from ase.io import read

    try:
        frames = read(path, index=":")
    except Exception as e:  # noqa: BLE001  (ASE raises many kinds on a damaged file)
        missing.append(f"holdout.xyz: unreadable ({type(e).__name__}: {e})")
        return None
    labelled = [a for a in frames if a.calc is not None and "forces" in a.calc.results]
    if len(labelled) < len(frames):
        missing.append(f"holdout.xyz: {len(frames) - len(labelled)} of {len(frames)} configurations have no "
                       f"reference forces (left out)")
    if not labelled:
        missing.append("holdout.xyz: no labelled configurations (no learning curve or parity plots)")
        return None
    return labelled


def _store_counts(path: Path, missing: list) -> dict | None:
    if not path.is_file():
        missing.append("store.db: not found (label counts from campaign.json or the server log)")
        return None
    try:
        import ase.db

        from pylal.server.store import STATUSES

        db = ase.db.connect(str(path), type="db")
        counts = {s: db.count(status=s) for s in STATUSES}
    except Exception as e:  # noqa: BLE001  (locked or damaged SQLite file)
        missing.append(f"store.db: unreadable ({type(e).__name__}: {e})")
        return None
    counts["flagged"] = sum(counts.values())
    return counts


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
