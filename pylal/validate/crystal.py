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
"""
from __future__ import annotations

import dataclasses

import numpy as np
from ase import units
from ase.build import bulk
from ase.eos import EquationOfState
from ase.optimize import BFGS

from pylal.validate.stability import UnstableError, check_finite


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


def diamond_cell(a: float, symbol: str = "Si"):
    return bulk(symbol, "diamond", a, cubic=True)


def _energy(calc, a: float, symbol: str) -> float:
    atoms = diamond_cell(a, symbol)
    atoms.calc = calc
    e = atoms.get_potential_energy()
    check_finite(f"energy at a = {a:.4f} A", e)
    return float(e)


def equation_of_state(calc, settings: CrystalSettings = CrystalSettings()) -> dict:
    """a0 (A), B (GPa), cohesive energy per atom at the minimum (eV) and the E(a) points."""
    from scipy.optimize import minimize_scalar

    s = settings
    lo, hi = s.a_guess * (1 - s.search), s.a_guess * (1 + s.search)
    res = minimize_scalar(lambda a: _energy(calc, a, s.symbol), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-4})
    a_min = float(res.x)
    if not lo + 0.01 * s.a_guess < a_min < hi - 0.01 * s.a_guess:
        raise UnstableError(f"no energy minimum of diamond {s.symbol} for a in [{lo:.3f}, {hi:.3f}] A "
                            f"(search ended at a = {a_min:.3f} A)")
    a = a_min * np.linspace(1 - s.span, 1 + s.span, s.n_points)
    energies = np.array([_energy(calc, x, s.symbol) for x in a])
    n_atoms = len(diamond_cell(a_min, s.symbol))
    try:
        v0, e0, b = EquationOfState(a**3, energies, eos="birchmurnaghan").fit()
    except (RuntimeError, ValueError) as err:  # curve_fit did not converge
        raise UnstableError(f"Birch-Murnaghan fit failed: {err}") from None
    check_finite("EOS fit", [v0, e0, b])
    if not a[0] ** 3 < v0 < a[-1] ** 3 or b <= 0:
        raise UnstableError(f"Birch-Murnaghan fit without a minimum in range (V0 {v0:.2f} A^3, B {b:.3g})")
    return {"a0": float(v0 ** (1 / 3)), "B": float(b / units.GPa), "e0_per_atom": float(e0 / n_atoms),
            "a": a.tolist(), "energies": energies.tolist()}


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
    opt = BFGS(atoms, logfile=None)  # moves positions only: the cell stays fixed
    if not opt.run(fmax=settings.fmax, steps=settings.relax_steps):
        fmax = np.linalg.norm(atoms.get_forces(), axis=1).max()
        raise UnstableError(f"internal relaxation not converged in {settings.relax_steps} steps "
                            f"(max force {fmax:.2e} eV/A)")
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
    """Relaxed and unrelaxed 6x6 tensors (GPa) at lattice constant a0 and their cubic averages."""
    cell = diamond_cell(a0, settings.symbol)
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
    """EOS and elastic constants; the elastic constants at the calculator's own a0."""
    eos = equation_of_state(calc, settings)
    return {**eos, **elastic_constants(calc, eos["a0"], settings)}
