"""The explicit pair Jacobian dB/dr (P x F x 3): the straightforward way to get member forces,
kept as the reference that pylal.model.member_gradients (which never builds it) is tested against."""
import jax
import jax.numpy as jnp
import numpy as np
import sphericart.jax as sphericart_jax

from pylal.model.basis import BasisSpec, density_channels, radial_basis


def _triu(c: int):
    return np.triu_indices(c)


def features_and_pair_jacobian(spec: BasisSpec, vectors, centers, neighbor_species, n_centers: int):
    """Per-centre features d_i (n_centers, F) and, for every pair p = (i, j), the Jacobian
    J_p = d d_i / d r_ij (P, F, 3), written out explicitly so that forces for many coefficient
    vectors (committee members, or the identity for the design matrix) are one matrix product.

    dA_i[c, lm] / dr = R'_c(r) rhat Y_lm + R_c(r) grad Y_lm;
    d p_l[c, d] / dr = sum_{m in l} (dA[c, lm] A[d, lm] + A[c, lm] dA[d, lm]).
    """
    c = spec.n_channels
    r = jnp.linalg.norm(vectors, axis=-1)
    rhat = vectors / r[:, None]
    radial, d_radial = jax.jvp(lambda x: radial_basis(spec, x), (r,), (jnp.ones_like(r),))
    ylm, d_ylm = sphericart_jax.dsph.dsph(vectors, spec.l_max, True)  # (P, LM), (P, 3, LM)
    channel = density_channels(spec, radial, neighbor_species)  # (P, C)
    d_channel = density_channels(spec, d_radial, neighbor_species)
    density = jax.ops.segment_sum(channel[:, :, None] * ylm[:, None, :], centers, num_segments=n_centers)
    # dA_p[c, lm, a]: derivative of pair p's contribution to its centre's density
    d_density = (d_channel[:, :, None, None] * ylm[:, None, :, None] * rhat[:, None, None, :]
                 + channel[:, :, None, None] * jnp.swapaxes(d_ylm, 1, 2)[:, None, :, :])
    a_centre = density[centers]  # (P, C, LM)
    iu, ju = _triu(c)
    feats = [jnp.ones((n_centers, 1), vectors.dtype), density[:, :, 0]]
    jac = [jnp.zeros((vectors.shape[0], 1, 3), vectors.dtype), d_density[:, :, 0, :]]
    for l in range(spec.l_max + 1):
        sl = slice(l * l, (l + 1) * (l + 1))
        a_l = density[:, :, sl]
        feats.append(jnp.einsum("icm,idm->icd", a_l, a_l)[:, iu, ju])
        t = jnp.einsum("pcma,pdm->pcda", d_density[:, :, sl, :], a_centre[:, :, sl])
        jac.append((t + jnp.swapaxes(t, 1, 2))[:, iu, ju, :])
    return jnp.concatenate(feats, axis=1), jnp.concatenate(jac, axis=1)
