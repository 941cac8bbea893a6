"""Carving: the uncertain region(s) of a configuration too big for the reference, cut into small
cells the reference can label (docs/carving.md).

A region is centred on an atom of large relative force uncertainty f_i (HAL eq. 6). Around the
centre c, with d_j the minimum-image displacement of atom j from c:
  periodic  region |d_j|_inf < h (a cube of side 2h), put in a periodic orthorhombic cell of side
            2h + gap; core |d_j|_inf < h - margin (a cube)
  cluster   region |d_j|_2 < h (a sphere), pbc False, in a box of side 2h + 2 gap; core |d_j|_2 < h - margin
The half-width h is the largest that keeps at most `max_atoms` atoms in the region. With
margin >= r_cut every core atom has all its neighbours within r_cut in the region, and no periodic
image of a region atom comes closer than margin + gap to a core atom: the core's environment is the
parent's, exactly. A site-energy potential's force on atom i depends on atoms up to 2 r_cut away, so
the core's reference forces equal the parent's only with margin >= 2 r_cut; with one r_cut they are
the forces in the carved cell (a consistent label: model and reference see the same cell).

Parallel: every rank holds its owned atoms. The centres are chosen one at a time with one small
allgather each (the best candidate of every rank); each rank then sends only its atoms inside the
regions to rank 0, which builds the cells. The result is the same on any number of ranks (the
gathered atoms are sorted by atom ID before anything is decided).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from ase import Atoms

from pylal.fit.design import mask_forces

REGION_SLACK = 1.15  # the gathered region is this much wider than the density estimate of h


@dataclasses.dataclass(frozen=True)
class CarveRule:
    max_atoms: int = 128  # atoms per carved cell (a DFT-sized label)
    margin: float = 3.8  # A beyond the core: >= r_cut (fix pylal: the model's r_cut); 2 r_cut for the parent's forces
    shape: str = "periodic"  # periodic (bulk) | cluster (molecules, surfaces)
    gap: float = 2.0  # A: periodic: vacuum between the region and its images; cluster: vacuum on each side
    max_regions: int = 4  # carved cells per flag at most
    min_ratio: float = 0.5  # a further region's centre needs f_i >= min_ratio * the largest f_i


@dataclasses.dataclass
class OwnedAtoms:
    """One rank's owned atoms: IDs, atomic numbers, positions (A), f_i."""

    tags: np.ndarray
    numbers: np.ndarray
    positions: np.ndarray
    f_i: np.ndarray


class CarveError(ValueError):
    """The rule cannot carve this configuration (the message says why)."""


def minimum_image(d: np.ndarray, cell: np.ndarray, pbc) -> np.ndarray:
    """Displacements d (n, 3) folded to their shortest periodic image along periodic directions
    (exact in orthorhombic cells for |d| below half the cell's width, which carve() ensures)."""
    frac = d @ np.linalg.inv(cell)
    frac[:, np.asarray(pbc, bool)] -= np.round(frac[:, np.asarray(pbc, bool)])
    return frac @ cell


def region_norm(d: np.ndarray, shape: str) -> np.ndarray:
    """|d|_inf for a periodic (cube) region, |d|_2 for a cluster (sphere)."""
    return np.abs(d).max(axis=1) if shape == "periodic" else np.linalg.norm(d, axis=1)


def half_width_estimate(n_atoms: int, volume: float, rule: CarveRule) -> float:
    """h of a region holding rule.max_atoms atoms at the parent's mean density."""
    v = rule.max_atoms * volume / n_atoms
    return 0.5 * v ** (1 / 3) if rule.shape == "periodic" else (3 * v / (4 * np.pi)) ** (1 / 3)


def _inner_width(cell: np.ndarray, pbc) -> float:
    """Shortest distance between opposite faces of the cell, over periodic directions."""
    volume = abs(np.linalg.det(cell))
    widths = [volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)]
    return min((w for w, p in zip(widths, pbc) if p), default=np.inf)


# ---- the three steps, each a pure function of what the ranks exchange ----------------------------
def best_candidate(own: OwnedAtoms, centres: np.ndarray, cell, pbc, exclude: float, shape: str):
    """(f_i, -tag, position) of this rank's most uncertain atom outside `exclude` of every chosen
    centre, or None. f_i NaN (guard flags) counts as -1: the lowest atom ID wins then."""
    f = np.where(np.isfinite(own.f_i), own.f_i, -1.0)
    free = np.ones(len(f), bool)
    for c in centres:
        free &= region_norm(minimum_image(own.positions - c, cell, pbc), shape) >= exclude
    if not free.any():
        return None
    key = np.lexsort((own.tags[free], -f[free]))[0]  # largest f_i, then smallest ID
    i = np.flatnonzero(free)[key]
    return float(f[i]), -int(own.tags[i]), own.positions[i].copy()


def region_atoms(own: OwnedAtoms, centre: np.ndarray, cell, pbc, h: float, shape: str):
    """This rank's atoms within half-width h of the centre: (tags, numbers, displacements, f_i)."""
    d = minimum_image(own.positions - centre, cell, pbc)
    inside = region_norm(d, shape) < h
    return own.tags[inside], own.numbers[inside], d[inside], own.f_i[inside]


def build_cell(parts, rule: CarveRule, h_max: float) -> Atoms:
    """One carved cell from every rank's region_atoms(): the largest h <= h_max with at most
    max_atoms atoms; parent IDs in arrays['id'], the core as force weights (pylal.fit.design.mask_forces)."""
    tags, numbers, d, f_i = (np.concatenate(c) for c in zip(*parts))
    order = np.argsort(tags)
    tags, numbers, d, f_i = tags[order], numbers[order], d[order], f_i[order]
    r = region_norm(d, rule.shape)
    h = h_max
    if len(r) > rule.max_atoms:  # halfway between the last atom kept and the first one left out
        s = np.sort(r)
        h = 0.5 * (s[rule.max_atoms - 1] + s[rule.max_atoms])
    inside = r < h
    core = r < h - rule.margin
    if not core.any():
        raise CarveError(f"label_max_atoms {rule.max_atoms} leaves no core inside carve_margin {rule.margin:g} A "
                         f"(region half-width {h:.3g} A); raise label_max_atoms or lower carve_margin")
    if rule.shape == "periodic":
        side, pbc = 2 * h + rule.gap, True
    else:
        side, pbc = 2 * h + 2 * rule.gap, False
    atoms = Atoms(numbers=numbers[inside], positions=d[inside] + 0.5 * side, cell=np.eye(3) * side, pbc=pbc)
    atoms.arrays["id"] = tags[inside].astype(int)
    atoms.arrays["f_i"] = f_i[inside]
    mask_forces(atoms, core[inside])
    atoms.info.update(carve_centre_id=int(tags[np.argmin(r)]), carve_shape=rule.shape, carve_half_width=float(h),
                      carve_margin=float(rule.margin), carve_gap=float(rule.gap))
    return atoms


# ---- the collective driver --------------------------------------------------------------------
def carve(own: OwnedAtoms, cell: np.ndarray, pbc, rule: CarveRule, comm) -> list[Atoms] | None:
    """Carved cells of the configuration whose owned atoms on this rank are `own` (collective over
    comm: allgather, gather, bcast and sum as in pylal.lammps.comm.Collectives). Returns the cells
    (most uncertain region first) on rank 0, None on the other ranks. Raises CarveError on every rank."""
    cell = np.asarray(cell, float)
    n_atoms = int(comm.sum(float(len(own.tags))))
    h_max = REGION_SLACK * half_width_estimate(n_atoms, abs(np.linalg.det(cell)), rule)
    width = _inner_width(cell, pbc)
    if 2 * h_max >= width:  # each atom must appear once in a region (and its minimum image be exact)
        raise CarveError(f"label_max_atoms {rule.max_atoms}: the carved region (about {2 * h_max:.3g} A wide) is not "
                         f"narrower than the cell ({width:.3g} A); carve only cells much larger than label_max_atoms")
    centres, first = [], None
    while len(centres) < rule.max_regions:  # greedy: regions do not overlap (2 h_max apart)
        found = [c for c in comm.allgather(best_candidate(own, np.array(centres), cell, pbc, 2 * h_max, rule.shape))
                 if c is not None]
        if not found:
            break
        f, _, x = max(found, key=lambda c: (c[0], c[1]))
        first = f if first is None else first
        if centres and f < rule.min_ratio * first:
            break
        centres.append(x)
    parts = comm.gather([region_atoms(own, c, cell, pbc, h_max, rule.shape) for c in centres])
    result = None
    if comm.rank == 0:
        try:
            result = [build_cell([p[k] for p in parts], rule, h_max) for k in range(len(centres))]
        except CarveError as err:
            result = err
    error = comm.bcast(result if isinstance(result, CarveError) else None)
    if error is not None:
        raise error
    return result
