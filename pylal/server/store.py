"""The store: an ASE database (SQLite) with every flagged configuration and its status.

Statuses (key `status`):
  queued    acknowledged, waiting for the reference
  labeling  handed to the executor (back to queued when the server restarts: the work is redone)
  labeled   reference results stored on the row (energy, forces, stress: `row.toatoms()` has them)
  failed    the reference failed on every attempt; `error` holds the last error text
  dropped   near-duplicate of another row, not labelled (only when a labelling budget is set)
Key-value pairs: key (content hash, unique), walker, run_id, step, n_ranks, sigma, f_max, softmax,
tau, params_version (at flag time), attempts, label_time, flagged_at, labeled_at, error. Other
provenance (a carved cell's parent_step, centre_id, core indices, ...) is in the row's data.

Durability: ASE writes each row in its own SQLite transaction and SQLite's default
(journal_mode=DELETE, synchronous=FULL) fsyncs on commit, so a row exists on disk when `add_flag`
returns; the server acknowledges only then. A write interrupted by SIGKILL leaves a hot journal that
SQLite rolls back at the next open. Deduplication: the content key is a hash of numbers,
positions, cell and pbc, so a resent flag (lost ack, spool replay) is recognised, not stored twice.
"""
from __future__ import annotations

import hashlib
import threading
import time

import ase.db
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

from pylal.fit.design import mask_forces

STATUSES = ("queued", "labeling", "labeled", "failed", "dropped", "filtered")  # filtered: labelled, kept out of fits
PROV_KEYS = ("run_id", "walker", "n_ranks", "step", "sigma", "f_max", "softmax", "tau", "params_version",
             "params_hash", "seed")


def content_key(atoms) -> str:
    h = hashlib.sha256()
    for arr in (np.asarray(atoms.numbers, "<i4"), np.asarray(atoms.positions, "<f8"),
                np.asarray(atoms.cell.array, "<f8"), np.asarray(atoms.pbc, "u1")):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:32]


def _with_mask(row):
    atoms = row.toatoms()
    core = (row.data.get("provenance") or {}).get("core")
    return atoms if core is None else mask_forces(atoms, np.asarray(core, dtype=int))


class Store:
    """Thread-safe wrapper (one lock; SQLite has one writer anyway) around ase.db.connect."""

    def __init__(self, path):
        self.path = str(path)
        # no ASE lock file: ASE makes `store.db.lock` with O_EXCL and waits for it forever, so a server
        # killed (SIGKILL) inside a write left a restarted server hanging at its first write. SQLite
        # locks across processes itself (and frees a dead process's lock); self.lock serialises threads.
        self.db = ase.db.connect(self.path, type="db", append=True, use_lock_file=False)
        self.lock = threading.RLock()

    # ---- writes -----------------------------------------------------------------------------
    def add_flag(self, atoms, prov: dict) -> tuple[int, str, bool]:
        """Insert a queued configuration; returns (row id, key, new). Durable when it returns."""
        key = content_key(atoms)
        with self.lock:
            for row in self.db.select(key=key, limit=1):
                return row.id, key, False
            kvp = {k: prov[k] for k in PROV_KEYS if k in prov and prov[k] is not None}
            kvp.update(key=key, status="queued", attempts=0, flagged_at=time.time())
            extra = {k: v for k, v in prov.items() if k not in PROV_KEYS}
            row_id = self.db.write(atoms, key_value_pairs=kvp, data={"provenance": extra} if extra else {})
            return row_id, key, True

    def set_status(self, row_id: int, status: str, **kvp):
        assert status in STATUSES
        with self.lock:
            self.db.update(row_id, status=status, **kvp)

    def mark_labeled(self, row_id: int, results: dict, wall_time: float, attempts: int):
        with self.lock:
            atoms = self.db.get_atoms(id=row_id)
            atoms.calc = SinglePointCalculator(atoms, **{k: np.asarray(v) if k != "energy" else float(v)
                                                         for k, v in results.items()})
            self.db.update(row_id, atoms=atoms, delete_keys=["error"], status="labeled", label_time=wall_time,
                           attempts=attempts, labeled_at=time.time())

    def mark_failed(self, row_id: int, error: str, attempts: int):
        with self.lock:
            self.db.update(row_id, status="failed", error=error[:2000], attempts=attempts, labeled_at=time.time())

    def requeue_in_flight(self) -> int:
        """After a restart: every `labeling` row goes back to `queued` (its work died with the server)."""
        with self.lock:
            ids = [row.id for row in self.db.select(status="labeling")]
            with self.db:  # one transaction
                for row_id in ids:
                    self.db.update(row_id, status="queued")
            return len(ids)

    # ---- reads ------------------------------------------------------------------------------
    def counts(self) -> dict:
        with self.lock:
            out = {s: self.db.count(status=s) for s in STATUSES}
            out["flagged"] = sum(out.values())
            return out

    def rows(self, status: str | None = None, order: str | None = None, limit: int | None = None):
        with self.lock:
            kwargs = {} if status is None else {"status": status}
            return list(self.db.select(sort=order, limit=limit, **kwargs))

    def labeled_atoms(self, ids=None):
        """(row id, Atoms with the reference results) of all labelled rows (or of the rows `ids`), in id
        order. A carved cell (provenance `core`) comes with its force mask (pylal.fit.design.mask_forces)."""
        with self.lock:
            if ids is not None:
                return [(i, _with_mask(self.db.get(id=i))) for i in sorted(ids)]
            return [(row.id, _with_mask(row)) for row in self.db.select(status="labeled", sort="id")]

    def labeled_ids(self) -> list[int]:
        with self.lock:
            return [row.id for row in self.db.select(status="labeled", columns=["id"])]

    def recent_errors(self, n: int = 5) -> list[dict]:
        with self.lock:
            rows = list(self.db.select(status="failed", sort="-labeled_at", limit=n))
        return [dict(id=r.id, walker=r.get("walker"), step=r.get("step"), error=r.get("error")) for r in rows]

    def flag_origin(self, row_id: int) -> tuple[str | None, str | None]:
        """(walker, flag id) a row came from."""
        with self.lock:
            row = self.db.get(id=row_id)
        return row.get("walker"), (row.data.get("provenance") or {}).get("flag_id")

    def get_atoms(self, row_id: int):
        with self.lock:
            return self.db.get_atoms(id=row_id)
