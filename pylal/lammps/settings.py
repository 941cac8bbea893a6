"""Keywords of `fix ID group pylal PARAMS elements E1 .. En [keyword value ...]`.

One parser for the C++ plugin and the python/invoke callback. The HAL, guard and carving keywords
parse straight into the rules their code uses (HalRule, GuardRule, CarveRule), whose defaults are
theirs; FIX_HAL and FIX_CARVE hold the few the fix sets otherwise. The walker's own keywords
(files, server, rollback) default in FixSettings. docs/keywords.md lists every keyword and default.
Errors name the offending keyword (LAMMPS shows them via error->all).
"""
from __future__ import annotations

import dataclasses

from pylal.hal.controller import HalRule
from pylal.hal.guard import GuardRule
from pylal.select.carve import CarveRule

ON_FLAG = ("continue", "stop", "wait")

# fix pylal's HAL policy: f_i every 10 steps, no new flag within 100 steps of one, guard events flagged
FIX_HAL = HalRule(check_every=10, cooldown=100, flag_guard=True)
FIX_CARVE = CarveRule(margin=None)  # margin None: the model's r_cut (carve_rule)

# keyword -> field of the rule it sets
HAL_KEYWORDS = {k: k for k in ("tau", "tau_rel", "tau_window", "eps", "check_every", "s_tol", "f_tol", "sigma_tol",
                               "cooldown")}
GUARD_KEYWORDS = {"guard_fmax": "f_max", "guard_rmin": "r_min", "guard_sigma_jump": "sigma_jump"}  # 0: off
CARVE_KEYWORDS = {"label_max_atoms": "max_atoms", "carve": "shape", "carve_margin": "margin", "carve_gap": "gap",
                  "carve_regions": "max_regions"}


class FixArgumentError(ValueError):
    """A bad `fix pylal` argument; the message is shown to the user as a LAMMPS error."""


@dataclasses.dataclass(frozen=True)
class FixSettings:
    params_path: str
    elements: tuple[str, ...]
    hal: HalRule = FIX_HAL  # tau, f_i and the flag rule (pylal.hal.controller)
    guard: GuardRule | None = GuardRule()  # the blow-up guard (pylal.hal.guard); None: `guard no`
    carve: CarveRule = FIX_CARVE  # flags of bigger cells are cut into small labels (docs/carving.md)
    on_flag: str = "continue"  # continue | stop | wait (for the refit server's next version)
    flag_dir: str = "pylal_flags"  # flagged configurations are written here (extxyz)
    seed: int = 0  # walker seed, recorded with every flag (the refit server samples with it)
    watch: str | None = None  # parameter file polled for hot-swaps; default PARAMS, `none` = off
    server: str | None = None  # refit server: its run folder (server.json, token) or tcp://host:port
    token: str | None = None  # token file of the server; default SERVER_RUN_DIR/token
    walker: str | None = None  # this run's name at the server; default walker<seed>
    wait_timeout: float = 600.0  # on_flag wait: seconds to wait for a new version, then continue
    trace: str | None = None  # CSV file: one row per check step (step, version, tau, sigma, max f_i, ...)
    stop_file: str | None = None  # when this file exists (checked every check step), the run ends cleanly
    exit_file: str | None = "pylal_exit.json"  # why the run ended (JSON, pylal/lammps/walker.py); `none` = off
    rollback: bool = True  # `rollback yes|no`: a guard event restores the last good state (no: only flag it)
    rollback_every: int = 10  # steps between saves of the good state
    rollback_max: int = 20  # rollbacks in a row to the same saved state before LAMMPS stops with an error
    rollback_temp: float = 0.0  # K for the redrawn velocities; 0: the thermostat's target (else the saved state's)
    checkpoint: str | None = None  # LAMMPS data file of the last good state, rewritten on check steps
    checkpoint_every: float = 60.0  # seconds (wall time) at least between two checkpoint writes
    event_log: str | None = None  # JSON lines: one per guard event / rollback

    def carve_rule(self, r_cut: float) -> CarveRule:
        """The carving rule; the margin defaults to the model's r_cut."""
        return self.carve if self.carve.margin is not None else dataclasses.replace(self.carve, margin=r_cut)


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


def _value(key: str, text: str):
    """One keyword's value, checked against its type, minimum or choices."""
    if key in _FLOAT:
        value = _number(key, text, float)
        if value < 0:
            raise FixArgumentError(f"fix pylal: keyword '{key}' must be >= 0, got {text}")
        return value
    if key in _INT:
        value = _number(key, text, int)
        if value < _INT[key]:
            raise FixArgumentError(f"fix pylal: keyword '{key}' must be >= {_INT[key]}, got {text}")
        return value
    if key in _CHOICE and text not in _CHOICE[key]:
        raise FixArgumentError(f"fix pylal: keyword '{key}' must be one of {'|'.join(_CHOICE[key])}, got '{text}'")
    return text


def _read(args: list[str]) -> dict:
    """keyword -> value of everything after PARAMS (elements: a tuple)."""
    values, i = {}, 1
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
        values[key] = _value(key, args[i + 1])
        i += 2
    return values


def _check(values: dict, ntypes: int | None):
    if "elements" not in values:
        raise FixArgumentError("fix pylal: keyword 'elements' is required (one element symbol per atom type)")
    if ntypes is not None and len(values["elements"]) != ntypes:
        raise FixArgumentError(f"fix pylal: 'elements' lists {len(values['elements'])} element(s) "
                               f"but the system has {ntypes} atom type(s)")
    if "tau" in values and "tau_rel" in values:
        raise FixArgumentError("fix pylal: give either 'tau' (fixed) or 'tau_rel' (adaptive), not both")
    if values.get("on_flag") == "wait" and "server" not in values:
        raise FixArgumentError("fix pylal: 'on_flag wait' needs a refit server (keyword 'server')")
    if "server" in values and "://" in values["server"] and "token" not in values:
        raise FixArgumentError("fix pylal: 'server' given as an address needs 'token FILE' (or give the server's run folder)")


def _take(values: dict, keywords: dict) -> dict:
    """Removes `keywords` from values; returns {rule field: value}."""
    return {field: values.pop(key) for key, field in keywords.items() if key in values}


def _rules(values: dict) -> dict:
    """The HAL, guard and carving keywords of `values`, replaced by the rules they set."""
    hal = _take(values, HAL_KEYWORDS)
    if "f_tol" in hal and "s_tol" not in hal:
        hal["s_tol"] = None  # f_tol alone replaces the default softmax criterion
    hal["stop_on_flag"] = values.get("on_flag") == "stop"
    guard = {field: value or None for field, value in _take(values, GUARD_KEYWORDS).items()}  # 0: off
    return dict(hal=dataclasses.replace(FIX_HAL, **hal),
                guard=None if values.pop("guard", "yes") == "no" else dataclasses.replace(GuardRule(), **guard),
                carve=dataclasses.replace(FIX_CARVE, **_take(values, CARVE_KEYWORDS)))


def parse_fix_args(args: list[str], ntypes: int | None = None) -> FixSettings:
    """args: everything after `fix ID group pylal`. ntypes: LAMMPS atom types (checked against
    the number of elements)."""
    if not args:
        raise FixArgumentError("fix pylal: missing parameter file (fix ID group pylal PARAMS elements E1 ...)")
    values = _read(args)
    _check(values, ntypes)
    values.update(_rules(values), params_path=args[0])
    if "rollback" in values:
        values["rollback"] = values["rollback"] == "yes"
    watch = values.get("watch", args[0])
    values["watch"] = None if watch == "none" else watch
    for key in ("exit_file", "checkpoint", "event_log"):
        if values.get(key) == "none":
            values[key] = None
    return FixSettings(**values)
