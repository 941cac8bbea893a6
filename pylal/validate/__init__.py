"""Property validation of a potential against its reference (as HAL, van der Oord et al. 2022, Table I).

Every property is computed by the same function for the model and for the reference calculator:

- crystal (``crystal.py``, cubic 8-atom diamond cell): lattice constant a0 (A) and bulk modulus B
  (GPa) from a Birch-Murnaghan fit of E(V); elastic constants C11, C12, C44 (relaxed internal
  coordinates) and C44_unrelaxed (GPa) from central differences of the stress;
- liquid (``liquid.py``, 64 atoms, NVT: Langevin in ASE, a LAMMPS reference inside LAMMPS): g(r) up
  to 5 A after melting at 4000 K and sampling at 2500 K; its first peak, the coordination number
  within 3.1 A (or up to the reference's first minimum) and the RMS difference of the two g(r) curves.

Any other system (``pylal campaign``'s default): ``derive.campaign_settings(initial, walker_temperatures)``
gives the CrystalSettings and LiquidSettings of a campaign's own [initial] structure (bulk, repeat,
substitute or file; ``structure.py``) and hot walker temperatures: rows V0 (A^3/atom) and B, and a0 and
C_ij for a cubic lattice; liquid rows per temperature (suffix ``_<T>K`` when several). Every row carries
its "structure" statement, liquid rows their "temperature" (docs/validation.md).

``property_table(calculator, reference, quick=False, properties=("crystal", "liquid"))`` returns a
JSON-serialisable dict (this shape is stable; ``pylal campaign`` and ``pylal report`` rely on it)::

    {
      "<name>": {"model": float|null, "reference": float|null,
                 "rel_error": (model - reference) / reference | null, "unit": str,
                 "error": str  (only if either side failed: "model: <reason>; reference: <reason>"),
                 ...           (optional extras, e.g. "r_cut" of liquid_coordination)},
      ...
      "rdf": {"r": [...], "model": [...]|null, "reference": [...]|null, "unit": "A",
              "settings": {"a", "repeat", "t_melt", "t_liquid", "melt_steps", ...}}   (if "liquid")
    }

Row names, in order: a0 (A), B, C11, C12, C44, C44_unrelaxed (GPa) for "crystal"; rdf_first_peak (A),
liquid_coordination (1), rdf_rms (1; its reference is 0 and rel_error null) for "liquid". A row is
any value that is a dict with a "rel_error" key (``is_row``); "rdf" is the only other key.
A model (or reference) that fails (NaN, atoms closer than 1.5 A, runaway temperature, relaxation
not converging, any calculator exception) gives null values and the reason in "error"; nothing
raises. ``write_validation(table, "validation.json")`` also writes ``validation.md``
(``render_markdown``). ``compute_properties(reference, ...)`` can be passed as ``reference`` to
reuse one reference calculation for many models (its settings must match). docs/validation.md
has the method, cost and the Stillinger-Weber values.
"""
from pylal.validate.crystal import CrystalSettings, crystal_properties, elastic_constants, equation_of_state
from pylal.validate.derive import campaign_settings
from pylal.validate.liquid import LiquidSettings, coordination_number, liquid_rdf, radial_distribution
from pylal.validate.stability import UnstableError
from pylal.validate.table import (compute_properties, failures, is_row, property_table, render_markdown,
                                  write_validation)

__all__ = ["CrystalSettings", "LiquidSettings", "UnstableError", "campaign_settings", "compute_properties",
           "coordination_number",
           "crystal_properties", "elastic_constants", "equation_of_state", "failures", "is_row",
           "liquid_rdf", "property_table", "radial_distribution", "render_markdown", "write_validation"]
