"""The force path of an ACE committee through ace-jax's C++ XLA-FFI kernel (`ace_jax.eval.ffi`).

The kernel evaluates a lean linear ACE model with a radial table: per-site energies e_i of one readout
`ct` (given at run time) and the forces of sum_i w_i e_i. pylal's committee is linear (E^k = c^k . B,
HAL sec. 2), so every force of the step is one kernel call with a coefficient vector's readout:
F_bar with c_bar, grad sigma~ with w (HAL eqs. 9-10), member k with c^k (f_i, HAL eq. 6).

- Many-body part: the readout of c's ACE block is c_B @ G, with G (n_B, N) the kernel's readout map,
  read off ace-jax's own `fold_readout` and `plan` (both linear in the readout) once per spec.
- Pair part and constant: the kernel folds the pair readout into its table, so one table per member
  would be needed; the pair energies are cheap and stay in XLA (vjp through the same table's pair radial).
- Layout: the kernel wants positions and a neighbour matrix; pylal has pair vectors r_p with centres and
  neighbours (ghosts included). Each centre sits at the origin and each pair p gets a pseudo-atom at r_p,
  so the kernel sees r_p bit for bit; minus the pseudo-atom's force is dE/dr_p, which the committee
  step turns into forces and virials as for the autodiff path.
- The committee energies need the summed features B: `features` is ace-jax's XLA `site_basis` (forward
  only) of the full model with pruned radial columns (`lean_keep_basis`: B unchanged) and the kernel's
  radial table, so energies and kernel forces are one model.
The table differs from the exact radial by ~1e-9 of max|F| (measured; ace-jax: up to 1e-8); fits keep
the exact XLA features (`CommitteeModel(..., ace_kernel=False)`).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from pylal.model.ace import AceSpec, ace_basis


class KernelUnavailable(RuntimeError):
    """ace-jax's kernel cannot be built here (no C++17 compiler, or the compile failed)."""


@dataclasses.dataclass(frozen=True, eq=False)
class AceKernel:
    """One AceSpec's kernel inputs: the full model with a radial table (features), the kernel's
    attributes and constants (lean model, pair readout and E0 zero) and the readout map G."""

    spec: AceSpec
    table_model: object  # ace-jax ACEModel, exact basis methods, radial stage tabulated
    attrs: dict
    consts: tuple  # `ffi.kernel_inputs`: (table, cutoffs, runs, groups, factor, readout, E0); readout replaced per call
    readout_map: np.ndarray  # (n_B, N): readout of an ACE coefficient block b is b @ G

    def arrays(self, committee) -> dict:
        """Arguments of the compiled step: the table model's arrays, G and the K member readouts,
        computed here once per hot-swap (committee (K, D))."""
        import equinox as eqx

        g = jnp.asarray(self.readout_map)
        return dict(model=eqx.filter(self.table_model, eqx.is_array), consts=self.consts, G=g,
                    members=self.readouts(jnp.asarray(committee), g))

    def readouts(self, coefs, g):
        """Kernel readouts (M, S, N) of coefficient vectors coefs (M, D)."""
        s = self.spec
        c = coefs.reshape(coefs.shape[0], s.n_species, s.n_per_species)
        return c[:, :, 1 + s.n_pair:] @ g

    def _model(self, arrays):
        import equinox as eqx

        return eqx.combine(arrays["model"], eqx.filter(self.table_model, eqx.is_array, inverse=True))

    def features(self, vectors, centers, center_species, neighbor_species, n_centers, pair_mask, arrays):
        """d_i = [1, pair, ACE] as AceSpec.atomic_features, but with the kernel's radial table."""
        many_body, pair = self._model(arrays).site_basis(vectors, center_species, neighbor_species, centers,
                                                         n_centers, pair_mask > 0)
        return jnp.concatenate([jnp.ones((n_centers, 1), vectors.dtype), pair[:, :self.spec.n_pair], many_body],
                               axis=1)

    def pair_gradients(self, vectors, centers, slots, n_slots, center_species, neighbor_species, pair_mask,
                       node_species, center_mask, coefs, readouts, arrays):
        """dE^m/dr_p (M, P, 3) of E^m = sum_i (center_mask_i) coefs[m, z_i] . d_i; coefs (M, S, D_s),
        readouts (M, S, N) the kernel readouts of the same vectors (`readouts`)."""
        from ace_jax.eval import ffi

        n_c, n_p = node_species.shape[0], vectors.shape[0]
        real = pair_mask > 0
        # neighbour matrix (n_slots, n_c): pair p is pseudo-atom n_c + p in its centre's slot
        nbr = jnp.full((n_slots, n_c), -1, jnp.int32).at[slots, jnp.where(real, centers, n_c)].set(
            n_c + jnp.arange(n_p, dtype=jnp.int32), mode="drop")
        positions = jnp.concatenate([jnp.zeros((n_c, 3), vectors.dtype), vectors])
        species = jnp.concatenate([node_species, neighbor_species]).astype(jnp.int32)
        weights = jnp.concatenate([center_mask, jnp.zeros(n_p, vectors.dtype)])
        num = jnp.full((n_c,), n_slots, jnp.int32)
        out = (jax.ShapeDtypeStruct((n_c + n_p,), vectors.dtype), jax.ShapeDtypeStruct(positions.shape, vectors.dtype))
        consts = arrays["consts"]
        rc2 = np.float64(self.spec.r_cut ** 2)

        def many_body(ct):  # one kernel call per readout: minus the pseudo-atom forces are dE/dr_p
            f = jax.ffi.ffi_call(ffi.TARGET, out)(positions, species, nbr, num, weights, *consts[:5], ct,
                                                  consts[6], **self.attrs, rc2=rc2)[1]
            return -f[n_c:]

        g = jax.lax.map(many_body, readouts)
        n_pair = self.spec.n_pair
        if n_pair == 0:  # "sbessel" radials: no pair functions in d_i
            return g * pair_mask[None, :, None]
        model = self._model(arrays)
        _, pullback = jax.vjp(lambda v: model.pair_radial(v, center_species, neighbor_species), vectors)
        cot = coefs[:, center_species, 1:1 + n_pair] * (center_mask[centers] * pair_mask)[None, :, None]
        (g_pair,) = jax.vmap(pullback)(cot)
        return (g + g_pair) * pair_mask[None, :, None]


@functools.lru_cache(maxsize=8)
def ace_kernel(spec: AceSpec) -> AceKernel:
    """The kernel of a spec, built once per process: compiles ace-jax's C++ source on first use (a few
    seconds, cached on disk) and reads the radial table from pylal's disk cache (`tabulated`).
    Raises KernelUnavailable."""
    from ace_jax.eval import ffi
    from ace_jax.eval.model import fold_readout, lean, lean_keep_basis

    try:
        ffi.register(ffi.library())
    except ffi.FFIUnavailable as e:
        raise KernelUnavailable(f"ACE kernel for {spec}: {e}") from None
    full = dataclasses.replace(ace_basis(spec).model, folded=False)
    # features: the exact basis methods on pruned radial columns (B unchanged), radial stage tabulated
    table_model = tabulated(lean_keep_basis(full), spec)
    # kernel: the lean model with pair readout and E0 zero; its table is [the same R_nl columns | folded pair
    # radial (zero)], so it is cut from the features' table instead of being fitted (and compiled) again
    zero = dataclasses.replace(full, WB=jnp.zeros_like(full.WB), Wpair=jnp.zeros_like(full.Wpair),
                               E0=jnp.zeros_like(full.E0))
    kernel_model = lean(fold_readout(zero))
    _check_same_radial_columns(table_model, kernel_model)
    n_rnl = table_model.rtab_coefs.shape[-1] - table_model.Wpair.shape[0]
    rtab = jnp.pad(table_model.rtab_coefs[..., :n_rnl], [(0, 0)] * 3 + [(0, 1)])
    kernel_model = dataclasses.replace(kernel_model, rtab_grid=table_model.rtab_grid, rtab_coefs=rtab)
    attrs, consts = ffi.kernel_inputs(kernel_model)
    # G: the kernel readout of each ACE basis function (WB = identity through fold_readout and plan)
    identity = fold_readout(dataclasses.replace(full, WB=jnp.eye(full.WB.shape[0], dtype=full.WB.dtype)))
    g = np.asarray(ffi.plan(dataclasses.replace(kernel_model, ctilde=identity.ctilde))[3])
    return AceKernel(spec, table_model, attrs, tuple(consts), g)


def cache_dir() -> Path:
    """Where radial tables are kept: $PYLAL_CACHE_DIR, else $XDG_CACHE_HOME/pylal, else ~/.cache/pylal."""
    if os.environ.get("PYLAL_CACHE_DIR"):
        return Path(os.environ["PYLAL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pylal"


def tabulated(model, spec: AceSpec):
    """`model` with ace-jax's radial table (`with_radial_table(model, True)`), the table read from a file
    keyed by the spec and ace-jax's version when one exists. Tabulating costs 10-25 s of JAX compilation
    in every process (each LAMMPS rank, the server, each test process); the file makes it a read. A
    missing, unreadable or mismatched file is rebuilt and replaced atomically (ranks may race)."""
    from importlib.metadata import version

    from ace_jax.eval.model import with_radial_table

    base = model.without_radial_table()
    fields = [field for _, field in base.radial_table_targets()]
    key = json.dumps([version("ace-jax"), spec.to_dict(), fields], sort_keys=True)
    path = cache_dir() / "ace_tables" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
    try:
        with np.load(path) as f:
            if str(f["key"]) == key:
                grid = tuple(f["grid"].tolist())
                grid = (float(grid[0]), float(grid[1]), int(grid[2]))
                return dataclasses.replace(base, rtab_grid=grid,
                                           **{k: jnp.asarray(f[k], base.E0.dtype) for k in fields})
    except (OSError, KeyError, ValueError):
        pass  # no usable file: build it
    out = with_radial_table(model, True)[0]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
            np.savez(tmp, key=np.array(key), grid=np.array(out.rtab_grid, dtype=float),
                     **{k: np.asarray(getattr(out, k)) for k in fields})
        os.replace(tmp.name, path)
    except OSError:
        pass  # a read-only home: the table is rebuilt next time
    return out


def _check_same_radial_columns(table_model, kernel_model):
    """The kernel's R_nl columns are the features' (same pruning): compared on the exact radials."""
    exact = table_model.without_radial_table()
    nz = exact.E0.shape[0]
    r = np.linspace(0.8, float(np.min(exact.table_cutoffs())) - 0.05, 7)
    rij = jnp.asarray(np.stack([r, 0 * r, 0 * r], -1))
    for zi in range(nz):
        for zj in range(nz):
            z = (jnp.full(len(r), zi), jnp.full(len(r), zj))
            a, b = exact.radial(rij, *z)[0], kernel_model.radial(rij, *z)[0]
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-12, atol=1e-14):
                raise KernelUnavailable("ace-jax's lean model reorders the radial columns (ace-jax version?)")
