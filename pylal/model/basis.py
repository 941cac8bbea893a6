"""Linear, body-ordered atomic basis B_i (ACE correlation order 2) in JAX.

For centre atom i and neighbour j at displacement r_ij (|r_ij| < r_cut):

    A_i[a, n, lm] = sum_j W[z_j, a] R_n(|r_ij|) Y_lm(r_ij / |r_ij|)          (atomic density)
    pair (2-body):  A_i[a, n, 00]
    3-body:         p_i[(a1 n1), (a2 n2), l] = sum_m A_i[a1 n1 lm] A_i[a2 n2 lm]

Chemical channels a: with `chem_channels = 0` (or >= the number of species S) W is the one-hot of the
neighbour's species (one density per species: the 3-body block grows like S^2 per centre species, the
basis like S^3). With 0 < chem_channels = k < S the densities are compressed to k fixed linear
combinations of the species densities ("alchemical compression": Willatt, Musil & Ceriotti, PCCP 20,
29661 (2018); Lopanitsyna, Fraux, Langer & Ceriotti, Phys. Rev. Mater. 7, 045802 (2023) learn W,
tensor-reduced ACE (Darby et al., npj Comput. Mater. 9, 39 (2023)) uses the same idea), so the basis
grows linearly with S. W here is fixed, not learned (the model stays linear): the first k rows of the
orthonormal DCT-II over the species ordered by atomic number: a = 0 the total density, a = 1 a
contrast light-vs-heavy, a = 2 light+heavy vs middle, ... (`chemical_embedding`).

The power spectrum p is invariant to rotations (sum over m of a real-SH product), to
permutations of like neighbours (sums), and to translations (only r_ij enter).
The centre species selects the block of the coefficient vector (one-hot in species).

Radial functions R_n(r) = T_n(x(r)) * (1 - r/r_cut)^3, with x mapping [r_min, r_cut] to
[-1, 1] and saturating smoothly below r_min (bounded extrapolation to close contacts); the envelope makes energy, forces and their first derivative vanish at the cutoff.
Spherical harmonics come from sphericart (maintained, fast; real SH, lexicographic lm).
"""
from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import sphericart.jax as sphericart_jax

from pylal.model.zbl import prior_from_json, prior_to_json, switch_radii

jax.config.update("jax_enable_x64", True)


@dataclasses.dataclass(frozen=True)
class BasisSpec:
    """Everything that defines the basis; stored in the parameter file header."""

    species: tuple[str, ...]
    r_cut: float = 3.8
    r_min: float = 1.5
    n_max: int = 8
    l_max: int = 4
    # compressed chemical channels of the neighbour density (0: one per species, see the module docstring)
    chem_channels: int = 0
    # Short-range repulsive prior: ZBL, switched off smoothly between r_on and r_off (Angstrom), or
    # "covalent" (a window per species pair); None disables it. See pylal.model.zbl.switch_radii.
    prior: tuple[float, float] | str | None = "covalent"

    def __post_init__(self):
        if not self.species:
            raise ValueError("BasisSpec: species must name at least one element")
        if self.r_cut <= self.r_min:
            raise ValueError(f"BasisSpec: r_cut={self.r_cut} must exceed r_min={self.r_min}")
        if self.n_max < 1 or self.l_max < 0:
            raise ValueError("BasisSpec: need n_max >= 1 and l_max >= 0")
        if self.chem_channels < 0:
            raise ValueError(f"BasisSpec: chem_channels={self.chem_channels} must be >= 0 (0: one per species)")
        if self.prior is not None:
            switch_radii(self.species, self.prior)  # a clear error for a bad prior

    @property
    def n_species(self) -> int:
        return len(self.species)

    @property
    def n_chemical(self) -> int:
        """Chemical channels of the density: chem_channels, or one per species."""
        k = self.chem_channels
        return self.n_species if k == 0 or k >= self.n_species else k

    @property
    def n_channels(self) -> int:
        return self.n_chemical * self.n_max

    @property
    def n_per_species(self) -> int:
        """Features per centre species: constant + pair + 3-body."""
        c = self.n_channels
        return 1 + c + (self.l_max + 1) * c * (c + 1) // 2

    @property
    def size(self) -> int:
        """Length D of the full coefficient vector (all centre species)."""
        return self.n_species * self.n_per_species

    def to_dict(self) -> dict:
        return spec_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BasisSpec":
        return spec_from_fields(cls, d)

    # --- from a [fit] table, and the ladder of a basis that grows (pylal.fit.growth) ---
    LADDER = ((4, 3), (6, 3), (6, 4), (8, 4))  # (n_max, l_max)

    @classmethod
    def size_unset(cls, fit_cfg) -> bool:
        return fit_cfg.n_max == 0 and fit_cfg.l_max == -1

    @classmethod
    def from_config(cls, fit_cfg) -> "BasisSpec":
        """[fit] species, r_cut, r_min, n_max, l_max, chem_channels, prior; unset sizes: the ladder's first step."""
        r_min = fit_cfg.r_min or default_r_min(fit_cfg.species)
        return cls(species=tuple(fit_cfg.species), r_cut=fit_cfg.r_cut, r_min=r_min,
                   n_max=fit_cfg.n_max or cls.LADDER[0][0], l_max=fit_cfg.l_max if fit_cfg.l_max >= 0 else cls.LADDER[0][1],
                   chem_channels=fit_cfg.chem_channels, prior=prior_from_json(fit_cfg.prior or None))

    def grown(self) -> "BasisSpec | None":
        """The next step of the ladder (None: at or beyond its top)."""
        larger = [s for s in self.LADDER if s > (self.n_max, self.l_max) and s[0] >= self.n_max and s[1] >= self.l_max]
        return dataclasses.replace(self, n_max=larger[0][0], l_max=larger[0][1]) if larger else None

    def size_label(self) -> str:
        return f"n_max {self.n_max}, l_max {self.l_max}, D {self.size}"

    def kernel(self):
        return None  # no compiled force kernel: forces by autodiff, member forces by member_gradients

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    kind = "power"  # pylal's own power-spectrum basis; pylal.model.ace.AceSpec is ace-jax's ACE basis

    # --- the basis interface used by pylal.model.committee and pylal.fit (shared with AceSpec) ---
    def arrays(self):
        return None  # no arrays: the basis is all code (AceSpec passes its tables here)

    def atomic_features(self, vectors, centers, center_species, neighbor_species, n_centers, pair_mask, arrays):
        """Per-centre features d_i (n_centers, n_per_species); padded pairs lie beyond r_cut."""
        return atomic_features(self, vectors, centers, neighbor_species, n_centers)

    def member_pair_gradients(self, vectors, centers, slots, n_slots, center_species, neighbor_species,
                              pair_mask, node_species, coefs, arrays):
        """dE^m/dr_p (M, P, 3) for coefs (M, S, n_per_species) (pylal.model.member_gradients)."""
        from pylal.model.member_gradients import member_gradients, pair_expansion

        expansion = pair_expansion(self, vectors, centers, neighbor_species, node_species.shape[0])
        return member_gradients(self, expansion, centers, slots, pair_mask, node_species, n_slots, coefs)

    def degrees(self) -> np.ndarray:
        return basis_degrees(self)

    def constant_columns(self) -> np.ndarray:
        return constant_columns(self)


R_MIN_FRACTION = 0.65  # r_min / shortest distance: Si 1.5 / 2.35, Al-Cu 2.0 / 2.86, C-H 0.7 / 1.09 (tuned by hand)


def default_r_min(species, structures=()) -> float:
    """r_min when the user does not set it: R_MIN_FRACTION x the shortest interatomic distance of the
    given structures (periodic images included), or, without structures, of the shortest covalent bond
    of the species (sum of ASE's covalent radii); rounded down to 0.05 A. Below r_min the radial functions
    saturate, so r_min must lie below every bond length the dynamics visits often."""
    from ase.data import atomic_numbers, covalent_radii

    shortest = [shortest_distance(a) for a in structures if len(a) > 1]
    shortest = [d for d in shortest if d > 0]
    if shortest:
        d = min(shortest)
    else:
        radii = [covalent_radii[atomic_numbers[e]] for e in species]
        d = 2 * min(radii)
    return max(0.05, np.floor(R_MIN_FRACTION * d / 0.05) * 0.05)


def shortest_distance(atoms) -> float:
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", atoms, 4.0)
    return float(d.min()) if len(d) else 0.0


def spec_dict(spec) -> dict:
    """A frozen spec dataclass as a JSON-ready dict (lists for species and prior)."""
    d = dataclasses.asdict(spec)
    d["species"] = list(spec.species)
    d["prior"] = prior_to_json(spec.prior)
    return d


def spec_from_fields(cls, d: dict):
    """`cls(**d)` with tuples restored; unknown keys are an error naming them."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    d = dict(d)
    d["species"] = tuple(d["species"])
    if "prior" in d:
        d["prior"] = prior_from_json(d["prior"])
    return cls(**d)


SATURATION = 0.05  # how far below -1 the Chebyshev argument may go (T_n(-1.05) <= cosh(n acosh 1.05))


def radial_basis(spec: BasisSpec, r):
    """Chebyshev polynomials times a (1 - r/r_cut)^3 envelope; zero beyond r_cut. r: (P,)."""
    x = 2.0 * (r - spec.r_min) / (spec.r_cut - spec.r_min) - 1.0
    # below r_min x saturates smoothly at -1 - SATURATION (value, first and second derivative match at
    # r_min): polynomials of x stay bounded, so a fit cannot explode at close contacts (the ZBL prior
    # and the data decide the energy there), where T_n(x < -1) grows like |2x|^n
    x = jnp.where(x < -1.0, -1.0 + SATURATION * jnp.tanh((x + 1.0) / SATURATION), x)
    t = [jnp.ones_like(x), x]
    for _ in range(2, spec.n_max):
        t.append(2.0 * x * t[-1] - t[-2])
    u = jnp.clip(1.0 - r / spec.r_cut, 0.0, None)
    return jnp.stack(t[: spec.n_max], axis=-1) * (u**3)[:, None]


def chemical_embedding(spec: BasisSpec) -> np.ndarray:
    """W (S, n_chemical): row z holds species z's weight in each chemical channel of the density.
    One-hot without compression; else the first rows of the orthonormal DCT-II over the species
    ordered by atomic number (W = I when n_chemical = S would span the same features)."""
    s, k = spec.n_species, spec.n_chemical
    if k == s:
        return np.eye(s)
    from ase.data import atomic_numbers

    rank = np.argsort(np.argsort([atomic_numbers[e] for e in spec.species]))
    a = np.arange(k)
    w = np.cos(np.pi * a[None, :] * (rank[:, None] + 0.5) / s) * np.sqrt(2.0 / s)
    w[:, 0] = np.sqrt(1.0 / s)
    return w


def density_channels(spec: BasisSpec, radial, neighbor_species):
    """R_c (P, C) of every pair: the radial functions times the neighbour's chemical weights."""
    weights = jnp.asarray(chemical_embedding(spec), dtype=radial.dtype)[neighbor_species]  # (P, K)
    return (weights[:, :, None] * radial[:, None, :]).reshape(radial.shape[0], spec.n_channels)


def _triu(c: int):
    return np.triu_indices(c)


def atomic_features(spec: BasisSpec, vectors, centers, neighbor_species, n_centers: int):
    """Per-centre basis vectors d_i (n_centers, n_per_species) (without the species one-hot).

    vectors: (P, 3) pair displacements r_j - r_i; padded pairs must have |r| >= r_cut.
    centers: (P,) centre index in [0, n_centers); neighbor_species: (P,) species index.
    """
    r = jnp.linalg.norm(vectors, axis=-1)
    radial = radial_basis(spec, r)  # (P, N)
    ylm = sphericart_jax.spherical_harmonics(vectors, spec.l_max)  # (P, LM)
    channel = density_channels(spec, radial, neighbor_species)  # (P, K*N)
    density = jax.ops.segment_sum(
        channel[:, :, None] * ylm[:, None, :], centers, num_segments=n_centers
    )  # (n_centers, C, LM)
    return power_spectrum(spec, density)


def power_spectrum(spec: BasisSpec, density):
    """d_i = [1, A_i[c,00], p_l[c,d] = sum_m A_i[c,lm] A_i[d,lm] (c <= d, l = 0..l_max)]."""
    n_centers = density.shape[0]
    iu, ju = _triu(spec.n_channels)
    blocks = [jnp.ones((n_centers, 1), density.dtype), density[:, :, 0]]
    for l in range(spec.l_max + 1):
        a_l = density[:, :, l * l : (l + 1) * (l + 1)]
        p_l = jnp.einsum("icm,idm->icd", a_l, a_l)
        blocks.append(p_l[:, iu, ju])
    return jnp.concatenate(blocks, axis=1)


def basis_degrees(spec: BasisSpec) -> np.ndarray:
    """Polynomial degree of every coefficient (D,), in the order of `power_spectrum` per centre
    species: constant 0, pair channel (z, n) n + 1, 3-body (c1, c2, l) n1 + n2 + 2 + l (n: Chebyshev
    order). The fit's smoothness prior (pylal.fit.bayes) grows with it."""
    n = np.tile(np.arange(spec.n_max), spec.n_chemical)  # radial order of each channel
    iu, ju = _triu(spec.n_channels)
    blocks = [np.zeros(1), n + 1.0]
    blocks += [n[iu] + n[ju] + 2.0 + l for l in range(spec.l_max + 1)]
    return np.tile(np.concatenate(blocks), spec.n_species)


def constant_columns(spec: BasisSpec) -> np.ndarray:
    """Index of the constant feature (number of atoms of the species) in each species block."""
    return np.arange(spec.n_species) * spec.n_per_species
