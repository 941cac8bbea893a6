"""LAMMPS deck lines for a prior, and the check `fix pylal` makes against the deck's pair style.

    pair_style hybrid/overlay PRIOR [args] [cutoff] zero R_CUT
    pair_coeff * * zero
    pair_coeff I J PRIOR values...          (per-pair styles; one line per pair of atom types)
    pair_coeff * * PRIOR FILE E1 E2 ...     (file-based styles)
    pair_modify pair PRIOR ...              (if the prior has `modify`)

LAMMPS evaluates the prior natively; `fix pylal` adds the learned part (HAL eq. 1 on top of
Shuaibi eq. 4: E = E_prior + E_ML). `zero R_CUT` gives the fix a neighbour list covering the
model cutoff. The same lines (with the same numbers) are what pylal.prior.evaluate runs, so the
ASE path and the fit see exactly the prior LAMMPS sees.
"""
from __future__ import annotations

from pylal.prior.spec import LammpsPrior, PriorError, pair_key

_ORDERED = ("zbl",)  # styles whose two pair_coeff values belong to type I and type J respectively
_SUFFIXES = ("", "/omp", "/opt", "/kk", "/gpu", "/intel")  # accelerator variants of a style


def _fmt(v) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)  # repr: every digit, so LAMMPS reads the same double


def pair_style_line(prior: LammpsPrior, r_cut: float | None) -> str:
    words = [prior.style, *map(_fmt, prior.args)]
    if prior.cutoff is not None:
        words.append(_fmt(prior.cutoff))
    if r_cut is None:
        return "pair_style " + " ".join(words)
    return f"pair_style hybrid/overlay {' '.join(words)} zero {_fmt(float(r_cut))}"


def coeff_lines(prior: LammpsPrior, elements, sub_style: bool = True) -> list[str]:
    """pair_coeff lines for atom types 1..n = elements (sub_style: name the style, as hybrid needs)."""
    name = f" {prior.style}" if sub_style else ""
    if prior.file:
        return [f"pair_coeff * *{name} {prior.resolved_file()} {' '.join(elements)}"]
    lines = []
    for i, a in enumerate(elements, 1):
        for j in range(i, len(elements) + 1):
            b = elements[j - 1]
            values = list(prior.coeff(a, b))
            key_order = pair_key(a, b).split("-")
            if prior.style.split("/")[0] in _ORDERED and [a, b] != key_order and len(values) >= 2:
                values[0], values[1] = values[1], values[0]
            lines.append(f"pair_coeff {i} {j}{name} {' '.join(map(_fmt, values))}")
    return lines


def lammps_commands(prior: LammpsPrior, elements, r_cut: float) -> list[str]:
    """The deck lines for atom types 1..n whose elements are `elements`: the prior as a native
    LAMMPS pair style overlaid with `zero r_cut` for fix pylal (r_cut: the model cutoff)."""
    elements = list(elements)
    if not elements:
        raise PriorError("lammps_commands: no elements given (one per LAMMPS atom type)")
    lines = [pair_style_line(prior, r_cut), "pair_coeff * * zero"]
    lines += coeff_lines(prior, elements)
    if prior.modify:
        lines.append(f"pair_modify pair {prior.style} {' '.join(prior.modify)}")
    return lines


def accepted_styles(prior: LammpsPrior) -> list[str]:
    """Pair style names that count as this prior in a deck (the style and its accelerated variants)."""
    return [prior.style + s for s in _SUFFIXES]


def missing_prior_message(prior: LammpsPrior, pair_style: str, elements, r_cut: float) -> str:
    """Error text for a deck whose pair style lacks the prior: names it and prints the lines to use."""
    try:
        lines = lammps_commands(prior, elements, r_cut)
    except PriorError as err:
        lines = [f"(cannot write the lines: {err})"]
    return (f"fix pylal: the parameter file has a physics prior (pair style '{prior.style}'), but the "
            f"deck's pair style is '{pair_style}' and does not contain it; the learned part alone is not "
            f"the potential. Replace the pair_style/pair_coeff lines with:\n  " + "\n  ".join(lines))
