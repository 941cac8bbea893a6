"""Validation settings derived from a campaign: its own structure, species and walker temperatures.

``campaign_settings(initial, walker_temperatures, quick)`` returns (CrystalSettings, [LiquidSettings]):

- crystal: the ``[initial]`` structure (``bulk`` kwargs, or the first configuration of its ``file``).
  Without ``substitute`` the unrepeated bulk cell (the same periodic crystal, fewer atoms); with an
  alloy ``substitute`` the campaign's own cell, ``bulk`` repeated ``repeat`` and substituted with the
  ``[initial]`` seed (the first initial configuration's arrangement before rattling). Its E(V)
  (V0, B, and a0 for a cubic lattice) and, for a cubic lattice, C11, C12, C44 (pylal/validate/crystal.py).
- liquid: one g(r) per *hot* walker temperature: every distinct walker temperature T at least
  ``HOT_FACTOR`` (1.5) x the coldest walker's (a solid/liquid pair as 1200/2500 K, 800/1500 K; a single
  walker is not hot), or the explicit ``liquid_temperatures``. The campaign has no melting point
  of its own, so this is the criterion. For each T the start cell is the ``[initial]`` structure
  (substituted as above), repeated until every cell height is at least 2 r_max, r_max =
  ``RMAX_FACTOR`` (2.1) x its nearest-neighbour distance (Si: 64 atoms, r_max 4.94 A; fcc Al: 108);
  NVT at the crystal's nominal density, melted at ``MELT_FACTOR`` (1.6) x T (Si: 2500 -> 4000 K, the
  historical protocol) and sampled at T; the coordination number up to the reference's first minimum.
"""
from __future__ import annotations

import numpy as np

from pylal.validate.crystal import CrystalSettings
from pylal.validate.liquid import LiquidSettings, inscribed_radius
from pylal.validate.structure import build_structure, nearest_neighbour_distance

HOT_FACTOR = 1.5
MELT_FACTOR = 1.6
RMAX_FACTOR = 2.1


def _get(obj, key, default=None):
    return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)


def initial_structure(initial) -> dict:
    """The structure spec of a campaign's [initial] table (InitialConfig or its dict)."""
    file, substitute = _get(initial, "file", ""), dict(_get(initial, "substitute", {}) or {})
    if file:
        return {"file": str(file), "index": 0}
    spec = {"bulk": dict(_get(initial, "bulk"))}
    if substitute:
        spec.update(repeat=list(_get(initial, "repeat", [1, 1, 1])), substitute=substitute,
                    seed=int(_get(initial, "seed", 0)))
    return spec


def hot_temperatures(walker_temperatures) -> list[float]:
    """Distinct walker temperatures >= HOT_FACTOR x the coldest, hottest first."""
    temps = sorted({float(t) for t in walker_temperatures}, reverse=True)
    if len(temps) < 2:
        return []
    return [t for t in temps if t >= HOT_FACTOR * temps[-1]]


def liquid_structure(spec: dict, r_max: float) -> dict:
    """The spec repeated (per axis, on top of its own repeat) until every cell height is >= 2 r_max."""
    base = {k: v for k, v in spec.items() if k not in ("repeat", "substitute", "seed")}
    atoms = build_structure(base)
    cell = atoms.cell.array
    volume = abs(np.linalg.det(cell))
    heights = [volume / np.linalg.norm(np.cross(cell[i - 2], cell[i - 1])) for i in range(3)]
    repeat = [max(int(np.ceil(2 * r_max / h - 1e-9)), int(r)) for h, r in zip(heights, spec.get("repeat", [1, 1, 1]))]
    out = {**base, "repeat": repeat}
    if spec.get("substitute"):
        out.update(substitute=spec["substitute"], seed=spec.get("seed", 0))
    assert inscribed_radius(build_structure(out).cell.array) >= r_max - 1e-9
    return out


def campaign_settings(initial, walker_temperatures=(), quick: bool = False, liquid_temperatures=None
                      ) -> tuple[CrystalSettings, list[LiquidSettings]]:
    """(crystal settings, one LiquidSettings per liquid temperature) for a campaign (module docstring)."""
    spec = initial_structure(initial)
    crystal = CrystalSettings(structure=spec, fmax=1e-4)  # relaxed energies converge as fmax^2
    temps = ([float(t) for t in liquid_temperatures] if liquid_temperatures
             else hot_temperatures(walker_temperatures))
    liquids = []
    if temps:
        d_nn = nearest_neighbour_distance(build_structure(spec))
        r_max = round(RMAX_FACTOR * d_nn, 3)
        start = liquid_structure(spec, r_max)
        for t in temps:
            kw = dict(structure=start, t_liquid=t, t_melt=round(MELT_FACTOR * t, 1), r_max=r_max,
                      r_coordination=None, symbol="", a=0.0, repeat=0)
            liquids.append(LiquidSettings.quick(**kw) if quick else LiquidSettings(**kw))
    return crystal, liquids
