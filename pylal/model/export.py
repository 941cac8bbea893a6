"""Export the mean potential of an ACE parameter file as a PACE `.yace` (`pylal export`).

The ACE basis of `pylal.model.ace` is ace-jax's, so the mean potential c_bar is an ace-jax linear ACEModel
with readout E0 = the constant coefficients, Wpair = the pair coefficients, WB = the many-body
coefficients, per centre species. ace-jax's exporter (`ace_jax.eval.write_yace`) converts it exactly
(tabulated radials on ML-PACE's own grid, the products re-expressed in PACE's complex harmonics).

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
    model = dataclasses.replace(model, E0=jnp.asarray(blocks[:, 0]), Wpair=jnp.asarray(blocks[:, 1:1 + n_pair].T),
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
    try:
        return ace_write_yace(ace_model(params.spec, params.mean), path, delta=table_spacing(params.spec.r_cut))
    except ValueError as err:  # e.g. r_cut not a whole number of the table spacing
        raise ExportError(f"cannot write {path}: {err}") from err


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
