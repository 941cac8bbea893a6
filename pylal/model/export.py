"""Export the mean potential of an ACE parameter file as a PACE `.yace` (`pylal export`).

The ACE basis of `pylal.model.ace` is ace-jax's, so the mean potential c_bar is an ace-jax linear ACEModel
with readout E0 = the constant coefficients, Wpair = the pair coefficients, WB = the many-body
coefficients, per centre species. ace-jax's exporter (`ace_jax.eval.write_yace`) converts it exactly
(tabulated radials on ML-PACE's own grid, the products re-expressed in PACE's complex harmonics).

With the "sbessel" radials (`AceSpec.radial`) the radials are ML-PACE's own SBessel functions: the file
then carries `radbasename: SBessel` with the radial coefficients crad[n][l][k] and the rank-1 functions on
g_k, which every released ML-PACE (`pair_style pace`, `pace/kk`) reads. The coefficients are read off
ace-jax's exact tables by least squares on the same grid and checked to 1e-10 of each radial's scale, so
nothing is approximated. With the "poly" radials the file keeps ace-jax's tabulated radials.

What the file does not carry: the committee (a .yace is one potential), the internal ZBL repulsion
(`AceSpec.prior`) and a LAMMPS pair-style prior; `yace_pair_style` writes the LAMMPS lines that put them
back with `pair_style hybrid/overlay`. Caveat (ace-jax 0.4.1): ML-PACE reads the tabulated radials only
with its tabulated-radial addition, which is not yet in ML-PACE's releases; ace-jax reads the file as is.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from pylal.model.ace import AceSpec, ace_basis
from pylal.model.params import Parameters
from pylal.model.zbl import switch_radii


class ExportError(ValueError):
    """A parameter file that cannot be written as a .yace (wrong basis kind, cutoff off the table grid)."""


def ace_model(spec: AceSpec, coefficients: np.ndarray):
    """The ace-jax ACEModel whose site energies are coefficients . d_i (without pylal's ZBL prior)."""
    from ace_jax.eval.model import fold_readout

    blocks = np.asarray(coefficients, dtype=np.float64).reshape(spec.n_species, spec.n_per_species)
    n_pair = spec.n_pair
    model = ace_basis(spec).model
    pair = blocks[:, 1:1 + n_pair].T if n_pair else np.zeros(model.Wpair.shape)  # "sbessel": no pair functions
    model = dataclasses.replace(model, E0=jnp.asarray(blocks[:, 0]), Wpair=jnp.asarray(pair),
                                WB=jnp.asarray(blocks[:, 1 + n_pair:].T), folded=False)
    return fold_readout(model)


def table_spacing(r_cut: float, target: float = 0.001) -> float:
    """ML-PACE's deltaSplineBins near `target` (A) such that r_cut is a whole number of it in floating point
    (ML-PACE sizes its tables int(r_cut / delta); 3.8 / 0.001 gives 3799 there)."""
    n0 = round(r_cut / target)
    for n in range(n0, n0 + 100):
        delta = r_cut / n
        if int(r_cut / delta) == n and abs(n * delta - r_cut) <= 1e-9 * r_cut:
            return delta
    raise ExportError(f"no radial table spacing near {target} A divides r_cut = {r_cut} A")


def write_yace(params: Parameters, path) -> dict:
    """Write the mean potential of `params` (an ACE basis) as a .yace; returns the export's sizes."""
    from ace_jax.eval import write_yace as ace_write_yace

    if not isinstance(params.spec, AceSpec):
        raise ExportError(f"only an ACE basis (kind 'ace') exports to .yace; this file's basis is "
                          f"{getattr(params.spec, 'kind', '?')!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model, delta = ace_model(params.spec, params.mean), table_spacing(params.spec.r_cut)
    try:
        if params.spec.radial != "sbessel":
            return ace_write_yace(model, path, delta=delta)
        from ace_jax.eval.pace_io import dump_tree
        from ace_jax.export.yace import ace_ctilde_tree

        info = {}
        dump_tree(sbessel_tree(ace_ctilde_tree(model, delta=delta, info=info), model), path)
        return {**info, "radbasename": "SBessel"}
    except ValueError as err:  # e.g. r_cut not a whole number of the table spacing
        raise ExportError(f"cannot write {path}: {err}") from err


def sbessel_tree(tree: dict, model, r_min: float = 0.5) -> dict:
    """ace-jax's tabulated .yace tree of an "sbessel" model rewritten in ML-PACE's SBessel form: each bond's
    R_nl tables become crad[n][l][k] (R_nl = sum_k crad g_k) and its rank-1 table g = sum_k a_k g_k becomes
    one rank-1 function per g_k with ctilde a_k. The coefficients are solved on the tables' own grid
    (r >= r_min, where the tables are the model's values) and must reproduce them to 1e-10."""
    n_k = model.rnl_Wnlq.shape[-1]
    rank1 = {}
    for (i, j), bond in tree["bonds"].items():
        table = bond.pop("radtable")
        r = np.arange(table["nbins"] + 1) * (bond["rcut"] / table["nbins"])
        inside = (r >= r_min) & (r < bond["rcut"])
        z = (jnp.full(int(inside.sum()), i, jnp.int32), jnp.full(int(inside.sum()), j, jnp.int32))
        g = np.asarray(model.rnl_basis_values(jnp.asarray(r[inside]), *z))

        def coefficients(values):
            f = np.asarray(values)[inside]
            c = np.linalg.lstsq(g, f, rcond=None)[0]
            if np.abs(g @ c - f).max() > 1e-10 * max(np.abs(f).max(), 1e-12):
                raise ExportError(f"bond {i}-{j}: a radial is not in the span of the SBessel g_k")
            return c

        crad = np.zeros((bond["nradmax"], bond["lmax"] + 1, n_k))
        for e in table["rnl"]:
            crad[e["n"] - 1, e["l"]] = coefficients(e["f"])
        rank1[i, j] = coefficients(table["gk"][0]["f"])
        bond.update(radbasename="SBessel", nradbasemax=int(n_k), radparameters=[1.0],
                    radcoefficients=crad.tolist())
    for z, functions in tree["functions"].items():
        tree["functions"][z] = [g for f in functions for g in _on_each_g_k(f, rank1[z, f["mus"][0]])]
    return tree


def _on_each_g_k(function: dict, weights) -> list[dict]:
    """A rank-1 function on the table g = sum_k weights[k] g_k as one rank-1 function per nonzero g_k;
    higher ranks unchanged."""
    if function["rank"] != 1:
        return [function]
    return [{**function, "ns": [k + 1], "ctildes": [float(a)]} for k, a in enumerate(weights) if a != 0.0]


def yace_pair_style(params: Parameters, yace_name: str) -> str:
    """LAMMPS lines for the exported potential, with a LAMMPS prior overlaid (docs/export.md)."""
    from pylal.prior.deck import coeff_lines, pair_style_line

    species = list(params.spec.species)
    lines = [f"# {yace_name}: mean potential of pylal parameter version {params.version}"]
    if params.spec.prior is not None:
        r_on, r_off = switch_radii(params.spec.species, params.spec.prior)
        lines.append(f"# not in the .yace: pylal's internal ZBL repulsion, switched off between {r_on.min():.3f} "
                     f"and {r_off.max():.3f} A (per species pair; LAMMPS pair_style zbl switches differently)")
    if params.lammps_prior is None:
        return "\n".join(lines + ["pair_style pace", f"pair_coeff * * {yace_name} {' '.join(species)}"]) + "\n"
    prior_words = pair_style_line(params.lammps_prior, None).removeprefix("pair_style ")
    lines += [f"pair_style hybrid/overlay pace {prior_words}", f"pair_coeff * * pace {yace_name} {' '.join(species)}"]
    return "\n".join(lines + coeff_lines(params.lammps_prior, species)) + "\n"
