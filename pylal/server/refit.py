"""Refit: policy, Bayesian refit of every labelled configuration, versioned parameter files, rollback,
and the near-duplicate filter used when more is flagged than the labelling budget allows.

Versions live in RUN/versions/params_vNNNNNN.npz and are never deleted. RUN/current.json points at
the live one ({"version", "hash", "file", ...}) and RUN/current.npz is a copy of it, so a LAMMPS run
without the client can hot-swap by watching that path (`fix pylal ... watch RUN/current.npz`).
Both are replaced atomically (temporary file, fsync, rename); current.json is written last.
Version numbers only grow: a rollback to V publishes V's coefficients as a new version N+1 (with
hyper["rollback_of"] = V), so every walker, which asks for "newer than mine", picks it up.
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

import numpy as np

from pylal.files import atomic_write
from pylal.fit.bayes import fit_design
from pylal.fit.design import DesignSet, Weights
from pylal.model.basis import BasisSpec
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


class RefitPolicy:
    """Refit after `every_labels` new labels, or after `every_seconds` with at least one new label."""

    def __init__(self, every_labels: int = 1, every_seconds: float = 0.0):
        self.every_labels, self.every_seconds = every_labels, every_seconds

    def due(self, new_labels: int, seconds_since_fit: float) -> bool:
        if new_labels <= 0:
            return False
        return new_labels >= self.every_labels or (self.every_seconds > 0 and seconds_since_fit >= self.every_seconds)


def spec_from_config(fit_cfg) -> BasisSpec:
    prior = tuple(fit_cfg.prior) if fit_cfg.prior else None
    return BasisSpec(species=tuple(fit_cfg.species), r_cut=fit_cfg.r_cut, r_min=fit_cfg.r_min,
                     n_max=fit_cfg.n_max, l_max=fit_cfg.l_max, prior=prior)


def prior_from_config(fit_cfg):
    """The LAMMPS prior of `[fit] lammps_prior` (a table) or `[fit] lammps_prior_file`, or None."""
    from pylal.prior.spec import LammpsPrior, PriorError
    from pylal.server.config import ConfigError

    try:
        if getattr(fit_cfg, "lammps_prior", None):
            return LammpsPrior.from_dict(dict(fit_cfg.lammps_prior))
        if getattr(fit_cfg, "lammps_prior_file", ""):
            return LammpsPrior.load(fit_cfg.lammps_prior_file)
    except PriorError as err:
        key = "lammps_prior" if getattr(fit_cfg, "lammps_prior", None) else "lammps_prior_file"
        raise ConfigError(f"[fit] {key}: {err}") from err
    return None


def read_labelled(paths) -> list:
    """Initial training set: labelled configurations from extxyz or ASE db files."""
    from ase.io import read

    out = []
    for p in paths:
        out.extend(read(p, index=":"))
    return out


class Refitter:
    """Design rows kept in memory and extended by each new label (every configuration's basis is
    evaluated once); a refit is one Bayesian fit over all rows (pylal.fit.bayes.fit_design).
    With a LAMMPS prior ([fit] lammps_prior / lammps_prior_file) the rows target labels minus the
    prior (evaluated through LAMMPS once per configuration) and every version carries the prior."""

    def __init__(self, spec: BasisSpec, fit_cfg, store, versions: VersionStore, initial=()):
        self.spec, self.cfg, self.store, self.versions = spec, fit_cfg, store, versions
        self.weights = Weights(*fit_cfg.weights)
        self.prior = prior_from_config(fit_cfg)
        self._check_published_prior()
        self.design = DesignSet(spec, self.weights, self.prior)
        for atoms in initial:
            self.design.add(atoms)
        self.n_initial = len(initial)
        self.last_row = 0  # highest store row id already in the design

    def _check_published_prior(self):
        """The versions walkers run (initial_params, earlier runs) must have the configured prior: the
        decks' pair style is that prior, and `fix pylal` will not swap to a version with another."""
        latest = self.versions.latest()
        if latest is None:
            return
        published = Parameters.load(self.versions.path(latest)).lammps_prior
        if published != self.prior:
            from pylal.server.config import ConfigError

            have = published.to_dict() if published is not None else None
            want = self.prior.to_dict() if self.prior is not None else None
            raise ConfigError(f"[fit] lammps_prior: the published version {latest} has the LAMMPS prior {have}, "
                              f"the configuration {want}; set [fit] lammps_prior / lammps_prior_file to the "
                              f"prior of initial_params (`pylal prior show PARAMS`) or start a new run folder")

    def update_design(self) -> int:
        """Add labelled rows not yet in the design; returns how many were added."""
        new = self.store.labeled_atoms(after_id=self.last_row)
        for row_id, atoms in new:
            self.design.add(atoms)
            self.last_row = row_id
        return len(new)

    def refit(self) -> dict:
        self.update_design()
        latest = self.versions.latest() or 0
        params = fit_design(self.spec, *self.design.arrays(), self.weights, self.cfg.method, self.cfg.n_members,
                            seed=self.cfg.seed + latest + 1, version=latest + 1, prior=self.prior)
        params.hyper["n_configs"] = len(self.design)
        params.hyper["last_row"] = self.last_row
        return self.versions.publish(params, n_configs=len(self.design), last_row=self.last_row)


# ---- near-duplicates --------------------------------------------------------------------------
def descriptor(atoms, r_cut: float) -> tuple:
    """Energy-independent summary of a configuration: per species, the sorted smooth coordination
    numbers s_i = sum_j (1 - r_ij/r_cut)^2 over neighbours within r_cut. Invariant to translation,
    rotation and permutation; coarse on purpose (a near-duplicate test, not an identity)."""
    from pylal.model.neighbors import ase_pairs

    symbols = sorted(set(atoms.get_chemical_symbols()))
    pairs = ase_pairs(atoms, r_cut, tuple(symbols))
    r = np.linalg.norm(pairs.vectors, axis=1)
    s = np.bincount(pairs.centers, weights=(1 - r / r_cut) ** 2, minlength=len(atoms))
    species = np.asarray(atoms.get_chemical_symbols())
    return tuple((sym, np.sort(s[species == sym])) for sym in symbols)


def near_duplicate(a: tuple, b: tuple, tol: float) -> bool:
    """Same composition and every sorted per-atom value within tol."""
    if [s for s, _ in a] != [s for s, _ in b]:
        return False
    return all(len(x) == len(y) and (len(x) == 0 or np.max(np.abs(x - y)) <= tol) for (_, x), (_, y) in zip(a, b))


def select_batch(candidates: list, references: list, budget: int, tol: float):
    """candidates: [(row id, descriptor)] ordered by priority (largest max f_i first); references:
    descriptors already labelled or being labelled. Returns (chosen ids, dropped [(id, id_or_None)]):
    near-duplicates of a reference or of a chosen candidate are dropped; at most `budget` chosen;
    the rest stay queued for the next round."""
    chosen, dropped, kept = [], [], []
    for row_id, d in candidates:
        if len(chosen) >= budget:
            break
        if any(near_duplicate(d, r, tol) for r in references):
            dropped.append((row_id, None))
            continue
        twin = next((cid for cid, cd in kept if near_duplicate(d, cd, tol)), None)
        if twin is not None:
            dropped.append((row_id, twin))
            continue
        chosen.append(row_id)
        kept.append((row_id, d))
    return chosen, dropped
