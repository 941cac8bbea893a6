"""dE^m/dr_ij for many coefficient vectors at once (the K committee members of HAL eq. 6) without
building the explicit pair Jacobian dB/dr (P x F x 3, ~0.7 MB per atom).

E^m = sum_i c^m . d_i with the power spectrum d_i = [1, A_i[c,00], p_l[c,d] = sum_m A_i[c,lm] A_i[d,lm]],
so dE^m/dA_i[c,lm] = G^m_i[c,lm] = sum_d W^m_l[c,d] A_i[d,lm] (+ the pair term at l = 0), with W
the symmetric coefficient matrix of block l. Then, for the pair p = (i, j) with
dA_i[c,lm]/dr_p = R'_c(r) rhat Y_lm + R_c(r) grad Y_lm:

    dE^m/dr_p = rhat sum_c R'_c sum_lm G^m_i[c,lm] Y_lm + sum_c R_c sum_lm G^m_i[c,lm] grad Y_lm.

The sums over lm are one batched matrix product per centre, (M C x LM) @ (LM x 4 J), over the
centre's J neighbour slots (a padded per-centre layout, so G is never gathered per pair), done in
chunks of centres to bound memory.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import sphericart.jax as sphericart_jax

from pylal.model.basis import BasisSpec, density_channels, radial_basis


def neighbor_slots(centers: np.ndarray, n_centers: int) -> tuple[np.ndarray, int]:
    """Position of every pair within its centre's neighbour list, and the largest count."""
    order = np.argsort(centers, kind="stable")
    sorted_centers = centers[order]
    first = np.searchsorted(sorted_centers, sorted_centers, side="left")
    slots = np.empty(len(centers), np.int32)
    slots[order] = np.arange(len(centers)) - first
    counts = np.bincount(centers, minlength=n_centers)
    return slots, int(counts.max(initial=1))


def _symmetric_blocks(spec: BasisSpec, coefs):
    """coefs (M, F) of one centre species -> pair weights (M, C) and, per l, W_l (M, C, C) with
    dE/dA[c] = sum_d W_l[c,d] A[d] (off-diagonal weights on both sides, diagonal doubled)."""
    c = spec.n_channels
    iu, ju = np.triu_indices(c)
    n = len(iu)
    pair = coefs[:, 1:1 + c]
    blocks = []
    for l in range(spec.l_max + 1):
        w = coefs[:, 1 + c + l * n: 1 + c + (l + 1) * n]
        blocks.append(jnp.zeros((coefs.shape[0], c, c), coefs.dtype).at[:, iu, ju].add(w).at[:, ju, iu].add(w))
    return pair, blocks


class PairExpansion(NamedTuple):
    """Per-pair radial and angular terms with their derivatives, and the centres' densities."""

    rhat: jnp.ndarray  # (P, 3)
    channel: jnp.ndarray  # R_c (P, C)
    d_channel: jnp.ndarray  # R'_c (P, C)
    ylm: jnp.ndarray  # (P, LM)
    d_ylm: jnp.ndarray  # (P, 3, LM)
    density: jnp.ndarray  # A_i[c, lm] (n_centers, C, LM); features: basis.power_spectrum(spec, density)


def pair_expansion(spec: BasisSpec, vectors, centers, neighbor_species, n_centers: int) -> PairExpansion:
    r = jnp.linalg.norm(vectors, axis=-1)
    radial, d_radial = jax.jvp(lambda x: radial_basis(spec, x), (r,), (jnp.ones_like(r),))
    ylm, d_ylm = sphericart_jax.dsph.dsph(vectors, spec.l_max, True)  # (P, LM), (P, 3, LM)
    channel = density_channels(spec, radial, neighbor_species)
    d_channel = density_channels(spec, d_radial, neighbor_species)
    density = jax.ops.segment_sum(channel[:, :, None] * ylm[:, None, :], centers, num_segments=n_centers)
    return PairExpansion(vectors / r[:, None], channel, d_channel, ylm, d_ylm, density)


def member_gradients(spec: BasisSpec, pairs: PairExpansion, centers, slots, pair_mask, center_species,
                     n_slots: int, coefs, chunk: int = 8):
    """dE^m/dr_p (M, P, 3) for coefs (M, S, F) (row m: coefficients of each centre species).

    slots: position of each pair in its centre's list (< n_slots, see `neighbor_slots`); padded
    pairs (pair_mask 0) add nothing. chunk: centres per batched product (small is cache-friendly)."""
    c, lm = spec.n_channels, (spec.l_max + 1) ** 2
    rhat, channel, d_channel, ylm, d_ylm, density = pairs
    n_centers, dtype = density.shape[0], density.dtype
    # G^m_i[c, lm] = dE^m / dA_i[c, lm], with each centre's own species' coefficients
    m = coefs.shape[0]
    grad_a = jnp.zeros((n_centers, m, c, lm), dtype)
    for s in range(spec.n_species):
        pair, blocks = _symmetric_blocks(spec, coefs[:, s])
        g = [jnp.einsum("kcd,ndm->nkcm", w, density[:, :, l * l:(l + 1) * (l + 1)]) for l, w in enumerate(blocks)]
        g = jnp.concatenate(g, axis=-1).at[:, :, :, 0].add(pair[None])
        grad_a = jnp.where((center_species == s)[:, None, None, None], g, grad_a)

    # per-centre padded neighbour layout: [Y | dY/dx | dY/dy | dY/dz] (n_centers, J, 4, LM)
    mask = pair_mask[:, None]
    basis = jnp.concatenate([ylm[:, None, :], d_ylm], axis=1) * mask[:, :, None]
    slot_basis = jnp.zeros((n_centers, n_slots, 4, lm), dtype).at[centers, slots].add(basis)
    slot_radial = jnp.zeros((n_centers, n_slots, c), dtype).at[centers, slots].add(channel * mask)
    slot_d_radial = jnp.zeros((n_centers, n_slots, c), dtype).at[centers, slots].add(d_channel * mask)
    slot_rhat = jnp.zeros((n_centers, n_slots, 3), dtype).at[centers, slots].add(rhat * mask)

    def per_chunk(args):
        g, b, rad, d_rad, rh = args
        q = jnp.einsum("nkcm,njqm->nkcjq", g, b)  # sum over lm: (n, M, C, J, 4)
        radial_part = jnp.einsum("njc,nkcj->nkj", d_rad, q[..., 0])[..., None] * rh[:, None]
        angular_part = jnp.einsum("njc,nkcja->nkja", rad, q[..., 1:])
        return radial_part + angular_part  # (n, M, J, 3)

    n_pad = -(-n_centers // chunk) * chunk

    def chunked(x):
        x = jnp.pad(x, [(0, n_pad - n_centers)] + [(0, 0)] * (x.ndim - 1))
        return x.reshape((n_pad // chunk, chunk) + x.shape[1:])

    out = jax.lax.map(per_chunk, tuple(map(chunked, (grad_a, slot_basis, slot_radial, slot_d_radial, slot_rhat))))
    out = out.reshape((n_pad,) + out.shape[2:])  # (n_centers (+pad), M, J, 3)
    grads = out[centers, :, slots, :]  # (P, M, 3)
    return jnp.transpose(grads, (1, 0, 2)) * pair_mask[None, :, None]
