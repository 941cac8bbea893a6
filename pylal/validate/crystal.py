"""Diamond-crystal properties of any ASE calculator: lattice constant, bulk modulus, elastic constants.

All on the cubic 8-atom diamond cell (the cell is periodic, so this is the bulk crystal).

- ``equation_of_state``: the energy minimum over the lattice constant a (bounded Brent search), then
  E(V) on ``n_points`` lattice constants within +-``span`` of it, fitted with the Birch-Murnaghan EOS
  (``ase.eos.EquationOfState``): a0 = V0^(1/3), B = V d2E/dV2 at V0.
- ``elastic_constants``: C_ij = d sigma_i / d eps_j (Voigt; ASE stress, positive in tension) by
  central differences, sigma(+delta) - sigma(-delta) over 2 delta, for the six strains of the
  equilibrium cell (engineering shear strains). Each strained cell is evaluated twice: with the atoms
  at the homogeneously strained positions (unrelaxed, C44^0) and after relaxing the internal
  coordinates at fixed cell (BFGS to ``fmax``). Diamond has two atoms per primitive cell; a shear
  strain moves the sublattices against each other (Kleinman internal strain), so only the relaxed
  C44 is the physical one. Normal strains leave the atoms at symmetric sites (relaxation is a no-op).
  The full 6x6 tensor is returned; C11, C12, C44 are averages over the cubic-equivalent entries and
  ``cubic_deviation`` is the largest departure of the tensor from that cubic form (a check).

Any other crystal: ``CrystalSettings(structure=spec)`` (pylal/validate/structure.py: ase.build.bulk
kwargs with repeat and a random substitution, or a file). The cell is scaled isotropically by s
(search within +-``search``, E(V) on ``n_points`` scales within +-``span``), and at every volume the
internal coordinates are relaxed at fixed cell (BFGS to ``fmax``: a no-op where symmetry fixes them,
needed for wurtzite's u or a disordered alloy; the bracket search itself is on the unrelaxed cell);
a non-cubic cell (hcp, wurtzite) also relaxes its shape
at fixed volume (ASE FrechetCellFilter, constant_volume: c/a). Rows: V0 (A^3/atom) and B always; a0
(the nominal cubic lattice constant times s0) and C_ij only for a cubic Bravais lattice (CUB, FCC,
BCC). A randomly substituted cubic cell is not cubic-symmetric: its C11, C12, C44 are the averages over
the cubic-equivalent entries of its full tensor and ``cubic_deviation`` says how far it is from cubic.
The diamond default (``structure=None``) keeps its historical protocol: no relaxation in the E(V).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from ase import units
from ase.build import bulk
from ase.eos import EquationOfState
from ase.optimize import BFGS

from pylal.validate.stability import UnstableError, check_finite
from pylal.validate.structure import build_structure, lattice_info


@dataclasses.dataclass
class CrystalSettings:
    symbol: str = "Si"
    a_guess: float = 5.431  # A; the minimum is searched within +-search of it
    search: float = 0.15  # relative bracket of the lattice-constant search
    span: float = 0.02  # relative range of a in the E-V fit (+-2% in a, +-6% in V)
    n_points: int = 9  # E-V points
    strain: float = 0.005  # strain amplitude of the central differences
    fmax: float = 1e-5  # eV/A, internal relaxation at fixed cell
    relax_steps: int = 200  # BFGS steps before a relaxation counts as failed
    # None: diamond `symbol` at a_guess (the historical default); else a structure spec
    # (pylal/validate/structure.py), e.g. {"bulk": {"name": "Cu", "crystalstructure": "fcc", "a": 3.6}}
    structure: dict | None = None


def cell_info(settings: CrystalSettings) -> dict:
    """{"cubic", "a" (nominal lattice constant or None), "lattice", "n_atoms"} of the settings' cell."""
    if settings.structure is None:
        return {"cubic": True, "a": settings.a_guess, "lattice": "CUB", "n_atoms": 8}
    atoms = build_structure(settings.structure)
    return {**lattice_info(settings.structure, atoms), "n_atoms": len(atoms)}


def diamond_cell(a: float, symbol: str = "Si"):
    return bulk(symbol, "diamond", a, cubic=True)


def crystal_cell(settings: CrystalSettings, scale: float = 1.0):
    """The settings' cell scaled isotropically by `scale` (diamond default: a = a_guess * scale)."""
    if settings.structure is None:
        return diamond_cell(settings.a_guess * scale, settings.symbol)
    atoms = build_structure(settings.structure)
    atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
    return atoms


def _relax(atoms, settings: CrystalSettings, shape: bool = False):
    """Internal coordinates (and with `shape` the cell shape at fixed volume) relaxed, BFGS to fmax."""
    target = atoms
    if shape:
        from ase.filters import FrechetCellFilter

        target = FrechetCellFilter(atoms, constant_volume=True)
    opt = BFGS(target, logfile=None)
    if not opt.run(fmax=settings.fmax, steps=settings.relax_steps):
        fmax = np.linalg.norm(atoms.get_forces(), axis=1).max()
        raise UnstableError(f"relaxation{' (positions and shape)' if shape else ''} not converged in "
                            f"{settings.relax_steps} steps (max force {fmax:.2e} eV/A)")
    return atoms


def _energy(calc, scale: float, settings: CrystalSettings, cubic: bool = True, relax: bool = True) -> float:
    atoms = crystal_cell(settings, scale)
    atoms.calc = calc
    if relax and settings.structure is not None:  # the same relaxation for every calculator (a no-op by symmetry)
        _relax(atoms, settings, shape=not cubic)
    e = atoms.get_potential_energy()
    check_finite(f"energy at volume scale {scale:.5f}", e)
    return float(e)


def equation_of_state(calc, settings: CrystalSettings = CrystalSettings()) -> dict:
    """a0 (A; cubic lattices only), V0 (A^3/atom), B (GPa), energy per atom at the minimum (eV) and the
    E(V) points (cell volumes, and "a": the lattice constants of a cubic cell)."""
    from scipy.optimize import minimize_scalar

    s = settings
    info = cell_info(s)
    a_ref = info["a"] or 1.0
    lo, hi = 1 - s.search, 1 + s.search
    # the search on the unrelaxed cell (robust: far from the minimum a relaxation may wander off), the
    # E(V) points around its minimum relaxed
    res = minimize_scalar(lambda x: _energy(calc, x, s, info["cubic"], relax=False), bounds=(lo, hi),
                          method="bounded", options={"xatol": 1e-4 / a_ref})
    s_min = float(res.x)
    if not lo + 0.01 < s_min < hi - 0.01:
        what = f"diamond {s.symbol}" if s.structure is None else "the structure"
        raise UnstableError(f"no energy minimum of {what} for a in [{lo * a_ref:.3f}, {hi * a_ref:.3f}] A "
                            f"(search ended at a = {s_min * a_ref:.3f} A)" if info["cubic"] else
                            f"no energy minimum of {what} for volume scales in [{lo:.3f}, {hi:.3f}]^3 "
                            f"(search ended at {s_min:.3f})")
    scales = s_min * np.linspace(1 - s.span, 1 + s.span, s.n_points)
    energies = np.array([_energy(calc, x, s, info["cubic"]) for x in scales])
    cell = crystal_cell(s)
    n_atoms, v_ref = len(cell), cell.get_volume()
    volumes = v_ref * scales**3
    try:
        v0, e0, b = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    except (RuntimeError, ValueError) as err:  # curve_fit did not converge
        raise UnstableError(f"Birch-Murnaghan fit failed: {err}") from None
    check_finite("EOS fit", [v0, e0, b])
    if not volumes[0] < v0 < volumes[-1] or b <= 0:
        raise UnstableError(f"Birch-Murnaghan fit without a minimum in range (V0 {v0:.2f} A^3, B {b:.3g})")
    out = {"B": float(b / units.GPa), "e0_per_atom": float(e0 / n_atoms)}
    if info["cubic"]:
        out["a0"] = float(a_ref * (v0 / v_ref) ** (1 / 3))
        out["a"] = (a_ref * scales).tolist()
    if s.structure is not None:
        out["V0"] = float(v0 / n_atoms)
        out["volumes"] = volumes.tolist()
    out["energies"] = energies.tolist()
    return {"a0": out.pop("a0"), **out} if "a0" in out else out


def voigt_strain_matrix(j: int, delta: float) -> np.ndarray:
    """Symmetric strain tensor of Voigt component j (0-5: xx yy zz yz xz xy) with engineering shear."""
    pairs = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    eps = np.zeros((3, 3))
    p, q = pairs[j]
    if p == q:
        eps[p, p] = delta
    else:
        eps[p, q] = eps[q, p] = delta / 2  # engineering strain gamma = 2 eps_pq = delta
    return eps


def _strained_stresses(calc, cell_atoms, eps, settings: CrystalSettings):
    """ASE Voigt stress (eV/A^3) of the strained cell: atoms strained homogeneously, then relaxed."""
    atoms = cell_atoms.copy()
    atoms.set_cell(cell_atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)  # rows: x' = (1 + eps) x
    atoms.calc = calc
    unrelaxed = atoms.get_stress().copy()
    check_finite("stress", unrelaxed)
    _relax(atoms, settings)  # moves positions only: the cell stays fixed
    relaxed = atoms.get_stress().copy()
    check_finite("stress after relaxation", relaxed)
    return unrelaxed, relaxed


def cubic_average(c: np.ndarray) -> tuple[float, float, float, float]:
    """C11, C12, C44 averaged over the cubic-equivalent entries, and the largest deviation from
    that cubic form (including entries that must vanish)."""
    c11 = np.mean(np.diag(c)[:3])
    c12 = np.mean([c[0, 1], c[0, 2], c[1, 2], c[1, 0], c[2, 0], c[2, 1]])
    c44 = np.mean(np.diag(c)[3:])
    cubic = np.zeros((6, 6))
    cubic[:3, :3] = c12
    cubic[[0, 1, 2], [0, 1, 2]] = c11
    cubic[[3, 4, 5], [3, 4, 5]] = c44
    return float(c11), float(c12), float(c44), float(np.abs(c - cubic).max())


def elastic_constants(calc, a0: float, settings: CrystalSettings = CrystalSettings()) -> dict:
    """Relaxed and unrelaxed 6x6 tensors (GPa) at lattice constant a0 and their cubic averages (a cubic
    cell; with a structure spec, the unstrained cell is relaxed at a0 first)."""
    info = cell_info(settings)
    if not info["cubic"]:
        raise ValueError(f"elastic constants need a cubic cell, not a {info['lattice']} lattice")
    cell = crystal_cell(settings, a0 / info["a"])
    if settings.structure is not None:
        cell.calc = calc
        _relax(cell, settings)
        cell = cell.copy()
    d = settings.strain
    relaxed, unrelaxed = np.zeros((6, 6)), np.zeros((6, 6))
    for j in range(6):
        u_plus, r_plus = _strained_stresses(calc, cell, voigt_strain_matrix(j, d), settings)
        u_minus, r_minus = _strained_stresses(calc, cell, voigt_strain_matrix(j, -d), settings)
        unrelaxed[:, j] = (u_plus - u_minus) / (2 * d)
        relaxed[:, j] = (r_plus - r_minus) / (2 * d)
    relaxed, unrelaxed = relaxed / units.GPa, unrelaxed / units.GPa
    c11, c12, c44, dev = cubic_average(relaxed)
    c44_0 = float(np.mean(np.diag(unrelaxed)[3:]))
    return {"C11": c11, "C12": c12, "C44": c44, "C44_unrelaxed": c44_0, "cubic_deviation": dev,
            "C": relaxed.tolist(), "C_unrelaxed": unrelaxed.tolist()}


def crystal_properties(calc, settings: CrystalSettings = CrystalSettings()) -> dict:
    """EOS and (cubic cells) elastic constants; the elastic constants at the calculator's own a0."""
    eos = equation_of_state(calc, settings)
    if "a0" not in eos:
        return eos
    return {**eos, **elastic_constants(calc, eos["a0"], settings)}
