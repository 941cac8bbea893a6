"""Per-element Morse priors from reference dimer curves, with the mixing rules of Shuaibi et al.

    E(r) = D_e [exp(-2a(r - r_e)) - 2 exp(-a(r - r_e))]           (LAMMPS morse: D0, alpha, r0)
From the reference: the atom and the dimer give the binding curve V(r) = E_X2(r) - 2 E_X;
r_e is the relaxed dimer (minimum of V), D_e = 2 E_X - E_X2(r_e) = -V(r_e), and a is fitted to a
stretched dimer scan (Shuaibi et al. 2020, sec. "Physics prior"). Unlike species pairs mix as
D_AB = sqrt(D_A D_B), r_e,AB = (r_e,A + r_e,B) / 2, a_AB = (a_A + a_B) / 2.
The default LAMMPS style is morse/smooth/linear (energy and force go to zero at the cutoff: a hard
cutoff would break energy conservation, as the paper notes).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from pylal.prior.spec import LammpsPrior, pair_key


@dataclasses.dataclass(frozen=True)
class Morse:
    d_e: float  # well depth, eV
    r_e: float  # equilibrium distance, A
    a: float  # width parameter, 1/A

    def energy(self, r):
        x = np.exp(-self.a * (np.asarray(r, dtype=float) - self.r_e))
        return self.d_e * (x * x - 2.0 * x)

    def tail_cutoff(self, fraction: float = 0.005) -> float:
        """Distance beyond which |E| < fraction * D_e (exp(-a(r - r_e)) ~ fraction / 2)."""
        return self.r_e + math.log(2.0 / fraction) / self.a


def mix(m_a: Morse, m_b: Morse) -> Morse:
    """Mixing rules of Shuaibi et al.: geometric mean of D_e, arithmetic means of r_e and a."""
    return Morse(math.sqrt(m_a.d_e * m_b.d_e), 0.5 * (m_a.r_e + m_b.r_e), 0.5 * (m_a.a + m_b.a))


def fit_morse(r, v, d_e: float | None = None, r_e: float | None = None, window: float = 1.0) -> Morse:
    """Least-squares Morse fit to a binding curve V(r) (eV, relative to separated atoms). d_e / r_e
    given: kept fixed (only the rest is fitted). Only points with V < window * D_e enter, so the
    steep repulsive wall does not dominate the width parameter."""
    from scipy.optimize import least_squares

    r, v = np.asarray(r, dtype=float), np.asarray(v, dtype=float)
    if r.shape != v.shape or len(r) < 3:
        raise ValueError("fit_morse: need matching arrays of at least 3 distances and energies")
    i = int(np.argmin(v))
    if v[i] >= 0 or i in (0, len(r) - 1):
        raise ValueError(f"fit_morse: the curve has no bound minimum inside the scan "
                         f"(minimum {v[i]:.4g} eV at r = {r[i]:.4g} A, scan {r.min():.3g}-{r.max():.3g} A)")
    d0 = -v[i] if d_e is None else d_e
    r0 = r[i] if r_e is None else r_e
    # curvature at the minimum: V'' = 2 a^2 D_e
    h1, h2 = r[i] - r[i - 1], r[i + 1] - r[i]
    curv = 2 * (h1 * v[i + 1] - (h1 + h2) * v[i] + h2 * v[i - 1]) / (h1 * h2 * (h1 + h2))
    a0 = math.sqrt(max(curv, 1e-6) / (2 * d0))
    keep = v < window * d0
    free = [d_e is None, r_e is None, True]
    start = np.array([d0, r0, a0])

    def full(p):
        q = start.copy()
        q[np.array(free)] = p
        return q

    def residual(p):
        d, re, a = full(p)
        return Morse(d, re, a).energy(r[keep]) - v[keep]

    sol = least_squares(residual, start[np.array(free)], xtol=1e-14, ftol=1e-14, gtol=1e-14)
    d, re, a = full(sol.x)
    return Morse(float(d), float(re), float(abs(a)))


def dimer_curve(calc, element: str, distances, vacuum: float = 10.0):
    """Binding curve V(r) = E_X2(r) - 2 E_X of an isolated dimer (non-periodic box) from any ASE
    calculator; returns (distances, V)."""
    from ase import Atoms

    atom = Atoms(element, positions=[[0, 0, 0]], cell=[vacuum] * 3, pbc=False)
    atom.calc = calc
    e_atom = atom.get_potential_energy()
    out = []
    for r in distances:
        dimer = Atoms(element * 2, positions=[[0, 0, 0], [0, 0, float(r)]], cell=[vacuum, vacuum, vacuum + r], pbc=False)
        dimer.calc = calc
        out.append(dimer.get_potential_energy() - 2 * e_atom)
    return np.asarray(distances, dtype=float), np.array(out)


def dimer_morse(calc, element: str, r_min: float = 1.2, r_max: float = 5.0, n: int = 60) -> Morse:
    """Shuaibi et al.'s recipe: relax the dimer (r_e, D_e = 2 E_X - E_X2(r_e)), then fit a to the scan."""
    from scipy.optimize import minimize_scalar

    r, v = dimer_curve(calc, element, np.linspace(r_min, r_max, n))
    i = int(np.argmin(v))
    if i in (0, len(r) - 1) or v[i] >= 0:
        raise ValueError(f"{element} dimer: no bound minimum between {r_min} and {r_max} A "
                         f"(lowest V = {v[i]:.4g} eV at {r[i]:.3g} A)")

    def binding(x):
        return float(dimer_curve(calc, element, [x])[1][0])

    res = minimize_scalar(binding, bracket=(r[i - 1], r[i], r[i + 1]), tol=1e-10)
    r_e, d_e = float(res.x), float(-res.fun)
    return fit_morse(r, v, d_e=d_e, r_e=r_e)


def morse_prior(per_element: dict, cutoff: float | None = None, style: str = "morse/smooth/linear") -> LammpsPrior:
    """A LammpsPrior with every element pair: like pairs from `per_element` {element: Morse},
    unlike pairs by the mixing rules. cutoff: default the largest `tail_cutoff` of all pairs."""
    elements = sorted(per_element)
    pairs = {}
    for i, a in enumerate(elements):
        for b in elements[i:]:
            pairs[pair_key(a, b)] = per_element[a] if a == b else mix(per_element[a], per_element[b])
    if cutoff is None:
        cutoff = round(max(m.tail_cutoff() for m in pairs.values()), 3)
    coeffs = {k: (m.d_e, m.a, m.r_e) for k, m in pairs.items()}  # LAMMPS order: D0 alpha r0
    return LammpsPrior(style=style, cutoff=cutoff, coeffs=coeffs)


def morse_of(prior: LammpsPrior, a: str, b: str) -> Morse:
    """The Morse parameters a morse-style prior holds for the pair (a, b)."""
    d0, alpha, r0 = prior.coeff(a, b)[:3]
    return Morse(float(d0), float(r0), float(alpha))
