"""Server configuration: a TOML file (read with tomllib), every key optional, defaults below.

Relative paths are taken relative to the config file's folder (run_dir) or to run_dir (the rest).
docs/server.md lists the keys; `ServerConfig.load(path)` is the only reader.
"""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path


class ConfigError(ValueError):
    """A configuration key is unknown or has the wrong type/value (the message names it)."""


@dataclasses.dataclass
class ReferenceConfig:
    calculator: str = "lammps"  # make_calculator name: lammps, emt, tblite, cp2k or "module:factory"
    options: dict = dataclasses.field(default_factory=dict)
    properties: list = dataclasses.field(default_factory=lambda: ["energy", "forces", "stress"])
    # most atoms in one label (0: no limit); a bigger uncarved flag is refused. A campaign passes it to
    # its walkers' `fix pylal label_max_atoms`, which carves bigger cells (docs/carving.md)
    label_max_atoms: int = 0


@dataclasses.dataclass
class ExecutorConfig:
    kind: str = "local"  # "local" (worker processes) or "dask" (distributed.Client)
    workers: int = 1  # concurrency of the local pool / LocalCluster size when address is empty
    address: str = ""  # dask scheduler address ("tcp://host:8786"); empty: start a LocalCluster
    timeout: float = 3600.0  # seconds per label before it counts as hung
    retries: int = 1  # extra attempts after a failure (exception, non-finite result, timeout)
    pythonpath: list = dataclasses.field(default_factory=list)  # added to sys.path in local workers


@dataclasses.dataclass
class FitConfig:
    species: list = dataclasses.field(default_factory=lambda: ["Si"])
    r_cut: float = 3.8
    basis: str = "power"  # "power": pylal's basis (r_min, n_max, l_max); "ace": ace-jax's ACE (order, max_degree, wL)
    r_min: float = 0.0  # unset: 0.65 x the shortest distance of the campaign's initial structure (pylal.model.basis.default_r_min)
    # basis size: unset (0 / -1 / 0) starts on the first step of a ladder and grows with the data within
    # refit_budget (pylal.fit.growth: power (4, 3) -> (6, 3) -> (6, 4) -> (8, 4); ACE degree 10 -> 18);
    # a value fixes it
    n_max: int = 0
    l_max: int = -1
    order: int = 2  # ACE correlation order (body order - 1)
    max_degree: int = 0  # ACE total-degree bound
    # compressed chemical channels of the power basis's densities (pylal.model.basis): D grows linearly
    # with the number of species; 0: one channel per species (D grows like S^3)
    chem_channels: int = 2
    grow: bool = True  # false: an unset basis size stays on the ladder's first step
    refit_budget: float = 60.0  # seconds a refit may take; a basis grows only within it, status says when exceeded
    wL: float = 1.5  # ACE weight of l in the total degree
    radial: str = "poly"  # ACE radials: "poly", or "sbessel" (ML-PACE's own: exports to released pair_style pace)
    # ZBL prior: "covalent" (a switch-off window per species pair, pylal.model.zbl.switch_radii), or
    # [r_on, r_off] in Angstrom for every pair; [] disables it
    prior: list | str | None = "covalent"
    # physics prior as a LAMMPS pair style (docs/prior.md): a table {style, cutoff, coeffs, ...} or a
    # JSON file (`pylal prior fit-morse`); labels minus prior are fitted, every version carries it
    lammps_prior: dict = dataclasses.field(default_factory=dict)
    lammps_prior_file: str = ""
    initial_data: list = dataclasses.field(default_factory=list)  # labelled extxyz / ASE db files
    initial_params: str = ""  # parameter file walkers start from (published as the first version)
    n_members: int = 32
    method: str = "brr"
    smoothness: list = dataclasses.field(default_factory=lambda: [0.0, 1.0, 2.0, 3.0, 4.0])  # prior exponents p
    calibrate: str = "cv"  # committee spread scaled to the cross-validation errors ("none": posterior samples)
    energy_noise: str = "cv"  # energy rows re-weighted by their cross-validation error ("weights": w_E only)
    max_cv_energy_rmse: float = 1.0  # eV/atom: a fit with larger cross-validation errors is not published
    max_cv_force_rmse: float = 5.0  # eV/A
    max_label_force: float = 50.0  # eV/A: a label with larger forces (a blow-up) is stored as 'filtered', never fitted
    holdout_file: str = ""  # labelled configurations never trained on: errors + calibration of every version
    weights: list = dataclasses.field(default_factory=lambda: [5.0, 1.0, 1.0])
    seed: int = 0
    # a label with two atoms closer than min_contact x the sum of their covalent radii (ase.data; Si-Si 1.11 A)
    # is a broken configuration: stored as 'filtered', never fitted (pylal.fit.checks.label_problem; 0: off)
    min_contact: float = 0.5
    # a fit whose cross-validation force RMSE exceeds this times the prior's force error (labels minus the
    # physics prior) is worse than no fit and is not published (0: off; 1.05: a fit that fell back to its
    # prior scores 1.00-1.01, the noise of the cross-validation estimate)
    max_cv_prior_ratio: float = 1.05


@dataclasses.dataclass
class RefitConfig:
    every_labels: int = 1  # refit after this many new labels ...
    every_seconds: float = 0.0  # ... or when this many seconds passed with >= 1 new label (0: off)
    budget_per_round: int = 0  # most labels started per refit round (0: no limit, nothing dropped)
    duplicate_tol: float = 0.02  # near-duplicate tolerance of the descriptor (refit.descriptor)
    selection: str = "greedy_fi"  # with a budget: which flags to label (pylal.select: maxdet, lcmd, ...)


@dataclasses.dataclass
class ServerConfig:
    run_dir: Path = Path("run")
    bind: str = "tcp://127.0.0.1:5555"
    token_file: str = "token"
    max_message_bytes: int = 16 * 2**20
    max_atoms: int = 100_000
    max_clock_skew: float = 300.0  # seconds a signed message's timestamp may differ from ours
    reference: ReferenceConfig = dataclasses.field(default_factory=ReferenceConfig)
    executor: ExecutorConfig = dataclasses.field(default_factory=ExecutorConfig)
    fit: FitConfig = dataclasses.field(default_factory=FitConfig)
    refit: RefitConfig = dataclasses.field(default_factory=RefitConfig)
    source: Path | None = None  # the TOML file this came from

    @property
    def token_path(self) -> Path:
        return self.run_dir / self.token_file

    @classmethod
    def load(cls, path) -> "ServerConfig":
        path = Path(path)
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except OSError as err:
            raise ConfigError(f"cannot read server config {path}: {err}") from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"server config {path} is not valid TOML: {err}") from err
        cfg = cls.from_dict(raw, base=path.resolve().parent)
        cfg.source = path.resolve()
        return cfg

    @classmethod
    def from_dict(cls, raw: dict, base: Path = Path(".")) -> "ServerConfig":
        sections = {"reference": ReferenceConfig, "executor": ExecutorConfig, "fit": FitConfig,
                    "refit": RefitConfig}
        top = {}
        for key, value in raw.items():
            if key in sections:
                top[key] = _build(sections[key], value, key)
            else:
                top[key] = value
        cfg = _build(cls, top, "")
        cfg.run_dir = (base / Path(cfg.run_dir)).resolve()
        cfg.fit.initial_data = [str(cfg.run_dir / p) for p in cfg.fit.initial_data]
        if cfg.fit.initial_params:
            cfg.fit.initial_params = str(cfg.run_dir / cfg.fit.initial_params)
        if cfg.fit.lammps_prior_file:
            cfg.fit.lammps_prior_file = str(cfg.run_dir / cfg.fit.lammps_prior_file)
        if cfg.fit.holdout_file:
            cfg.fit.holdout_file = str(cfg.run_dir / cfg.fit.holdout_file)
        from pylal.model.registry import kinds

        if cfg.fit.basis not in kinds():
            raise ConfigError(f"[fit] basis = {cfg.fit.basis!r}: expected one of {kinds()}")
        if cfg.fit.method not in ("brr", "ard"):
            raise ConfigError(f"[fit] method = {cfg.fit.method!r}: expected 'brr' or 'ard'")
        if cfg.fit.calibrate not in ("cv", "none"):
            raise ConfigError(f"[fit] calibrate = {cfg.fit.calibrate!r}: expected 'cv' or 'none'")
        if cfg.fit.energy_noise not in ("cv", "weights"):
            raise ConfigError(f"[fit] energy_noise = {cfg.fit.energy_noise!r}: expected 'cv' or 'weights'")
        prior = cfg.fit.prior
        if prior and prior != "covalent" and not (isinstance(prior, list) and len(prior) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in prior) and 0 < prior[0] < prior[1]):
            raise ConfigError(f"[fit] prior = {prior!r}: expected \"covalent\", [r_on, r_off] with "
                              "0 < r_on < r_off (Angstrom), or [] for none")
        if cfg.fit.n_max < 0 or cfg.fit.l_max < -1 or cfg.fit.max_degree < 0 or cfg.fit.chem_channels < 0:
            raise ConfigError("[fit] n_max, max_degree, chem_channels must be >= 0 and l_max >= 0 "
                              "(leave n_max, l_max, max_degree out for a basis that grows with the data)")
        if cfg.fit.refit_budget <= 0:
            raise ConfigError("[fit] refit_budget must be > 0 seconds")
        if not cfg.fit.smoothness:
            raise ConfigError("[fit] smoothness: give at least one exponent (e.g. [2.0])")
        if cfg.fit.lammps_prior and cfg.fit.lammps_prior_file:
            raise ConfigError("[fit] give either lammps_prior or lammps_prior_file, not both")
        cfg.executor.pythonpath = [str((base / p).resolve()) for p in cfg.executor.pythonpath]
        if cfg.executor.kind not in ("local", "dask"):
            raise ConfigError(f"[executor] kind = {cfg.executor.kind!r}: expected 'local' or 'dask'")
        if cfg.executor.workers < 1:
            raise ConfigError("[executor] workers must be >= 1")
        if cfg.executor.timeout <= 0:
            raise ConfigError("[executor] timeout must be > 0 seconds")
        from pylal.select.batch import METHODS

        if cfg.refit.selection not in METHODS:
            raise ConfigError(f"[refit] selection = {cfg.refit.selection!r}: expected one of {list(METHODS)}")
        if cfg.refit.every_labels < 1:
            raise ConfigError("[refit] every_labels must be >= 1")
        return cfg


def _build(kind, values, section: str):
    if not isinstance(values, dict):
        raise ConfigError(f"[{section}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - set(fields) - {"source"})
    where = f"[{section}] " if section else ""
    if unknown:
        raise ConfigError(f"{where}unknown key(s) {unknown}; valid: {sorted(k for k in fields if k != 'source')}")
    out = kind()
    for key, value in values.items():
        default = getattr(out, key)
        if isinstance(default, bool) != isinstance(value, bool):
            raise ConfigError(f"{where}{key} = {value!r}: expected {type(default).__name__}")
        if isinstance(default, float) and isinstance(value, int):
            value = float(value)
        elif isinstance(default, Path) and isinstance(value, str):
            value = Path(value)
        elif dataclasses.is_dataclass(default) and dataclasses.is_dataclass(value):
            pass  # a section, already built
        elif key == "prior" and isinstance(value, (str, list)):
            pass  # "covalent" or [r_on, r_off]: checked in ServerConfig.load
        elif not isinstance(value, type(default)):
            raise ConfigError(f"{where}{key} = {value!r}: expected {type(default).__name__}")
        setattr(out, key, value)
    return out
