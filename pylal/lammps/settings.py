"""Keywords of `fix ID group pylal PARAMS elements E1 .. En [keyword value ...]`.

One parser for the C++ plugin and the python/invoke callback; every default is here and in
docs/fix_pylal.md. Errors name the offending keyword (LAMMPS shows them via error->all).
"""
from __future__ import annotations

import dataclasses

from pylal.hal.controller import HalRule

ON_FLAG = ("continue", "stop", "wait")


class FixArgumentError(ValueError):
    """A bad `fix pylal` argument; the message is shown to the user as a LAMMPS error."""


@dataclasses.dataclass
class FixSettings:
    params_path: str
    elements: tuple[str, ...]
    tau: float = 0.0  # fixed bias strength (eV); ignored when tau_rel is given
    tau_rel: float | None = None  # adaptive tau (HAL eq. 12); HAL uses 0.05-0.25
    tau_window: int = 100  # steps averaged by adaptive tau, also its burn-in (HAL: 100)
    eps: float | None = None  # f_i regulariser (HAL eq. 6); default: global mean |F_bar_i|
    s_tol: float | None = 0.5  # softmax tolerance (HAL eq. 8); default when no f_tol is given
    f_tol: float | None = None  # max f_i tolerance (HAL eq. 7)
    sigma_tol: float | None = None  # also flag when sigma / N_atoms > sigma_tol (eV/atom); none by default
    check_every: int = 10  # steps between f_i checks and parameter-file polls
    on_flag: str = "continue"  # continue | stop | wait (for the refit server's next version)
    flag_dir: str = "pylal_flags"  # flagged configurations are written here (extxyz)
    cooldown: int = 100  # steps after a written flag during which no new one is written
    seed: int = 0  # walker seed, recorded with every flag (the refit server samples with it)
    watch: str | None = None  # parameter file polled for hot-swaps; default PARAMS, `none` = off
    server: str | None = None  # refit server: its run folder (server.json, token) or tcp://host:port
    token: str | None = None  # token file of the server; default SERVER_RUN_DIR/token
    walker: str | None = None  # this run's name at the server; default walker<seed>
    wait_timeout: float = 600.0  # on_flag wait: seconds to wait for a new version, then continue
    trace: str | None = None  # CSV file: one row per check step (step, version, tau, sigma, max f_i, ...)
    stop_file: str | None = None  # when this file exists (checked every check step), the run ends cleanly
    exit_file: str | None = "pylal_exit.json"  # why the run ended (JSON, pylal/lammps/walker.py); `none` = off
    # blow-up guard and rollback (pylal/hal/guard.py; docs/fix_pylal.md "Guard and rollback")
    guard: str = "yes"  # yes | no: check every step for exploding forces, close contacts, ...
    guard_fmax: float = 50.0  # eV/A: largest |F_i| accepted; 0: off
    guard_rmin: float = 0.6  # A: shortest pair distance accepted (below any bond, H2: 0.74 A); 0: off
    guard_sigma_jump: float = 10.0  # sigma may grow by at most this factor in one step; 0: off
    rollback: str = "yes"  # yes | no: a guard event restores the last good state (no: only flag it)
    rollback_every: int = 10  # steps between saves of the good state
    rollback_max: int = 20  # rollbacks in a row to the same saved state before LAMMPS stops with an error
    rollback_temp: float = 0.0  # K for the redrawn velocities; 0: the thermostat's target (else the saved state's)
    checkpoint: str | None = None  # LAMMPS data file of the last good state, rewritten on check steps
    checkpoint_every: float = 60.0  # seconds (wall time) at least between two checkpoint writes
    event_log: str | None = None  # JSON lines: one per guard event / rollback
    # carving (pylal/select/carve.py; docs/carving.md): flags of bigger cells are cut into small labels
    label_max_atoms: int = 128  # atoms per label; a bigger flagged cell is carved; 0: never carve
    carve: str = "periodic"  # periodic (bulk) | cluster (molecules, surfaces)
    carve_margin: float | None = None  # A beyond the core; default: the model's r_cut
    carve_gap: float = 2.0  # A: vacuum between the region and its periodic images (cluster: on each side)
    carve_regions: int = 4  # carved cells per flag at most (distant uncertain regions)

    def guard_rule(self, skin: float | None = None):
        """The guard's thresholds (pylal.hal.guard.GuardRule), None when the guard is off."""
        from pylal.hal.guard import GuardRule

        if self.guard == "no":
            return None
        return GuardRule(f_max=self.guard_fmax or None, r_min=self.guard_rmin or None,
                         sigma_jump=self.guard_sigma_jump or None, skin=skin)

    def carve_rule(self, r_cut: float):
        """The carving rule (pylal.select.carve.CarveRule); the margin defaults to the model's r_cut."""
        from pylal.select.carve import CarveRule

        return CarveRule(max_atoms=self.label_max_atoms, shape=self.carve, gap=self.carve_gap,
                         margin=r_cut if self.carve_margin is None else self.carve_margin,
                         max_regions=self.carve_regions)

    def rule(self) -> HalRule:
        """The HAL policy (tau, f_i, flag rule) these keywords set, for the controller."""
        return HalRule(tau=self.tau, tau_rel=self.tau_rel, tau_window=self.tau_window, eps=self.eps,
                       check_every=self.check_every, s_tol=self.s_tol, f_tol=self.f_tol, sigma_tol=self.sigma_tol,
                       cooldown=self.cooldown, stop_on_flag=self.on_flag == "stop")


_FLOAT = {"tau", "tau_rel", "eps", "s_tol", "f_tol", "sigma_tol", "wait_timeout", "guard_fmax", "guard_rmin",
          "guard_sigma_jump", "rollback_temp", "checkpoint_every", "carve_margin", "carve_gap"}
_INT = {"tau_window": 1, "check_every": 0, "cooldown": 0, "seed": 0, "rollback_every": 1,
        "rollback_max": 1, "label_max_atoms": 0, "carve_regions": 1}  # keyword -> minimum
_CHOICE = {"on_flag": ON_FLAG, "guard": ("yes", "no"), "rollback": ("yes", "no"), "carve": ("periodic", "cluster")}
_STRING = {"flag_dir", "watch", "server", "token", "walker", "trace", "stop_file", "exit_file", "checkpoint",
           "event_log"}
KEYWORDS = sorted({"elements"} | _FLOAT | set(_INT) | set(_CHOICE) | _STRING)


def _number(keyword, text, kind):
    try:
        return kind(text)
    except ValueError:
        raise FixArgumentError(f"fix pylal: keyword '{keyword}' expects a{'n integer' if kind is int else ' number'}, got '{text}'") from None


def parse_fix_args(args: list[str], ntypes: int | None = None) -> FixSettings:
    """args: everything after `fix ID group pylal`. ntypes: LAMMPS atom types (checked against
    the number of elements)."""
    if not args:
        raise FixArgumentError("fix pylal: missing parameter file (fix ID group pylal PARAMS elements E1 ...)")
    values: dict = {"params_path": args[0]}
    seen_tol = set()
    i = 1
    while i < len(args):
        key = args[i]
        if key == "elements":
            j = i + 1
            while j < len(args) and args[j] not in KEYWORDS:
                j += 1
            if j == i + 1:
                raise FixArgumentError("fix pylal: keyword 'elements' needs one element symbol per atom type")
            values["elements"] = tuple(args[i + 1:j])
            i = j
            continue
        if key not in KEYWORDS:
            raise FixArgumentError(f"fix pylal: unknown keyword '{key}' (known: {', '.join(KEYWORDS)})")
        if i + 1 >= len(args):
            raise FixArgumentError(f"fix pylal: keyword '{key}' needs a value")
        text = args[i + 1]
        if key in _FLOAT:
            value = _number(key, text, float)
            if value < 0:
                raise FixArgumentError(f"fix pylal: keyword '{key}' must be >= 0, got {text}")
            if key in ("s_tol", "f_tol"):
                seen_tol.add(key)
        elif key in _INT:
            value = _number(key, text, int)
            if value < _INT[key]:
                raise FixArgumentError(f"fix pylal: keyword '{key}' must be >= {_INT[key]}, got {text}")
        elif key in _CHOICE:
            if text not in _CHOICE[key]:
                raise FixArgumentError(f"fix pylal: keyword '{key}' must be one of {'|'.join(_CHOICE[key])}, got '{text}'")
            value = text
        else:
            value = text
        values[key] = value
        i += 2
    if "elements" not in values:
        raise FixArgumentError("fix pylal: keyword 'elements' is required (one element symbol per atom type)")
    if ntypes is not None and len(values["elements"]) != ntypes:
        raise FixArgumentError(f"fix pylal: 'elements' lists {len(values['elements'])} element(s) "
                               f"but the system has {ntypes} atom type(s)")
    if "tau" in values and "tau_rel" in values:
        raise FixArgumentError("fix pylal: give either 'tau' (fixed) or 'tau_rel' (adaptive), not both")
    if seen_tol == {"f_tol"}:
        values["s_tol"] = None  # f_tol alone replaces the default softmax criterion
    if values.get("on_flag") == "wait" and "server" not in values:
        raise FixArgumentError("fix pylal: 'on_flag wait' needs a refit server (keyword 'server')")
    if "server" in values and "://" in values["server"] and "token" not in values:
        raise FixArgumentError("fix pylal: 'server' given as an address needs 'token FILE' (or give the server's run folder)")
    watch = values.get("watch", values["params_path"])
    values["watch"] = None if watch == "none" else watch
    for key in ("exit_file", "checkpoint", "event_log"):
        if values.get(key) == "none":
            values[key] = None
    return FixSettings(**values)
