"""A test engine whose guard trips at chosen steps (environment variable PYLAL_TRIP_STEPS, e.g.
"200 450"): the figures of that step report a non-finite force, as a blow-up would. Everything
else (flag, rollback, redraw) is the real engine's."""
import os

import numpy as np

from pylal.lammps.engine import Engine


class TrippingEngine(Engine):
    def _guard_figures(self, p, forces, step_length):
        figures = super()._guard_figures(p, forces, step_length)
        trips = {int(s) for s in os.environ.get("PYLAL_TRIP_STEPS", "").split()}
        if p.step in trips and self.rank == 0:
            figures = np.array(figures)
            figures[3] = 1.0  # non-finite
        return figures
