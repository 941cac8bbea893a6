"""The field's ACE basis, built and evaluated by ace-jax (ACEsuit, pinned in pyproject), as a pylal basis.

Per centre atom i of species z_i the features are

    d_i = [1, P_i (n_pair pair functions), B_i (n_B symmetric ACE functions of correlation order <= order)]

Two radial families (`AceSpec.radial`):
- "sbessel": PACE's simplified spherical Bessel radials g_k(r) (Drautz 2019; pacemaker's
  SBessel), R_nl = g_n, with spherical harmonics, and no separate pair basis (the two-body part is the
  order-1 ACE functions, sum_j g_n(r_ij)). This is ML-PACE's own functional form, so the fitted potential is
  written exactly as a `.yace` that released `pair_style pace` and `pace/kk` read (pylal.model.export).
- "poly" (the default; its accuracy and calibration are the measured ones): ACEpotentials' polynomial
  radials (Witt et al. 2023) with solid harmonics and a pair basis. It exports only as tabulated radials,
  which released ML-PACE cannot read.

with ace-jax's species-compact radials (the neighbour species enters through the radial R_nl(r; z_i, z_j),
not as a separate density channel, so D grows linearly with the species count, not with its square).
As for pylal's own basis, the centre species selects the block of the coefficient vector, so the
committee energies are E^k = c^k . (sum_i of the species-blocked d_i) (HAL sec. 2) and everything built
on `atomic_features` (committee step, design rows, fit, calibration) applies unchanged.

Per-member forces (for f_i, HAL eq. 6, and the design rows) use ace-jax's
`committee_edge_grad_dense`: dE^k/dr_ij for many coefficient vectors without the explicit edge Jacobian,
on a dense (centre, neighbour slot) layout.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from pylal.model.basis import spec_dict, spec_from_fields
from pylal.model.zbl import switch_radii

jax.config.update("jax_enable_x64", True)

KIND = "ace"
RADIALS = ("sbessel", "poly")


@dataclasses.dataclass(frozen=True)
class AceSpec:
    """An ACE basis: ace-jax `build_model(species, order, max_degree, rcut=r_cut, wL=wL)`."""

    species: tuple[str, ...]
    r_cut: float = 3.8
    order: int = 2  # correlation order (body order - 1)
    max_degree: int = 16  # total-degree bound of ace-jax's basis selection
    wL: float = 1.5  # weight of l against n in the total degree
    radial: str = "poly"  # "poly" or "sbessel" (ML-PACE's radials: exact export; module docstring)
    # Short-range repulsive ZBL prior switched off between (r_on, r_off) Angstrom, or "covalent": a window
    # per species pair from covalent radii (pylal.model.zbl.switch_radii); None disables it
    prior: tuple[float, float] | str | None = "covalent"

    def __post_init__(self):
        if not self.species:
            raise ValueError("AceSpec: species must name at least one element")
        if not 1 <= self.order <= 4:
            raise ValueError(f"AceSpec: order={self.order} must be 1..4")
        if self.radial not in RADIALS:
            raise ValueError(f"AceSpec: radial={self.radial!r} must be one of {RADIALS}")
        if self.max_degree < 1 or self.r_cut <= 0:
            raise ValueError("AceSpec: need max_degree >= 1 and r_cut > 0")
        if self.prior is not None:
            switch_radii(self.species, self.prior)  # a clear error for a bad prior

    kind = KIND

    @property
    def n_species(self) -> int:
        return len(self.species)

    @property
    def n_pair(self) -> int:
        """Pair functions in d_i: none with the "sbessel" radials (their order-1 functions are the pair part)."""
        return 0 if self.radial == "sbessel" else int(ace_basis(self).meta["n_pair"])

    @property
    def n_many_body(self) -> int:
        return int(ace_basis(self).meta["n_B"])

    @property
    def n_per_species(self) -> int:
        """Features per centre species: constant + pair + many-body."""
        return 1 + self.n_pair + self.n_many_body

    @property
    def size(self) -> int:
        return self.n_species * self.n_per_species

    def to_dict(self) -> dict:
        return {**spec_dict(self), "kind": KIND}

    @classmethod
    def from_dict(cls, d: dict) -> "AceSpec":
        return spec_from_fields(cls, {k: v for k, v in d.items() if k != "kind"})

    # --- from a [fit] table, and the ladder of a basis that grows (pylal.fit.growth) ---
    LADDER = (10, 12, 14, 16, 18)  # max_degree

    @classmethod
    def size_unset(cls, fit_cfg) -> bool:
        return fit_cfg.max_degree == 0

    @classmethod
    def from_config(cls, fit_cfg) -> "AceSpec":
        """[fit] species, r_cut, order, max_degree, wL, radial, prior; an unset max_degree: the ladder's first step."""
        from pylal.model.zbl import prior_from_json

        return cls(species=tuple(fit_cfg.species), r_cut=fit_cfg.r_cut, order=fit_cfg.order,
                   max_degree=fit_cfg.max_degree or cls.LADDER[0], wL=fit_cfg.wL, radial=fit_cfg.radial,
                   prior=prior_from_json(fit_cfg.prior or None))

    def grown(self) -> "AceSpec | None":
        larger = [d for d in self.LADDER if d > self.max_degree]
        return dataclasses.replace(self, max_degree=larger[0]) if larger else None

    def size_label(self) -> str:
        return f"max_degree {self.max_degree}, D {self.size}"

    def kernel(self):
        """ace-jax's C++ force kernel (pylal.model.ace_kernel), or None (with a warning) where it cannot be
        compiled: the forces then come from ace-jax's XLA path (exact radial, slower)."""
        import warnings

        from pylal.model.ace_kernel import KernelUnavailable, ace_kernel

        try:
            return ace_kernel(self)
        except KernelUnavailable as e:
            warnings.warn(f"{e}: the ACE forces fall back to ace-jax's XLA path (exact radial, slower)")
            return None

    # --- the basis interface used by pylal.model.committee and pylal.fit ---
    def arrays(self):
        """The arrays of the ace-jax model: pass them into compiled code as an argument (`model(arrays)`
        inside) so XLA does not constant-fold the coupling tables (minutes of compilation otherwise)."""
        import equinox as eqx

        return eqx.filter(ace_basis(self).model, eqx.is_array)

    def model(self, arrays):
        import equinox as eqx

        return eqx.combine(arrays, eqx.filter(ace_basis(self).model, eqx.is_array, inverse=True))

    def atomic_features(self, vectors, centers, center_species, neighbor_species, n_centers, pair_mask, arrays):
        """Per-centre features d_i (n_centers, n_per_species). vectors (P, 3) r_j - r_i; centre_species and
        neighbor_species per pair; pair_mask (P,) 1 for real pairs; arrays: `self.arrays()`."""
        model = self.model(arrays)
        many_body, pair = model.site_basis(vectors, center_species, neighbor_species, centers, n_centers,
                                           pair_mask > 0)
        return jnp.concatenate([jnp.ones((n_centers, 1), vectors.dtype), pair[:, :self.n_pair], many_body], axis=1)

    def member_pair_gradients(self, vectors, centers, slots, n_slots, center_species, neighbor_species,
                              pair_mask, node_species, coefs, arrays):
        """dE^m/dr_p (M, P, 3) of the linear models E^m = sum_i coefs[m, z_i] . d_i (coefs (M, S, n_per_species)),
        through ace-jax's committee_edge_grad_dense on a dense (centre, slot) layout."""
        model = self.model(arrays)
        n_centers = node_species.shape[0]
        real = pair_mask > 0
        row = jnp.where(real, centers, n_centers)  # padded pairs fall outside and are dropped
        far = jnp.zeros((n_centers, n_slots, 3)).at[:, :, 0].set(2.0 * self.r_cut)
        rij = far.at[row, slots].set(vectors, mode="drop")
        zi = jnp.zeros((n_centers, n_slots), jnp.int32).at[row, slots].set(center_species, mode="drop")
        zj = jnp.zeros((n_centers, n_slots), jnp.int32).at[row, slots].set(neighbor_species, mode="drop")
        mask = jnp.zeros((n_centers, n_slots), bool).at[row, slots].set(True, mode="drop")
        n_pair = self.n_pair
        cp = jnp.moveaxis(coefs[:, :, 1:1 + n_pair], 0, -1)  # (S, n_pair, M)
        if n_pair == 0:  # "sbessel": the model's pair functions are not in d_i
            cp = jnp.zeros((cp.shape[0], model.Wpair.shape[0], cp.shape[2]), cp.dtype)
        cb = jnp.moveaxis(coefs[:, :, 1 + n_pair:], 0, -1)  # (S, n_B, M)
        t = model.committee_edge_grad_dense(rij, zi, zj, mask, node_species, cb, cp)  # (n_c, J, M, 3)
        g = t[jnp.where(real, centers, 0), slots]  # (P, M, 3)
        return jnp.moveaxis(g, 1, 0) * pair_mask[None, :, None]

    def degrees(self) -> np.ndarray:
        """Polynomial degree of every coefficient (D,), for the fit's smoothness prior (pylal.fit.bayes):
        constant 0, pair function n, many-body function sum over its bodies of (n + l)."""
        basis = ace_basis(self)
        pair = np.arange(1, self.n_pair + 1, dtype=float)
        many = np.array([sum(n + l for n, l in bodies) for bodies in basis.nnll_spec], dtype=float)
        return np.tile(np.concatenate([[0.0], pair, many]), self.n_species)

    def constant_columns(self) -> np.ndarray:
        return np.arange(self.n_species) * self.n_per_species


@functools.lru_cache(maxsize=16)
def ace_basis(spec: AceSpec):
    """The ace-jax Basis (model + meta + nnll) of a spec, built once per process (about 1 s)."""
    from ace_jax.basis.model import build_model

    basis = build_model(list(spec.species), spec.order, spec.max_degree, rcut=float(spec.r_cut), wL=spec.wL,
                        r0=bond_lengths(spec.species), rnl_basis=spec.radial)
    if spec.radial == "sbessel":  # ML-PACE's Y_lm: spherical, not solid (r^l Y_lm), harmonics
        basis = basis._replace(model=dataclasses.replace(basis.model, ysolid=False))
    return basis


def bond_lengths(species) -> np.ndarray | None:
    """ace-jax's per-pair radial scale r0 (ij) = (b_i + b_j) / 2; None (ace-jax's own default) when it tabulates
    every element. ace-jax 0.4.1 tabulates ACEpotentials' bond lengths for 76 elements but not H, He, Ne,
    Ar, ...; those take twice ASE's covalent radius (H: 0.62 A, against the tabulated C 1.4, O 1.7)."""
    from ace_jax.basis.radial_init import BOND_LEN
    from ase.data import atomic_numbers, covalent_radii

    z = [atomic_numbers[s] for s in species]
    if all(zi in BOND_LEN for zi in z):
        return None
    b = np.array([BOND_LEN.get(zi, 2.0 * covalent_radii[zi]) for zi in z])
    return 0.5 * (b[:, None] + b[None, :])
