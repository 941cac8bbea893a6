"""The structure a validation runs on: a JSON-able spec, the cell built from it, and a statement of it.

A spec (``CrystalSettings.structure``, ``LiquidSettings.structure``) is one of

- ``{"bulk": {...ase.build.bulk kwargs...}, "repeat": [n1, n2, n3], "substitute": {"Cu": 0.2}, "seed": 0}``:
  ``bulk(**kwargs).repeat(repeat)`` with round(x N) random sites of each element of ``substitute``
  (pylal.campaign.cells.substitute_sites; ``repeat`` and ``substitute`` optional);
- ``{"file": path, "index": 0, "repeat": [...]}``: a configuration of any ASE-readable file.

``lattice_info`` classifies the cell's Bravais lattice (ASE, ``Cell.get_bravais_lattice``): cubic (CUB,
FCC, BCC: the elastic constants C11, C12, C44 are defined) or not (hcp, wurtzite, ...: only V0 and B),
and the nominal cubic lattice constant a (of the conventional cell, per repeat) that ``a0`` scales.
"""
from __future__ import annotations

import numpy as np
from ase.build import bulk
from ase.neighborlist import neighbor_list

CUBIC_LATTICES = ("CUB", "FCC", "BCC")


def build_structure(spec: dict):
    """The Atoms of a spec (module docstring)."""
    if "file" in spec:
        from ase.io import read

        atoms = read(spec["file"], index=spec.get("index", 0))
        atoms.calc = None
    else:
        atoms = bulk(**spec["bulk"])
    atoms = atoms.repeat(tuple(spec.get("repeat", (1, 1, 1))))
    if spec.get("substitute"):
        from pylal.campaign.cells import substitute_sites

        substitute_sites(atoms, spec["substitute"], spec.get("seed", 0))
    return atoms


def lattice_info(spec: dict, atoms=None) -> dict:
    """{"lattice": ASE Bravais name, "cubic": bool, "a": nominal cubic lattice constant (A) or None}.
    The lattice is that of the unrepeated cell (a 2x2x1 repeat of a cubic crystal is still cubic)."""
    atoms = build_structure(spec) if atoms is None else atoms
    base_cell = atoms.cell.array / np.asarray(spec.get("repeat", (1, 1, 1)), dtype=float)[:, None]
    from ase.cell import Cell

    try:
        lattice = Cell(base_cell).get_bravais_lattice(eps=1e-4)
        name, a = lattice.name, float(getattr(lattice, "a", np.nan))
    except (ValueError, RuntimeError):  # no recognisable lattice
        name, a = "unknown", np.nan
    cubic = name in CUBIC_LATTICES
    return {"lattice": name, "cubic": bool(cubic), "a": a if cubic else None}


def nearest_neighbour_distance(atoms) -> float:
    """Shortest interatomic distance of a periodic (or not) cell, over all images."""
    d = neighbor_list("d", atoms, 6.0)
    if len(d) == 0:
        raise ValueError("no two atoms within 6 A: cannot scale the validation protocol to this structure")
    return float(d.min())


def describe(spec: dict, atoms=None) -> str:
    """One line naming the structure: how it was built, its formula, its atom count."""
    atoms = build_structure(spec) if atoms is None else atoms
    info = lattice_info(spec, atoms)
    repeat = tuple(spec.get("repeat", (1, 1, 1)))
    rep = "" if repeat == (1, 1, 1) else "x".join(str(r) for r in repeat) + " repeat of "
    if "file" in spec:
        what = f"configuration {spec.get('index', 0)} of {spec['file']}"
    else:
        kw = spec["bulk"]
        parts = [f"{k} = {v}" for k, v in kw.items() if k not in ("name", "crystalstructure")]
        what = (f"{kw.get('crystalstructure', '')} {kw['name']}".strip() + " (ase.build.bulk"
                + (", " + ", ".join(parts) if parts else "") + ")")
    sub = ""
    if spec.get("substitute"):
        sub = (", " + ", ".join(f"{100 * x:g} % {el}" for el, x in spec["substitute"].items())
               + f" on random sites (seed {spec.get('seed', 0)})")
    cubic = "cubic" if info["cubic"] else "not cubic"
    return (f"{atoms.get_chemical_formula()}: {rep}{what}{sub}; {len(atoms)} atoms, "
            f"{info['lattice']} lattice ({cubic})")
