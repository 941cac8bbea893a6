"""Campaign configuration: one TOML file (docs/campaign.md lists every key and its default).

The server sections ([reference], [executor], [fit], [refit]) are the refit server's own
(pylal/server/config.py, docs/server.md) and are checked by it. The campaign adds:
  [initial]      the starting data set (a file, or rattled copies of an ASE bulk crystal, randomly
                 substituted for an alloy: `substitute = {Cu = 0.2}`, pylal/campaign/cells.py)
  [[walkers]]    one LAMMPS run each: deck, temperature, pressure, ranks, steps, seed
  [hal]          `fix pylal` keywords common to every walker (tau_rel, f_tol, check_every, ...)
  [termination]  no flag for quiet_steps at every walker (HAL: "stable for 5000 steps"), caps
  [holdout]      held-out reference MD that judges the potential (never trained on); one run per
                 temperature, NVT or (pressure >= 0) with a barostat; or a file of labelled
                 configurations (cached reference MD: a DFT campaign runs no DFT MD)
  [final]        the fit after data generation (ARD, as HAL does)
  [validate]     properties against the reference (pylal/validate)
Relative paths are relative to the config file's folder, except `run_dir` given on the command line.
"""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from pylal.hal.controller import HalRule
from pylal.lammps.settings import FixSettings
from pylal.server.config import ConfigError, ServerConfig, _build

SERVER_SECTIONS = ("reference", "executor", "fit", "refit")


@dataclasses.dataclass
class InitialConfig:
    file: str = ""  # labelled (or unlabelled: they get labelled) configurations, any ASE format
    bulk: dict = dataclasses.field(default_factory=lambda: {"name": "Si", "crystalstructure": "diamond",
                                                            "a": 5.431, "cubic": True})  # ase.build.bulk kwargs
    repeat: list = dataclasses.field(default_factory=lambda: [2, 2, 2])
    n_configs: int = 5  # rattled copies of the bulk cell
    rattle: float = 0.1  # A, standard deviation of the random displacements
    seed: int = 0
    # alloy: {element = fraction} of the bulk cell's sites replaced at random (pylal/campaign/cells.py),
    # another arrangement for every initial configuration, walker and held-out run; {} = the plain crystal
    substitute: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class WalkerConfig:
    name: str = ""
    deck: str = "in.walker"  # LAMMPS input, relative to the config file
    temperature: float = 1200.0  # K
    pressure: float = -1.0  # bar; < 0: NVT (the deck decides what to do with it)
    ranks: int = 1  # mpirun -np
    steps: int = 200_000  # longest run; the campaign normally stops walkers earlier
    seed: int = 1
    structure: str = ""  # start structure file (ASE-readable); default: the [initial] bulk cell
    repeat: list = dataclasses.field(default_factory=lambda: [1, 1, 1])  # replicate the start cell (big cells)
    vacancies: int = 0  # atoms removed at random from the (replicated) start cell
    variables: dict = dataclasses.field(default_factory=dict)  # extra `-var NAME VALUE` for the deck
    hal: dict = dataclasses.field(default_factory=dict)  # this walker's [hal] overrides, e.g. {f_tol = 0.05}


@dataclasses.dataclass
class HalConfig:
    """`fix pylal` keywords for every walker (docs/fix_pylal.md); the campaign adds server, walker,
    on_flag wait, trace and stop_file itself. A walker's own `hal = {...}` table overrides these.
    The campaign's own choices are set here; the rest are the fix's defaults."""
    tau_rel: float = 0.1
    tau_window: int = HalRule.tau_window
    f_tol: float = 0.1
    sigma_tol: float = 0.005  # eV/atom; 0 = off
    check_every: int = 5  # the fix's default is 10
    cooldown: int = 0  # the fix's is 100; a walker holds at each flag (on_flag wait)
    wait_timeout: float = FixSettings.wait_timeout

    def fix_keywords(self, overrides: dict | None = None) -> str:
        values = dataclasses.asdict(self)
        unknown = sorted(set(overrides or {}) - set(values))
        if unknown:
            raise ConfigError(f"[[walkers]] hal: unknown key(s) {unknown}; valid: {sorted(values)}")
        values.update(overrides or {})
        if not values["sigma_tol"]:
            del values["sigma_tol"]
        return " ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


@dataclasses.dataclass
class TerminationConfig:
    quiet_steps: int = 2000  # every walker ran this many steps without a flag on the newest version
    max_labels: int = 100  # stop (unconverged) after this many labels
    max_minutes: float = 60.0  # stop (unconverged) after this much wall time
    max_restarts: int = 3  # a walker that crashes (lost atoms, ...) restarts with a new seed this often
    max_rejected_refits: int = 3  # stop (failed) after this many refits in a row failed their sanity checks
    saturation_labels: int = 30  # stop (saturated) when the last this many labels ...
    saturation_gain: float = 0.02  # ... lowered the held-out force RMSE by less than this fraction (0 labels: off)


@dataclasses.dataclass
class HoldoutConfig:
    temperature: float = 1200.0  # K, Langevin MD on the reference
    n_configs: int = 20
    stride: int = 50  # steps between snapshots (after 200 equilibration steps of 2 fs; shorter with atoms lighter than C)
    seed: int = 1234
    headline: str = "holdout_force_rmse"  # name on the campaign's last output line (`make demo`: demo_force_rmse)
    temperatures: list = dataclasses.field(default_factory=list)  # several runs, n_configs each; [] = [temperature]
    pressure: float = -1.0  # bar; < 0: NVT; >= 0: Langevin + isotropic barostat (each phase at its own density)
    equilibrate: int = 200  # steps before the first snapshot (a liquid needs longer to melt)
    file: str = ""  # labelled configurations (e.g. cached DFT MD, inputs/dft/holdout.xyz) used instead of reference MD


@dataclasses.dataclass
class FinalConfig:
    method: str = "ard"  # HAL: ARD after data generation, BRR during it
    n_members: int = 32
    max_minutes: float = 10.0  # time bound of the final fit; then (or if worse on the held-out set) the last BRR version


@dataclasses.dataclass
class ValidateConfig:
    enabled: bool = True
    quick: bool = False
    properties: list = dataclasses.field(default_factory=lambda: ["crystal", "liquid"])
    # "campaign": the [initial] structure's crystal properties and g(r) at the hot walkers' temperatures
    # (pylal/validate/derive.py); "diamond-si": the fixed diamond-Si protocol of `pylal validate`
    system: str = "campaign"
    liquid_temperatures: list = dataclasses.field(default_factory=list)  # K; [] = the hot walkers' ("campaign")

    def check(self):
        if self.system not in ("campaign", "diamond-si"):
            raise ConfigError(f"[validate] system = {self.system!r}: expected 'campaign' or 'diamond-si'")
        if not set(self.properties) <= {"crystal", "liquid"}:
            raise ConfigError(f"[validate] properties = {self.properties!r}: expected a list of 'crystal', 'liquid'")
        if not all(isinstance(t, (int, float)) and t > 0 for t in self.liquid_temperatures):
            raise ConfigError(f"[validate] liquid_temperatures = {self.liquid_temperatures!r}: "
                              "expected positive numbers (K)")
        return self


@dataclasses.dataclass
class CampaignConfig:
    server: ServerConfig
    initial: InitialConfig
    walkers: list
    hal: HalConfig
    termination: TerminationConfig
    holdout: HoldoutConfig
    final: FinalConfig
    validate: ValidateConfig
    base: Path  # folder of the config file
    raw: dict  # the TOML as read (recorded in campaign.json)

    @property
    def species(self) -> list:
        return list(self.server.fit.species)

    @classmethod
    def load(cls, path, run_dir: str | Path | None = None) -> "CampaignConfig":
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as err:
            raise ConfigError(f"cannot read campaign config {path}: {err}") from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"campaign config {path} is not valid TOML: {err}") from err
        return cls.from_dict(raw, base=path.resolve().parent, run_dir=run_dir, name=path.stem)

    @classmethod
    def from_dict(cls, raw: dict, base: Path, run_dir=None, name="campaign") -> "CampaignConfig":
        known = {"run_dir", "initial", "walkers", "hal", "termination", "holdout", "final", "validate",
                 *SERVER_SECTIONS}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"campaign config: unknown key(s) {unknown}; valid: {sorted(known)}")
        if run_dir is not None:
            run = Path(run_dir).resolve()
        elif "run_dir" in raw:
            run = (base / raw["run_dir"]).resolve()
        else:
            run = (Path("runs") / name).resolve()
        server_raw = {k: raw[k] for k in SERVER_SECTIONS if k in raw}
        server = ServerConfig.from_dict({**server_raw, "bind": "tcp://127.0.0.1:*"}, base=run.parent)
        server.run_dir = run
        server.executor.pythonpath = [str((base / p).resolve()) for p in raw.get("executor", {}).get("pythonpath", [])]
        walkers_raw = raw.get("walkers", [{"name": "T1200"}])
        if not isinstance(walkers_raw, list) or not walkers_raw:
            raise ConfigError("campaign config: [[walkers]] must list at least one walker")
        walkers = []
        for i, w in enumerate(walkers_raw):
            walker = _build(WalkerConfig, w, f"walkers.{i}")
            walker.name = walker.name or f"w{i}"
            walker.deck = str((base / walker.deck).resolve())
            if not Path(walker.deck).is_file():
                raise ConfigError(f"[[walkers]] {walker.name}: deck {walker.deck} does not exist")
            if walker.structure:
                walker.structure = str((base / walker.structure).resolve())
            if walker.ranks < 1:
                raise ConfigError(f"[[walkers]] {walker.name}: ranks must be >= 1")
            if len(walker.repeat) != 3 or not all(isinstance(r, int) and r >= 1 for r in walker.repeat):
                raise ConfigError(f"[[walkers]] {walker.name}: repeat = {walker.repeat!r}: expected three integers >= 1")
            if walker.vacancies < 0:
                raise ConfigError(f"[[walkers]] {walker.name}: vacancies must be >= 0")
            walkers.append(walker)
        hal = _build(HalConfig, raw.get("hal", {}), "hal")
        for walker in walkers:
            hal.fix_keywords(walker.hal)  # unknown override keys fail here, before anything runs
        names = [w.name for w in walkers]
        if len(set(names)) != len(names):
            raise ConfigError(f"[[walkers]] names must be unique, got {names}")
        initial = _build(InitialConfig, raw.get("initial", {}), "initial")
        if initial.file:
            initial.file = str((base / initial.file).resolve())
        _check_substitute(initial.substitute, list(server.fit.species))
        holdout = _build(HoldoutConfig, raw.get("holdout", {}), "holdout")
        if not all(isinstance(t, (int, float)) and t > 0 for t in holdout.temperatures):
            raise ConfigError(f"[holdout] temperatures = {holdout.temperatures!r}: expected a list of positive numbers (K)")
        if holdout.file:
            holdout.file = str((base / holdout.file).resolve())
            if not Path(holdout.file).is_file():
                raise ConfigError(f"[holdout] file = {holdout.file}: no such file")
        final = _build(FinalConfig, raw.get("final", {}), "final")
        if final.method not in ("brr", "ard"):
            raise ConfigError(f"[final] method = {final.method!r}: expected 'ard' or 'brr'")
        return cls(server=server, initial=initial, walkers=walkers,
                   hal=hal,
                   termination=_build(TerminationConfig, raw.get("termination", {}), "termination"),
                   holdout=holdout,
                   final=final, validate=_build(ValidateConfig, raw.get("validate", {}), "validate").check(),
                   base=base, raw=raw)


def _check_substitute(substitute: dict, species: list):
    """[initial] substitute = {Cu = 0.2}: elements of [fit] species, fractions in [0, 1] summing to <= 1."""
    unknown = sorted(set(substitute) - set(species))
    if unknown:
        raise ConfigError(f"[initial] substitute: element(s) {unknown} not in [fit] species {species}")
    bad = {k: v for k, v in substitute.items() if not isinstance(v, (int, float)) or not 0 <= v <= 1}
    if bad or sum(substitute.values()) > 1:
        raise ConfigError(f"[initial] substitute = {substitute}: fractions must be numbers in [0, 1] summing to <= 1")
