"""Versioned parameter files of a run folder.

Versions live in RUN/versions/params_vNNNNNN.npz and are never deleted. RUN/current.json points at
the live one ({"version", "hash", "file", ...}) and RUN/current.npz is a copy of it, so a LAMMPS run
without the client can hot-swap by watching that path (`fix pylal ... watch RUN/current.npz`).
Both are replaced atomically (temporary file, fsync, rename); current.json is written last.
Version numbers only grow: a rollback to V publishes V's coefficients as a new version N+1 (with
hyper["rollback_of"] = V), so every walker, which asks for "newer than mine", picks it up.
A fit that failed its sanity checks (pylal.fit.checks) is kept as RUN/versions/rejected_vNNNNNN.npz
for inspection and never becomes current.
Writers (the server, `pylal rollback`) serialise through an flock on RUN/versions/.lock.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

from pylal.files import atomic_write
from pylal.model.params import Parameters

_VERSION_FILE = re.compile(r"params_v(\d+)\.npz$")


class VersionStore:
    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "versions"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pointer = self.run_dir / "current.json"
        self.current_npz = self.run_dir / "current.npz"
        self._cache = (None, None)  # (stat stamp, pointer dict)

    def path(self, version: int) -> Path:
        return self.dir / f"params_v{version:06d}.npz"

    def versions(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _VERSION_FILE.match(p.name)))

    def latest(self) -> int | None:
        v = self.versions()
        return v[-1] if v else None

    @contextmanager
    def _locked(self):
        with open(self.dir / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def publish(self, params: Parameters, keep_version: bool = False, **info) -> dict:
        """Write params as the next version (or as its own version number if keep_version and that
        number is free and newest) and make it current. Returns the pointer dict."""
        with self._locked():
            latest = self.latest()
            if not (keep_version and (latest is None or params.version > latest)):
                params.version = latest + 1 if latest is not None else max(params.version, 1)
            path = self.path(params.version)
            digest = params.save(path)
            pointer = dict(version=params.version, hash=digest, file=str(path.relative_to(self.run_dir)),
                           published_at=time.time(), **info)
            atomic_write(self.current_npz, path.read_bytes())
            atomic_write(self.pointer, json.dumps(pointer, indent=1).encode())
        return pointer

    def current(self) -> dict | None:
        """The pointer (cached until current.json changes on disk)."""
        try:
            st = os.stat(self.pointer)
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._cache[0] != stamp:
            self._cache = (stamp, json.loads(self.pointer.read_text()))
        return self._cache[1]

    def current_bytes(self) -> tuple[dict, bytes] | None:
        pointer = self.current()
        if pointer is None:
            return None
        return pointer, (self.run_dir / pointer["file"]).read_bytes()

    def rollback(self, version: int) -> dict:
        """Publish the coefficients of `version` again, as a new (higher) version."""
        path = self.path(version)
        if not path.is_file():
            raise FileNotFoundError(f"no parameter version {version} in {self.dir} "
                                    f"(have {self.versions()})")
        params = Parameters.load(path)
        params.hyper = {**params.hyper, "rollback_of": version}
        return self.publish(params, rollback_of=version)

    def reject(self, params: Parameters, problems: list) -> Path:
        """Keep a fit that must not be published, with its reasons in its header."""
        params.hyper = {**params.hyper, "rejected": problems}
        path = self.dir / f"rejected_v{(self.latest() or 0) + 1:06d}.npz"
        params.save(path)
        return path
