"""Label a configuration with the reference calculator, turning failures into values."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator


@dataclass
class Label:
    """A labelled configuration: ``atoms.calc`` is a SinglePointCalculator with the results."""

    atoms: Atoms
    wall_time: float

    @property
    def ok(self) -> bool:
        return True

    @property
    def results(self) -> dict:
        return self.atoms.calc.results


@dataclass
class LabelFailure:
    """A failed calculation: exception type name (or ``NonFiniteResult``) and message."""

    error_type: str
    message: str
    wall_time: float

    @property
    def ok(self) -> bool:
        return False


def label(atoms: Atoms, calculator, properties=("energy", "forces", "stress")) -> Label | LabelFailure:
    """Compute ``properties`` for a copy of ``atoms``; never raises for calculation failures.

    Stress is skipped if the calculator does not implement it or the cell is not 3D periodic.
    Exceptions (including ASE convergence errors) and NaN/inf results give a LabelFailure.
    """
    start = time.perf_counter()
    work = atoms.copy()
    work.calc = calculator
    properties = list(properties)
    if "stress" in properties and not (
            work.pbc.all() and "stress" in getattr(calculator, "implemented_properties", ())):
        properties.remove("stress")
    results = {}
    try:
        for name in properties:
            try:
                results[name] = np.array(calculator.get_property(name, work), dtype=float)
            except PropertyNotImplementedError:
                if name != "stress":
                    raise
    except Exception as err:  # the oracle's failures are data, not crashes
        return LabelFailure(type(err).__name__, str(err), time.perf_counter() - start)
    wall = time.perf_counter() - start
    for name, value in results.items():
        if not np.all(np.isfinite(value)):
            return LabelFailure("NonFiniteResult", f"non-finite {name} from the calculator", wall)
    if "forces" in results and results["forces"].shape != (len(atoms), 3):
        return LabelFailure("ShapeError", f"forces of shape {results['forces'].shape}", wall)
    if "energy" in results:
        results["energy"] = float(results["energy"])
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, **results)
    return Label(out, wall)
