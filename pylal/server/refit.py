"""Refit: policy, and the Bayesian refit of every labelled configuration into a checked version.

Each refit is one call of the project's fit (pylal.fit.committee.fit_design: smoothness-prior BRR,
calibrated committee); a version whose sanity checks fail (pylal.fit.checks) is kept aside as
rejected and not published. With a held-out set ([fit] holdout_file) every version's held-out
errors and calibration (rms z) are computed (pylal.fit.holdout) and recorded with it.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from pylal.fit.checks import (MAX_CV_PRIOR_RATIO, MIN_CONTACT, FitLimits, advice, fit_problems, label_problem,
                               prior_force_rmse, worst_configurations)
from pylal.fit.committee import FitSettings, fit_design
from pylal.fit.design import DesignSet, Weights
from pylal.fit.growth import RETRY_GROWTH, RefitCost, cv_force_rmse, growth_accepted, growth_decision
from pylal.model.basis import BasisSpec
from pylal.model.params import Parameters
from pylal.model.registry import basis_grows, spec_from_config  # noqa: F401 (spec_from_config: the server's)
from pylal.server.versions import VersionStore


class RefitPolicy:
    """Refit after `every_labels` new labels, or after `every_seconds` with at least one new label."""

    def __init__(self, every_labels: int = 1, every_seconds: float = 0.0):
        self.every_labels, self.every_seconds = every_labels, every_seconds

    def due(self, new_labels: int, seconds_since_fit: float) -> bool:
        if new_labels <= 0:
            return False
        return new_labels >= self.every_labels or (self.every_seconds > 0 and seconds_since_fit >= self.every_seconds)


def settings_from_config(fit_cfg) -> FitSettings:
    return FitSettings(method=fit_cfg.method, n_members=fit_cfg.n_members, smoothness=tuple(fit_cfg.smoothness),
                       calibrate=fit_cfg.calibrate, energy_noise=fit_cfg.energy_noise)


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


def read_labelled(paths, names: list | None = None) -> list:
    """Initial training set: labelled configurations from extxyz or ASE db files. names: a list that
    receives "FILE:INDEX" of each configuration (how reports name it)."""
    from ase.io import read

    out = []
    for p in paths:
        frames = read(p, index=":")
        if names is not None:
            names.extend(f"{p}:{i}" for i in range(len(frames)))
        out.extend(frames)
    return out


class Refitter:
    """Design rows kept in memory and extended by each new label (every configuration's basis is
    evaluated once); a refit is one Bayesian fit over all rows (pylal.fit.committee.fit_design).
    With a LAMMPS prior ([fit] lammps_prior / lammps_prior_file) the rows target labels minus the
    prior (evaluated through LAMMPS once per configuration) and every version carries the prior.

    Every configuration enters the design through `admit`, which applies the label filter
    (pylal.fit.checks.label_problem: non-finite, forces above [fit] max_label_force, a contact closer
    than [fit] min_contact x the covalent radii sum): a filtered initial configuration is left out, a
    filtered store row gets status 'filtered' with its reason; both are listed in `filtered` and told to
    `report(name, problem, row_id)` (the server logs and prints them)."""

    def __init__(self, spec: BasisSpec, fit_cfg, store, versions: VersionStore, initial=(), report=None,
                 initial_names=None):
        self.spec, self.cfg, self.store, self.versions = spec, fit_cfg, store, versions
        self.weights = Weights(*fit_cfg.weights)
        self.prior = prior_from_config(fit_cfg)
        self._check_published_prior()
        if basis_grows(fit_cfg):
            self.spec = spec = self._grown_spec(spec)
        self.design = DesignSet(spec, self.weights, self.prior)
        self.settings = settings_from_config(fit_cfg)
        self.limits = FitLimits(fit_cfg.max_cv_energy_rmse, fit_cfg.max_cv_force_rmse,
                                getattr(fit_cfg, "max_cv_prior_ratio", MAX_CV_PRIOR_RATIO))
        self.report = report
        self.cost = RefitCost()  # measured seconds of rows and fits (pylal.fit.growth)
        self.names: list[str] = []  # how to find each configuration of the design (row id, file:index)
        self.filtered: list[dict] = []  # labels kept out: name, row (or None), problem
        self._filtered_rows: set[int] = set()
        self.holdout_frames = read_labelled([fit_cfg.holdout_file]) if getattr(fit_cfg, "holdout_file", "") else []
        self.holdout = self._holdout(spec)
        self.initial: list = []  # the admitted initial configurations (a grown basis evaluates them again)
        for k, atoms in enumerate(initial):
            if self.admit(atoms, initial_names[k] if initial_names is not None else f"initial configuration {k}"):
                self.initial.append(atoms)
        self.n_initial = len(self.design)
        self.rows: set[int] = set()  # store rows in the design: labels can finish out of row order
        # a basis of unset size grows with the data within [fit] refit_budget (pylal.fit.growth)
        self.grows = basis_grows(fit_cfg)
        self.budget = float(getattr(fit_cfg, "refit_budget", 60.0))
        self.growth_log: list[dict] = []  # every growth decision that tried a larger basis
        self._retry_rows = 0.0

    def _grown_spec(self, spec):
        """A restarted server goes on with the basis its newest version grew to (same kind, species, cutoff)."""
        latest = self.versions.latest()
        if latest is None:
            return spec
        published = Parameters.load(self.versions.path(latest)).spec
        same = (published.kind == spec.kind and published.species == spec.species and published.r_cut == spec.r_cut)
        return published if same and published.size >= spec.size else spec

    def _holdout(self, spec):
        from pylal.fit.holdout import HeldOut

        return HeldOut(spec, self.holdout_frames, self.prior) if self.holdout_frames else None

    @property
    def last_row(self) -> int:
        """Highest store row id in the design (recorded in each version)."""
        return max(self.rows, default=0)

    def new_labels(self) -> int:
        """Labelled store rows not yet in the design."""
        return self.store.counts()["labeled"] - len(self.rows)

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

    def label_problem(self, atoms) -> str | None:
        """The label filter with this configuration's thresholds (None: the label may be fitted)."""
        return label_problem(atoms, self.cfg.max_label_force, getattr(self.cfg, "min_contact", MIN_CONTACT))

    def filter_label(self, name: str, problem: str, row_id: int | None = None):
        """Keep a label out of fits: status 'filtered' with its reason on a store row; recorded and reported."""
        if row_id is not None:
            if row_id in self._filtered_rows:  # filtered already (the scheduler and a refit both judged it)
                return
            self._filtered_rows.add(row_id)
            self.store.set_status(row_id, "filtered", error=problem)
        self.filtered.append(dict(name=name, row=row_id, problem=problem))
        if self.report is not None:
            self.report(name, problem, row_id)

    def admit(self, atoms, name: str, row_id: int | None = None) -> bool:
        """Add one labelled configuration to the design unless the label filter keeps it out."""
        problem = self.label_problem(atoms)
        if problem:
            self.filter_label(name, problem, row_id)
            return False
        t0 = time.perf_counter()
        self.design.add(atoms)
        if len(self.design) > 1:  # the first configuration of a basis compiles its step
            self.cost.record_rows(self.spec.size, len(atoms), time.perf_counter() - t0)
        self.names.append(name)
        if row_id is not None:
            self.rows.add(row_id)
        return True

    def update_design(self) -> int:
        """Add labelled rows not yet in the design (filtered ones get status 'filtered'); returns how
        many were added."""
        missing = [i for i in self.store.labeled_ids() if i not in self.rows]
        added = 0
        for row_id, atoms in self.store.labeled_atoms(ids=missing):
            added += self.admit(atoms, f"row {row_id}", row_id)
        return added

    def fit_unpublished(self, seed: int | None = None, version: int | None = None, progress=None, **changes):
        """(params, problems, held-out errors) of a fit of every label with settings changed by `changes`."""
        self.update_design()
        latest = self.versions.latest() or 0
        settings = dataclasses.replace(self.settings, **changes)
        params = fit_design(self.design, settings, seed=self.cfg.seed + latest + 1 if seed is None else seed,
                            version=latest + 1 if version is None else version, progress=progress)
        errors = self.holdout.errors(params) if self.holdout is not None else {}
        return params, fit_problems(params, self.limits, prior_force_rmse(self.design)), errors

    def worst(self, params, n: int = 3) -> list[dict]:
        """The configurations of the design with the largest force errors of `params` (names, eV/A)."""
        return worst_configurations(self.design, params, self.names, n)

    def refit(self) -> dict:
        """Fit, check, publish. Returns the pointer dict, or {"rejected": [reasons], ...} when the
        fit failed its checks (then nothing is published)."""
        params, problems, errors = self.fit_unpublished()
        params.hyper["last_row"] = self.last_row
        info = dict(n_configs=len(self.design), last_row=self.last_row, calibration_scale=params.hyper[
            "calibration"].get("scale"), fit_seconds=params.hyper["seconds"])
        if errors:
            info["holdout"] = params.hyper["holdout"] = errors
        self.cost.record(self.spec.size, params.hyper["seconds"])
        if problems:
            path = self.versions.reject(params, problems)
            worst = self.worst(params)
            return dict(rejected=problems, file=str(path), version=params.version, worst=worst, prior_force_rmse=prior_force_rmse(
                self.design), advice=advice(problems, worst, self.limits, self.cfg.max_label_force), **info)
        if "shrink" in params.hyper:
            info["shrink"] = params.hyper["shrink"]
        if params.hyper["seconds"] > self.budget:
            info["over_budget"] = (f"refit v{params.version} took {params.hyper['seconds']:.0f} s > [fit] refit_budget "
                                   f"{self.budget:g} s ({self.spec.size_label()}); a smaller basis (n_max, l_max, "
                                   f"max_degree, chem_channels) refits faster")
        pointer = self.versions.publish(params, **info)
        return self.grow(params, pointer) if self.grows else pointer

    # ---- a basis that grows with the data (pylal.fit.growth) ----------------------------------
    def grow(self, current: Parameters, pointer: dict) -> dict:
        """After a published fit: try the next ladder step when the data support it within the budget,
        publish it (the next version) when its cross-validation force error is lower. Returns the pointer
        of the newest published version, with a `growth` record when a larger basis was tried. The held-out
        set is evaluated in the larger basis only when the trial is accepted (it costs as much as the rows)."""
        n_force = int(sum(np.count_nonzero(kinds == "F") for _, _, kinds in self.design.blocks))
        decision = growth_decision(self.spec, current, n_force, self.cost, self.budget, self._retry_rows)
        if decision.spec is None:
            return pointer
        t0 = time.perf_counter()
        design = DesignSet(decision.spec, self.weights, self.prior)
        configurations = self.initial + [a for _, a in self.store.labeled_atoms(ids=sorted(self.rows))]
        for atoms in configurations:
            design.add(atoms)
        t_rows = time.perf_counter() - t0
        self.cost.record_rows(decision.spec.size, sum(len(a) for a in configurations), t_rows)
        trial = fit_design(design, self.settings, seed=self.cfg.seed + current.version + 1, version=current.version + 1)
        self.cost.record(decision.spec.size, trial.hyper["seconds"])
        record = dict(version=current.version, tried=decision.spec.size_label(), reason=decision.reason,
                      cv_force_rmse=[cv_force_rmse(current), cv_force_rmse(trial)],
                      seconds=round(time.perf_counter() - t0, 3), rows_seconds=round(t_rows, 3))
        problems = fit_problems(trial, self.limits, prior_force_rmse(design))
        record["accepted"] = not problems and growth_accepted(current, trial)
        self.growth_log.append(record)
        if not record["accepted"]:
            self._retry_rows = RETRY_GROWTH * n_force
            return dict(pointer, growth=record)
        holdout = self._holdout(decision.spec)
        if holdout is not None:
            record["holdout_force_rmse"] = [self.holdout.errors(current)["force_rmse"],
                                            holdout.errors(trial)["force_rmse"]]
        self.spec, self.design, self.holdout = decision.spec, design, holdout
        trial.hyper["last_row"] = self.last_row
        trial.hyper["growth"] = record
        info = dict(n_configs=len(design), last_row=self.last_row, calibration_scale=trial.hyper["calibration"].get(
            "scale"), fit_seconds=trial.hyper["seconds"], basis=decision.spec.size_label())
        if holdout is not None:
            info["holdout"] = trial.hyper["holdout"] = holdout.errors(trial)
        return dict(self.versions.publish(trial, **info), growth=record)
