"""The property table: the same property functions on the model and on the reference, side by side.

See the package docstring (pylal/validate/__init__.py) for the JSON shape.
"""
from __future__ import annotations

import dataclasses
import json
import math
import traceback
from pathlib import Path

import numpy as np

from pylal.validate.crystal import CrystalSettings, elastic_constants, equation_of_state
from pylal.validate.liquid import LiquidSettings, coordination_number, liquid_rdf
from pylal.validate.stability import UnstableError

GROUPS = ("crystal", "liquid")
# (row name, key in the crystal results, unit); the liquid rows are built in _liquid_rows
CRYSTAL_ROWS = [("a0", "a0", "A"), ("B", "B", "GPa"), ("C11", "C11", "GPa"), ("C12", "C12", "GPa"),
                ("C44", "C44", "GPa"), ("C44_unrelaxed", "C44_unrelaxed", "GPa")]


def _as_calculator(calc):
    """A parameter file path or Parameters becomes an unbiased PylalCalculator (no f_i checks)."""
    from pylal.model.params import Parameters

    if isinstance(calc, (str, Path, Parameters)):
        from pylal.calculator import PylalCalculator

        return PylalCalculator(calc, tau=0.0, check_every=0)
    return calc


def _guarded(fn, *args, log=None, who=""):
    """fn(*args), or {"error": reason} if it raises: an unstable model is a result, not a crash."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001  (any calculator failure: LAMMPS, JAX, ASE, ours)
        if log is not None:  # an unexpected exception type gets its traceback (it may be a bug)
            trace = "" if isinstance(err, UnstableError) else "\n" + traceback.format_exc(limit=-3)
            log(f"{who} failed: {type(err).__name__}: {err}{trace}")
        return {"error": f"{type(err).__name__}: {err}"}


def compute_properties(calculator, properties=GROUPS, crystal: CrystalSettings | None = None,
                       liquid: LiquidSettings | None = None, quick: bool = False, log=None) -> dict:
    """Raw results of one calculator: {"crystal": {...}, "liquid": {...}}, each {"error": reason} on
    failure. Pass it as `reference` to property_table to reuse a reference across models."""
    unknown = set(properties) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown property groups {sorted(unknown)}; valid: {list(GROUPS)}")
    calc = _as_calculator(calculator)
    crystal = crystal or CrystalSettings()
    liquid = liquid or (LiquidSettings.quick() if quick else LiquidSettings())
    out = {"settings": {}}
    if "crystal" in properties:
        eos = _guarded(equation_of_state, calc, crystal, log=log, who="crystal (EOS)")
        if "error" not in eos:  # a0 and B survive a failure of the elastic constants
            elastic = _guarded(elastic_constants, calc, eos["a0"], crystal, log=log, who="crystal (elastic)")
            eos.update({"elastic_error": elastic["error"]} if "error" in elastic else elastic)
        out["crystal"] = eos
        out["settings"]["crystal"] = dataclasses.asdict(crystal)
    if "liquid" in properties:
        out["liquid"] = _guarded(liquid_rdf, calc, liquid, log=log, who="liquid")
        out["settings"]["liquid"] = dataclasses.asdict(liquid)
    return out


def _number(x):
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _row(model, reference, unit, errors=()):
    model, reference = _number(model), _number(reference)
    rel = (model - reference) / reference if model is not None and reference not in (None, 0.0) else None
    row = {"model": model, "reference": reference, "rel_error": rel, "unit": unit}
    reasons = [f"{who}: {e}" for who, e in errors if e]
    if reasons:
        row["error"] = "; ".join(reasons)
    return row


def _crystal_rows(m: dict, r: dict) -> dict:
    rows = {}
    for name, key, unit in CRYSTAL_ROWS:
        field = "error" if name in ("a0", "B") else "elastic_error"
        errors = [(who, res.get("error") or res.get(field)) for who, res in (("model", m), ("reference", r))]
        rows[name] = _row(m.get(key), r.get(key), unit, errors)
    return rows


def _liquid_rows(m: dict, r: dict, r_coordination: float | None) -> tuple[dict, dict]:
    errors = [("model", m.get("error")), ("reference", r.get("error"))]
    # one integration radius for both curves (fixed, or the reference's first minimum), so the
    # coordination numbers differ only through g(r), not through where a shallow minimum lies
    r_cut = r_coordination if r_coordination is not None else r.get("first_minimum", m.get("first_minimum"))
    coord = {}
    for who, res in (("model", m), ("reference", r)):
        coord[who] = (coordination_number(res["r"], res["g"], res["density"], r_cut)
                      if "g" in res and r_cut is not None else None)
    rms = None
    if "g" in m and "g" in r:
        if not np.allclose(m["r"], r["r"]):
            raise ValueError("model and reference g(r) on different grids")
        rms = float(np.sqrt(np.mean((np.asarray(m["g"]) - np.asarray(r["g"])) ** 2)))
    rows = {"rdf_first_peak": _row(m.get("first_peak"), r.get("first_peak"), "A", errors),
            "liquid_coordination": _row(coord["model"], coord["reference"], "1", errors),
            "rdf_rms": _row(rms, 0.0 if "g" in r else None, "1", errors)}
    rows["liquid_coordination"]["r_cut"] = r_cut
    rdf = {"r": m.get("r", r.get("r")), "model": m.get("g"), "reference": r.get("g"), "unit": "A"}
    return rows, rdf


def _check_reference(reference: dict, properties, settings: dict) -> None:
    for group in properties:
        if group not in reference:
            raise ValueError(f"reference results lack the property group {group!r}")
        theirs = reference.get("settings", {}).get(group)
        if theirs is not None:
            differ = sorted(k for k in settings[group] if theirs.get(k) != settings[group][k])
            if differ:
                raise ValueError(f"reference {group} results were computed with other settings: {differ}")


def property_table(calculator, reference, quick: bool = False, properties=GROUPS,
                   crystal: CrystalSettings | None = None, liquid: LiquidSettings | None = None,
                   log=None) -> dict:
    """{name: {"model", "reference", "rel_error", "unit"[, "error"]}} plus "rdf" (see the package
    docstring). `calculator`: ASE calculator, Parameters or parameter file (-> PylalCalculator,
    tau 0, no f_i checks). `reference`: ASE calculator or the output of compute_properties."""
    crystal = crystal or CrystalSettings()
    liquid = liquid or (LiquidSettings.quick() if quick else LiquidSettings())
    settings = dict(properties=properties, crystal=crystal, liquid=liquid, log=log)
    if isinstance(reference, dict):  # precomputed: it must have been run with the same settings
        _check_reference(reference, properties, {"crystal": dataclasses.asdict(crystal),
                                                 "liquid": dataclasses.asdict(liquid)})
    if isinstance(reference, dict):
        ref = reference
    else:  # the reference first: LAMMPS ran 2-3x slower after JAX had run in the same process
        if log:
            log("validate: reference")
        ref = compute_properties(reference, **settings)
    if log:
        log("validate: model")
    model = compute_properties(calculator, **settings)
    table = {}
    if "crystal" in properties:
        table.update(_crystal_rows(model["crystal"], ref["crystal"]))
    if "liquid" in properties:
        rows, rdf = _liquid_rows(model["liquid"], ref["liquid"], liquid.r_coordination)
        table.update(rows)
        s = model["settings"]["liquid"]
        rdf["settings"] = {k: s[k] for k in ("a", "repeat", "t_melt", "t_liquid", "melt_steps",
                                              "equilibrate_steps", "sample_steps", "stride", "timestep_fs",
                                              "seed", "r_coordination")}
        table["rdf"] = rdf
    return table


def is_row(value) -> bool:
    """Rows are the dicts with a "rel_error" key (not "rdf")."""
    return isinstance(value, dict) and "rel_error" in value


def failures(table: dict) -> dict:
    """{name: reason} of the rows that could not be computed."""
    return {k: v["error"] for k, v in table.items() if is_row(v) and "error" in v}


def _fmt(x, unit):
    if x is None:
        return "—"
    return f"{x:.4f}" if unit == "A" else f"{x:.1f}" if unit == "GPa" else f"{x:.3f}"


def render_markdown(table: dict) -> str:
    """The rows as a markdown table (model, reference, relative error, failure reason)."""
    lines = ["| property | unit | model | reference | rel. error | note |", "|---|---|---|---|---|---|"]
    for name, row in table.items():
        if not is_row(row):
            continue
        rel = "—" if row.get("rel_error") is None else f"{100 * row['rel_error']:+.2f}%"
        note = row.get("error", "")
        if name == "liquid_coordination" and row.get("r_cut") is not None:
            note = f"up to r = {row['r_cut']:.2f} A" + (f"; {note}" if note else "")
        if name == "rdf_rms":
            note = "RMS of g_model(r) - g_ref(r)" + (f"; {note}" if note else "")
        lines.append(f"| {name} | {row['unit']} | {_fmt(row['model'], row['unit'])} | "
                     f"{_fmt(row['reference'], row['unit'])} | {rel} | {note} |")
    rdf = table.get("rdf")
    if rdf and rdf.get("settings"):
        s = rdf["settings"]
        lines.append("")
        lines.append(f"Liquid: {8 * s['repeat'] ** 3} atoms at a = {s['a']} A (NVT), melted at {s['t_melt']:g} K "
                     f"for {s['melt_steps']} steps, g(r) at {s['t_liquid']:g} K over {s['sample_steps']} steps "
                     f"after {s['equilibrate_steps']} ({s['timestep_fs']:g} fs, seed {s['seed']}; Langevin in ASE, a "
                     f"LAMMPS reference NVE + CSVR inside LAMMPS).")
    return "\n".join(lines) + "\n"


def write_validation(table: dict, path_json, path_md=None) -> None:
    """validation.json (and the markdown table next to it, or at `path_md`), written atomically."""
    from pylal.files import atomic_write

    path_json = Path(path_json)
    atomic_write(path_json, json.dumps(table, indent=1, allow_nan=False).encode())
    path_md = Path(path_md) if path_md is not None else path_json.with_suffix(".md")
    atomic_write(path_md, render_markdown(table).encode())
