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

from pylal.validate.crystal import CrystalSettings, cell_info, elastic_constants, equation_of_state
from pylal.validate.liquid import LiquidSettings, coordination_number, liquid_rdf, start_cell
from pylal.validate.stability import UnstableError
from pylal.validate.structure import describe

GROUPS = ("crystal", "liquid")
# (row name, key in the crystal results, unit); the liquid rows are built in _liquid_rows
CRYSTAL_ROWS = [("a0", "a0", "A"), ("B", "B", "GPa"), ("C11", "C11", "GPa"), ("C12", "C12", "GPa"),
                ("C44", "C44", "GPa"), ("C44_unrelaxed", "C44_unrelaxed", "GPa")]
EOS_ROWS = ("a0", "V0", "B")  # from the E(V) fit; the rest from the elastic constants
MELT_MSD = 0.1  # reference MSD over the sampling below this x first-peak^2: it stayed crystalline


def crystal_rows(crystal: CrystalSettings) -> list:
    """The crystal rows of these settings: the diamond default's six; a structure's V0 and B, and a0 and
    the C_ij if its lattice is cubic (the same rows for model and reference)."""
    if crystal.structure is None:
        return CRYSTAL_ROWS
    rows = [("V0", "V0", "A^3/atom"), ("B", "B", "GPa")]
    return [("a0", "a0", "A"), *rows, *CRYSTAL_ROWS[2:]] if cell_info(crystal)["cubic"] else rows


def structure_statement(settings) -> str:
    """Which structure a crystal or liquid settings object uses, in one line."""
    if settings.structure is not None:
        return describe(settings.structure, start_cell(settings) if isinstance(settings, LiquidSettings) else None)
    if isinstance(settings, LiquidSettings):
        return (f"{settings.symbol}{8 * settings.repeat ** 3}: {settings.repeat}x{settings.repeat}x{settings.repeat} "
                f"repeat of cubic diamond {settings.symbol}, a = {settings.a} A")
    return (f"{settings.symbol}8: cubic diamond {settings.symbol} (8 atoms; E(a) searched around "
            f"a = {settings.a_guess} A)")


def _liquid_list(liquid) -> list:
    return list(liquid) if isinstance(liquid, (list, tuple)) else [liquid]


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
    liquid = liquid if liquid is not None else (LiquidSettings.quick() if quick else LiquidSettings())
    out = {"settings": {}}
    if "crystal" in properties:
        eos = _guarded(equation_of_state, calc, crystal, log=log, who="crystal (EOS)")
        if "error" not in eos and "a0" in eos:  # a0 and B survive a failure of the elastic constants
            elastic = _guarded(elastic_constants, calc, eos["a0"], crystal, log=log, who="crystal (elastic)")
            eos.update({"elastic_error": elastic["error"]} if "error" in elastic else elastic)
        out["crystal"] = eos
        out["settings"]["crystal"] = dataclasses.asdict(crystal)
    if "liquid" in properties:  # one LiquidSettings: a dict; a list of them (temperatures): a list
        results = [_guarded(liquid_rdf, calc, s, log=log, who=f"liquid ({s.t_liquid:g} K)")
                   for s in _liquid_list(liquid)]
        single = not isinstance(liquid, (list, tuple))
        out["liquid"] = results[0] if single else results
        out["settings"]["liquid"] = (dataclasses.asdict(liquid) if single
                                     else [dataclasses.asdict(s) for s in liquid])
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


def _crystal_rows(m: dict, r: dict, crystal: CrystalSettings) -> dict:
    rows = {}
    statement = structure_statement(crystal)
    for name, key, unit in crystal_rows(crystal):
        field = "error" if name in EOS_ROWS else "elastic_error"
        errors = [(who, res.get("error") or res.get(field)) for who, res in (("model", m), ("reference", r))]
        rows[name] = _row(m.get(key), r.get(key), unit, errors)
        rows[name]["structure"] = statement
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
    msd, peak = r.get("msd"), r.get("first_peak")
    if msd is not None and peak and math.isfinite(msd) and msd < MELT_MSD * peak**2:  # a crystal only vibrates
        for row in rows.values():
            row["warning"] = (f"the reference did not melt: its atoms moved {msd:.2f} A^2 (mean squared) over the "
                              f"sampling, < {MELT_MSD:g} x (first peak {peak:.2f} A)^2; this compares hot crystals")
    rdf = {"r": m.get("r", r.get("r")), "model": m.get("g"), "reference": r.get("g"), "unit": "A"}
    return rows, rdf


def _check_reference(reference: dict, properties, settings: dict) -> None:
    for group in properties:
        if group not in reference:
            raise ValueError(f"reference results lack the property group {group!r}")
        theirs = reference.get("settings", {}).get(group)
        if theirs is None:
            continue
        ours = settings[group]
        if isinstance(ours, list) != isinstance(theirs, list) or (isinstance(ours, list) and len(ours) != len(theirs)):
            raise ValueError(f"reference {group} results were computed for other liquid temperatures")
        for o, t in zip(_liquid_list(ours), _liquid_list(theirs)):
            differ = sorted(k for k in o if t.get(k) != o[k])
            if differ:
                raise ValueError(f"reference {group} results were computed with other settings: {differ}")


def property_table(calculator, reference, quick: bool = False, properties=GROUPS,
                   crystal: CrystalSettings | None = None, liquid: LiquidSettings | None = None,
                   log=None) -> dict:
    """{name: {"model", "reference", "rel_error", "unit"[, "error"]}} plus "rdf" (see the package
    docstring). `calculator`: ASE calculator, Parameters or parameter file (-> PylalCalculator,
    tau 0, no f_i checks). `reference`: ASE calculator or the output of compute_properties."""
    crystal = crystal or CrystalSettings()
    liquid = liquid if liquid is not None else (LiquidSettings.quick() if quick else LiquidSettings())
    settings = dict(properties=properties, crystal=crystal, liquid=liquid, log=log)
    if isinstance(reference, dict):  # precomputed: it must have been run with the same settings
        ours = ([dataclasses.asdict(x) for x in liquid] if isinstance(liquid, (list, tuple))
                else dataclasses.asdict(liquid))
        _check_reference(reference, properties, {"crystal": dataclasses.asdict(crystal), "liquid": ours})
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
        table.update(_crystal_rows(model["crystal"], ref["crystal"], crystal))
    if "liquid" in properties:
        many = isinstance(liquid, (list, tuple))
        pairs = zip(model["liquid"], ref["liquid"]) if many else [(model["liquid"], ref["liquid"])]
        curves = []
        for s, (m, r) in zip(_liquid_list(liquid), pairs):
            rows, rdf = _liquid_rows(m, r, s.r_coordination)
            suffix = f"_{s.t_liquid:g}K" if many and len(liquid) > 1 else ""  # one row set per temperature
            for name, row in rows.items():
                if s.structure is not None:
                    row.update(temperature=s.t_liquid, structure=structure_statement(s))
                table[name + suffix] = row
            rdf["settings"] = _rdf_settings(s)
            curves.append(rdf)
        if curves:  # "rdf": the first (hottest) curve; the others in "rdf"["more"]
            table["rdf"] = {**curves[0], **({"more": curves[1:]} if len(curves) > 1 else {})}
    return table


def _rdf_settings(s: LiquidSettings) -> dict:
    keys = ("t_melt", "t_liquid", "melt_steps", "equilibrate_steps", "sample_steps", "stride", "timestep_fs",
            "seed", "r_coordination")
    if s.structure is None:
        return {k: getattr(s, k) for k in ("a", "repeat", *keys)}
    return {"structure": structure_statement(s), "r_max": s.r_max, **{k: getattr(s, k) for k in keys}}


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
        if name.startswith("liquid_coordination") and row.get("r_cut") is not None:
            note = f"up to r = {row['r_cut']:.2f} A" + (f"; {note}" if note else "")
        if name.startswith("rdf_rms"):
            note = "RMS of g_model(r) - g_ref(r)" + (f"; {note}" if note else "")
        if row.get("warning"):
            note = f"WARNING: {row['warning']}" + (f"; {note}" if note else "")
        if row.get("temperature") is not None:
            note = f"liquid at {row['temperature']:g} K" + (f"; {note}" if note else "")
        lines.append(f"| {name} | {row['unit']} | {_fmt(row['model'], row['unit'])} | "
                     f"{_fmt(row['reference'], row['unit'])} | {rel} | {note} |")
    crystal = next((row["structure"] for name, row in table.items() if is_row(row) and name in ("a0", "V0", "B")
                    and "structure" in row), None)
    if crystal:
        lines.append("")
        lines.append(f"Crystal: {crystal}.")
    rdf = table.get("rdf")
    for s in [c["settings"] for c in ([rdf] + rdf.get("more", [])) if c.get("settings")] if rdf else []:
        lines.append("")
        if "structure" in s:
            lines.append(f"Liquid at {s['t_liquid']:g} K: {s['structure']} (NVT at its nominal density), melted at "
                         f"{s['t_melt']:g} K for {s['melt_steps']} steps, g(r) up to {s['r_max']:g} A over "
                         f"{s['sample_steps']} steps after {s['equilibrate_steps']} ({s['timestep_fs']:g} fs, seed "
                         f"{s['seed']}; Langevin in ASE, a LAMMPS reference NVE + CSVR inside LAMMPS).")
            continue
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
