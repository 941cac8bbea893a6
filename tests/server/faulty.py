"""A reference calculator with injected failures, chosen by the number of atoms of the configuration:
the Stillinger-Weber oracle for every size except `raise_n` (raises), `nan_n` (NaN forces) and
`hang_n` (sleeps far past any timeout);
`delay` seconds are spent on every call (a slow reference); while the file `hold` exists, a finished
calculation waits before returning (so a test can kill the server with a label surely in flight).
Used by the server tests through "faulty:make"."""
import os
import time

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from pylal.reference import make_calculator


class Faulty(Calculator):
    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, raise_n=7, nan_n=9, hang_n=10, delay=0.0, hold=None, **kwargs):
        super().__init__(**kwargs)
        self.delay, self.hold = delay, hold
        self.modes = {raise_n: "raise", nan_n: "nan", hang_n: "hang"}
        self.sw = make_calculator("lammps")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        time.sleep(self.delay)
        end = time.time() + 120
        while self.hold and os.path.exists(self.hold) and time.time() < end:
            time.sleep(0.05)
        mode = self.modes.get(len(self.atoms))
        if mode == "raise":
            raise RuntimeError("injected failure: SCF did not converge")
        if mode == "hang":
            time.sleep(3600)
        a = self.atoms.copy()
        a.calc = self.sw
        self.results = {"energy": a.get_potential_energy(), "free_energy": a.get_potential_energy(),
                        "forces": a.get_forces(), "stress": a.get_stress()}
        if mode == "nan":
            self.results["forces"] = np.full_like(self.results["forces"], np.nan)


def make(**options):
    return Faulty(**options)


def instant(**options):
    """A trivial, instant reference (zero energy, forces, stress): for latency measurements."""
    class Instant(Calculator):
        implemented_properties = ["energy", "free_energy", "forces", "stress"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            n = len(self.atoms)
            self.results = {"energy": -4.3 * n, "free_energy": -4.3 * n, "forces": np.zeros((n, 3)),
                            "stress": np.zeros(6)}

    return Instant(**options)
