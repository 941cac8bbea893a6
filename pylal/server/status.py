"""`pylal status` and `pylal rollback`: read the run folder directly (they work with the server down)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pylal.server.config import ServerConfig
from pylal.server.versions import VersionStore
from pylal.server.store import Store


def run_dir_of(target) -> Path:
    """A run folder, or a server config (.toml) naming one."""
    target = Path(target)
    if target.is_file() and target.suffix == ".toml":
        return ServerConfig.load(target).run_dir
    return target


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False


def format_running(running: dict, now: float | None = None) -> str:
    """"refit v3 running: 40 configurations, D 650, 35 s so far" (stats["refit_running"])."""
    now = time.time() if now is None else now
    return (f"refit v{running['version']} running: {running['configs']} configurations, D {running['size']}, "
            f"{now - running['started']:.0f} s so far")


def format_rejection(r: dict) -> str:
    """A rejected refit (stats["last_rejection"]) in words: why, the worst configurations, what to change."""
    from pylal.fit.checks import describe_worst

    version = f"v{r['version']} " if r.get("version") is not None else ""
    keep = r.get("current")
    text = (f"refit {version}of {r['configs']} configurations REJECTED, not published (walkers keep "
            f"{'version ' + str(keep) if keep is not None else 'no version: there is none yet'}): "
            + "; ".join(r["reasons"]))
    if r.get("worst"):
        text += f". Worst configurations (training force error of the rejected fit): {describe_worst(r['worst'])}"
    if r.get("advice"):
        text += f". To change it: {r['advice']}"
    return text + f". Kept in {r['file']}"


def collect_status(run_dir) -> dict:
    run_dir = Path(run_dir)
    if not (run_dir / "store.db").exists():
        raise FileNotFoundError(f"{run_dir} is not a pylal server run folder (no store.db)")
    store = Store(run_dir / "store.db")
    versions = VersionStore(run_dir)
    saved = {}
    if (run_dir / "status.json").exists():
        saved = json.loads((run_dir / "status.json").read_text())
    server = json.loads((run_dir / "server.json").read_text()) if (run_dir / "server.json").exists() else {}
    return dict(run_dir=str(run_dir), server=dict(server, alive=_alive(server.get("pid"))),
                counts=store.counts(), versions=versions.versions(), current=versions.current(),
                hold=(run_dir / "HOLD").exists(), walkers=saved.get("walkers", {}),
                stats=saved.get("stats", {}), recent_errors=store.recent_errors(5),
                recent_filtered=[dict(id=r.id, walker=r.get("walker"), step=r.get("step"), error=r.get("error"))
                                 for r in store.rows("filtered", order="-id", limit=5)],
                status_written=saved.get("time"))


def format_status(s: dict) -> str:
    now = time.time()
    c = s["counts"]
    srv = s["server"]
    lines = [f"run folder: {s['run_dir']}",
             f"server: {'running' if srv.get('alive') else 'not running'}"
             + (f" (pid {srv.get('pid')}, {srv.get('address')})" if srv else ""),
             f"configurations: {c['flagged']} flagged = {c['queued']} queued + {c['labeling']} labeling + "
             f"{c['labeled']} labeled + {c['failed']} failed + {c['dropped']} dropped"
             + (f" + {c['filtered']} filtered" if c.get("filtered") else "")]
    cur = s["current"] or {}
    vs = s["versions"]
    lines.append(f"versions: {len(vs)} ({', '.join(map(str, vs[-8:]))}{' ...' if len(vs) > 8 else ''}); current "
                 f"{cur.get('version', '-')}" + (f" ({cur['hash'][:12]})" if cur.get("hash") else "")
                 + (f", rollback of {cur['rollback_of']}" if cur.get("rollback_of") is not None else "")
                 + ("; refits on HOLD" if s["hold"] else ""))
    newest = s["stats"].get("newest") or {}
    if newest.get("calibration_scale") is not None:
        line = f"committee of version {newest['version']}: spread scaled by {newest['calibration_scale']:.2f} (cross-validation)"
        h = newest.get("holdout") or {}
        if h.get("force_rms_z") is not None:
            line += (f"; held-out force RMSE {h['force_rmse']:.4f} eV/A, rms z {h['force_rms_z']:.2f}, "
                     f"95% interval holds {100 * h['force_coverage95']:.0f}%")
        lines.append(line)
    running = s["stats"].get("refit_running")
    if running and srv.get("alive"):
        lines.append(format_running(running, now))
    rejection = s["stats"].get("last_rejection")
    if rejection:
        lines.append(f"REJECTED refits: {s['stats'].get('rejected_refits', 0)} ({s['stats'].get('rejected_in_a_row', 0)} "
                     f"in a row); last on {rejection['configs']} configurations ({rejection['file']}): "
                     + "; ".join(rejection["reasons"]))
        if rejection.get("worst"):
            from pylal.fit.checks import describe_worst

            lines.append(f"  worst configurations: {describe_worst(rejection['worst'])}")
        if rejection.get("advice"):
            lines.append(f"  to change it: {rejection['advice']}")
        lines.append(f"  likely cause: {rejection['likely_cause']}")
    filtered = s["stats"].get("filtered") or []
    initial_filtered = [f for f in filtered if not str(f["name"]).startswith("row ")]
    if s.get("recent_filtered") or initial_filtered:
        lines.append(f"filtered labels (never fitted): {s['stats'].get('filtered_labels', len(filtered))} this run")
        for f in initial_filtered[-5:]:
            lines.append(f"  {f['name']}: {f['problem']}")
        for e in s.get("recent_filtered", []):
            lines.append(f"  row {e['id']} (walker {e['walker']}, step {e['step']}): {str(e['error'])[:200]}")
    if s["walkers"]:
        lines.append("walkers (last contact):")
        for name, w in sorted(s["walkers"].items()):
            lines.append(f"  {name}: {now - w['last_contact']:.0f} s ago, {w.get('flags', 0)} flags, "
                         f"has version {w.get('version', '-')}")
    if s["recent_errors"]:
        lines.append("recent errors:")
        for e in s["recent_errors"]:
            lines.append(f"  row {e['id']} (walker {e['walker']}, step {e['step']}): {str(e['error'])[:200]}")
    return "\n".join(lines)


def rollback(run_dir, version: int, hold: bool = False) -> dict:
    """Publish version `version` again as the newest version; optionally hold refits (RUN/HOLD)."""
    pointer = VersionStore(run_dir).rollback(version)
    if hold:
        (Path(run_dir) / "HOLD").write_text(f"rollback to {version} at {time.ctime()}\n")
    return pointer
