"""Committee potential: one jitted call gives the committee energies, the unbiased force F_bar and
the bias direction grad sigma~ (and, on check steps, every member's force).

Uses the linearity of E^k = c^k . B (HAL sec. 2): the committee energies need only the summed
basis B, and every force is one reverse pass through the basis with a coefficient vector as
cotangent: F_bar with c_bar, grad sigma~ with w = sum_k (E^k - E_bar)(c^k - c_bar) / (K sigma)
(HAL eqs. 9-10). Those two always come from the same reverse pass (autodiff), on check steps too;
the HAL force F_bar + tau grad sigma~ is assembled outside the compiled step (StepResult.forces,
physics.hal_forces), so tau is not an argument of the compiled code. Per-member forces for f_i
(HAL eq. 6) contract the K coefficient vectors with dE/d(density) per centre, without the explicit
pair Jacobian (`member_gradients`). ACE specs take every force from ace-jax's C++ kernel instead, one
call per coefficient vector (pylal.model.ace_kernel); the energies stay one XLA forward pass.

Atom and pair counts are padded to size buckets (see `bucket`) so MD does not recompile.
"""
from __future__ import annotations

import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from pylal.hal import physics as hal
from pylal.model.basis import BasisSpec
from pylal.model.member_gradients import neighbor_slots
from pylal.model.neighbors import PairList
from pylal.model.params import Parameters
from pylal.model.zbl import species_charges, switch_radii, zbl_pair_energy

TRACE_COUNTS: collections.Counter = collections.Counter()  # compilations per jitted function
_COMPILED: dict = {}  # shared by all models: a new calculator with the same basis does not recompile
# padded sizes per (padded centre count, headroom), grown only, so that counts fluctuating in MD (ghost atoms
# and pairs as an NPT box breathes, neighbours per centre) keep the compiled shapes
_ATOM_CAPACITY: dict = {}  # atoms (centres + ghosts)
_PAIR_CAPACITY: dict = {}  # pairs
_SLOT_CAPACITY: dict = {}  # neighbour slots per centre (member forces, kernel)
HEADROOM = 1.25  # MD steps: a size grows to 1.25x what it needs (a step's cost follows its padded size)


def bucket(n: int, minimum: int = 16) -> int:
    """Padded size: n rounded up to m * 2^k with 8 <= m < 16 (steps of at most 1/8)."""
    n = max(int(n), minimum)
    step = 1 << max(0, n.bit_length() - 4)
    return -(-n // step) * step


def step_mode(members: bool, bias: bool) -> str:
    """Which compiled step a call needs: "members" (f_i), "hal" (bias) or "mean"."""
    return "members" if members else ("hal" if bias else "mean")


def _capacity(table: dict, key: tuple, n: int, minimum: int = 16) -> int:
    """table[key], key = (padded centres, headroom), grown to bucket(headroom n) when n exceeds it; never shrinks."""
    if n > table.get(key, 0):
        table[key] = bucket(int(key[1] * n), minimum)
    return table[key]


@dataclasses.dataclass
class StepResult:
    """Global (reduced) energies and sigma; forces and virial of this process's atoms/pairs."""

    e_members: np.ndarray  # (K,) committee energies E^k (learned part, without the prior)
    e_mean: float  # E_bar = c_bar . B
    e_prior: float  # repulsive prior energy
    spread: float  # sqrt((1/K) sum_k (E^k - E_bar)^2), the committee part of sigma~
    sigma: float  # sigma~ (HAL eq. 5)
    tau: float
    forces_mean: np.ndarray  # (n_atoms, 3) prior + mean forces (unbiased)
    grad_sigma: np.ndarray  # (n_atoms, 3) grad_{r} sigma~ (bias force = tau * grad_sigma)
    virial_mean: np.ndarray  # (3, 3) LAMMPS convention, sum r_ij (x) f_ij of the unbiased forces
    virial_sigma: np.ndarray  # (3, 3) the same of grad sigma~ (bias virial = tau * virial_sigma)
    member_forces: np.ndarray | None = None  # (K, n_atoms, 3) prior + member k (unbiased)
    member_virials: np.ndarray | None = None  # (K, 3, 3) prior + member k
    atom_sigma: np.ndarray | None = None  # (n_centers,) std over members of each atom's energy

    @property
    def forces(self) -> np.ndarray:
        """F_HAL = F_bar + tau grad sigma~."""
        return hal.hal_forces(self.forces_mean, self.grad_sigma, self.tau)

    @property
    def virial(self) -> np.ndarray:
        """Virial of F_HAL (includes the bias)."""
        return hal.hal_forces(self.virial_mean, self.virial_sigma, self.tau)

    @property
    def energy(self) -> float:
        """Unbiased energy E = prior + E_bar."""
        return self.e_prior + self.e_mean

    @property
    def energy_hal(self) -> float:
        """E_HAL = E - tau sigma (HAL eq. 1)."""
        return hal.hal_energy(self.energy, self.tau, self.sigma)


def _step(spec: BasisSpec, kernel, charges, switch, mode: str, reduce_sum, n_atoms: int, n_slots: int,
          vectors, centers, neighbors, species, center_mask, energy_mask, pair_mask, slots,
          mean, committee, noise_precision, basis_arrays):
    # center_mask: real (not padded) centres, whose energies are differentiated for the forces;
    # energy_mask: centres whose energies count in E (the owned atoms; a subset when ghost
    # centres are evaluated only to complete the forces on owned atoms).
    TRACE_COUNTS["committee_step"] += 1  # runs once per compilation
    n_centers = center_mask.shape[0]
    center_species = species[:n_centers]
    neighbor_species = species[neighbors]

    def learned_features(v):
        features = spec.atomic_features if kernel is None else kernel.features
        return features(v, centers, center_species[centers], neighbor_species, n_centers, pair_mask, basis_arrays)

    def kernel_gradients(coefs, readouts):  # dE/dr_ij of each coefficient vector, one kernel call each
        return kernel.pair_gradients(vectors, centers, slots, n_slots, center_species[centers], neighbor_species,
                                     pair_mask, center_species, center_mask, coefs, readouts, basis_arrays)

    def prior_energies(v, mask):
        if spec.prior is None:
            return jnp.zeros(())
        r = jnp.linalg.norm(v, axis=-1)
        s_i, s_j = center_species[centers], neighbor_species
        r_on, r_off = switch[0][s_i, s_j], switch[1][s_i, s_j]
        # full list: each pair seen from both atoms, so half the pair energy per entry
        return 0.5 * jnp.sum(mask * zbl_pair_energy(r, charges[s_i], charges[s_j], r_on, r_off))

    if kernel is None:
        feats, pullback = jax.vjp(learned_features, vectors)  # one reverse pass per coefficient vector
    else:
        feats = learned_features(vectors)  # forward only: the forces come from the kernel
    s, dp = spec.n_species, spec.n_per_species
    b_local = jax.ops.segment_sum(feats * energy_mask[:, None], center_species, num_segments=s).reshape(-1)
    e_prior_local = prior_energies(vectors, pair_mask * energy_mask[centers])
    g_prior = jax.grad(prior_energies)(vectors, pair_mask) * pair_mask[:, None]

    local = jnp.concatenate([committee @ b_local, (mean @ b_local)[None], e_prior_local[None]])
    total = local if reduce_sum is None else reduce_sum(local)
    e_members, e_mean, e_prior = total[:-2], total[-2], total[-1]

    spread = hal.committee_spread(e_members, e_mean)
    sigma = hal.sigma_from_spread(spread, noise_precision)
    coefs = jnp.stack([mean] + ([hal.bias_coefficients(committee, mean, e_members, e_mean, sigma)]
                               if mode != "mean" else []))
    if kernel is None:
        cotangents = coefs.reshape(-1, s, dp)[:, center_species, :] * center_mask[None, :, None]
        (grads,) = jax.vmap(pullback)(cotangents)  # (M, P, 3): dE/dr_ij for each coefficient vector
        grads = grads * pair_mask[None, :, None]
    else:
        grads = kernel_gradients(coefs.reshape(-1, s, dp), kernel.readouts(coefs, basis_arrays["G"]))

    def to_forces(g):  # r_ij = x_j - x_i  ->  F_i += dE/dr_ij, F_j -= dE/dr_ij
        return (jax.ops.segment_sum(g, centers, num_segments=n_atoms)
                - jax.ops.segment_sum(g, neighbors, num_segments=n_atoms))

    def to_virial(g):  # LAMMPS W = sum_pairs (x_i - x_j) (x) f_i = -sum_p r_p (x) dE/dr_p
        return -jnp.einsum("pa,pb->ab", vectors, g)

    g_mean = grads[0] + g_prior
    g_sigma = grads[1] if mode != "mean" else jnp.zeros_like(g_mean)  # d sigma~ / dr_ij
    out = dict(e_members=e_members, e_mean=e_mean, e_prior=e_prior, spread=spread, sigma=sigma,
               forces_mean=to_forces(g_mean), grad_sigma=-to_forces(g_sigma),
               virial_mean=to_virial(g_mean), virial_sigma=-to_virial(g_sigma))
    if mode == "members":  # the K members contracted per centre (member_gradients), for f_i only
        if kernel is None:
            g_members = spec.member_pair_gradients(vectors, centers, slots, n_slots, center_species[centers],
                                                   neighbor_species, pair_mask, center_species,
                                                   committee.reshape(-1, s, dp), basis_arrays)
        else:  # member readouts computed once per hot-swap (AceKernel.arrays)
            g_members = kernel_gradients(committee.reshape(-1, s, dp), basis_arrays["members"])
        g_members = g_members + g_prior
        out["member_forces"] = jax.vmap(to_forces)(g_members)
        out["member_virials"] = jax.vmap(to_virial)(g_members)
        delta = (committee - mean).reshape(-1, s, dp)[:, center_species, :]  # (K, n_c, dp)
        out["atom_sigma"] = jnp.sqrt(jnp.mean(jnp.einsum("kcf,cf->kc", delta, feats) ** 2, axis=0))
    return out


def _kernel_for(spec, use_kernel: bool):
    """The basis's compiled force kernel (ace-jax's C++ kernel for ACE), or None: the autodiff path."""
    return spec.kernel() if use_kernel else None


class CommitteeModel:
    """Holds the parameters and the compiled step; `step(pairs, tau)` is the per-step call.

    `reduce_sum` (optional) sums a small vector over all processes (MPI allreduce); it is called
    from inside the compiled step through a host callback so every rank reaches the same sigma.

    ACE specs evaluate their forces with ace-jax's C++ kernel (pylal.model.ace_kernel; its radial table
    agrees with the exact radial to ~1e-8 of max|F|); ace_kernel=False keeps ace-jax's XLA autodiff path
    (exact features: the fit's design rows), as does a machine without a C++ compiler (with a warning).
    """

    def __init__(self, params: Parameters, reduce_sum=None, ace_kernel: bool = True, headroom: float = HEADROOM):
        self._reduce = reduce_sum
        self._headroom = float(headroom)  # padded sizes grow to headroom x the needed size
        self._use_kernel = ace_kernel
        self._kernel, self._kernel_spec = None, None
        self.set_parameters(params)

    def set_parameters(self, params: Parameters):
        """Hot-swap: same basis spec keeps the compiled code; a new spec recompiles."""
        self.params = params
        self.spec = params.spec
        self._mean = jnp.asarray(params.mean)
        self._committee = jnp.asarray(params.committee)
        self._noise = jnp.asarray(float(params.noise_precision))
        if self._kernel_spec != params.spec:  # the kernel is per spec; its member readouts per committee
            self._kernel, self._kernel_spec = _kernel_for(params.spec, self._use_kernel), params.spec
        self._basis_arrays = params.spec.arrays() if self._kernel is None else self._kernel.arrays(params.committee)

    def _compiled(self, mode: str, n_atoms: int, n_slots: int):
        key = (self.spec, self._kernel, mode, n_atoms, n_slots, self._reduce)
        if key not in _COMPILED:
            reduce_sum = None
            if self._reduce is not None:
                host = self._reduce

                def reduce_sum(x):
                    return jax.experimental.io_callback(
                        lambda a: np.asarray(host(np.asarray(a)), dtype=np.float64),
                        jax.ShapeDtypeStruct(x.shape, x.dtype), x, ordered=True)
            charges = jnp.asarray(species_charges(self.spec.species))
            switch = None if self.spec.prior is None else jnp.asarray(switch_radii(self.spec.species, self.spec.prior))
            fn = functools.partial(_step, self.spec, self._kernel, charges, switch, mode, reduce_sum, n_atoms,
                                   n_slots)
            _COMPILED[key] = jax.jit(fn)
        return _COMPILED[key]

    def step(self, pairs: PairList, tau: float = 0.0, members: bool = False, bias: bool = True,
             n_energy_centers: int | None = None) -> StepResult:
        """members: also each member's forces (for f_i); bias=False: mean forces only (a plain
        potential step, grad_sigma left zero; tau must be 0). n_energy_centers: only the first
        that many centres count in the energies (default all); the others still add forces."""
        if not bias and (tau != 0.0 or members):
            raise ValueError("step: bias=False needs tau == 0 and members=False")
        mode = step_mode(members, bias)
        n_c = bucket(pairs.n_centers)
        key = (n_c, self._headroom)
        n_a = _capacity(_ATOM_CAPACITY, key, pairs.n_atoms)  # >= n_c: n_atoms >= n_centers
        n_p = _capacity(_PAIR_CAPACITY, key, pairs.n_pairs)
        P = pairs.n_pairs
        vectors = np.zeros((n_p, 3))
        vectors[:, 0] = 2.0 * self.spec.r_cut  # padded pairs lie beyond the cutoff: zero features
        vectors[:P] = pairs.vectors
        centers = np.zeros(n_p, np.int32)
        centers[:P] = pairs.centers
        neighbors = np.zeros(n_p, np.int32)
        neighbors[:P] = pairs.neighbors
        species = np.zeros(n_a, np.int32)
        species[: pairs.n_atoms] = pairs.species
        center_mask = np.zeros(n_c)
        center_mask[: pairs.n_centers] = 1.0
        energy_mask = np.zeros(n_c)
        energy_mask[: pairs.n_centers if n_energy_centers is None else n_energy_centers] = 1.0
        pair_mask = np.zeros(n_p)
        pair_mask[:P] = 1.0
        slots, n_slots = np.zeros(n_p, np.int32), 0
        if members or self._kernel is not None:  # neighbour slots per centre, padded to a bucket (no recompiles)
            slots[:P], most = neighbor_slots(pairs.centers, pairs.n_centers)
            n_slots = _capacity(_SLOT_CAPACITY, key, most, minimum=8)
        out = self._compiled(mode, n_a, n_slots)(
            vectors, centers, neighbors, species, center_mask, energy_mask, pair_mask, slots,
            self._mean, self._committee, self._noise, self._basis_arrays)
        out = jax.device_get(out)
        n = pairs.n_atoms
        return StepResult(
            e_members=np.asarray(out["e_members"]), e_mean=float(out["e_mean"]),
            e_prior=float(out["e_prior"]), spread=float(out["spread"]), sigma=float(out["sigma"]),
            tau=float(tau), forces_mean=out["forces_mean"][:n], grad_sigma=out["grad_sigma"][:n],
            virial_mean=np.asarray(out["virial_mean"]), virial_sigma=np.asarray(out["virial_sigma"]),
            member_forces=out["member_forces"][:, :n] if members else None,
            member_virials=np.asarray(out["member_virials"]) if members else None,
            atom_sigma=out["atom_sigma"][: pairs.n_centers] if members else None)
