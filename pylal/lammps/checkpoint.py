"""`checkpoint FILE`: the last good state of a `fix pylal` run as a LAMMPS data file (atom_style
atomic, with image flags and velocities), so a walker that dies anyway restarts from there
(`read_data FILE`) instead of from its start structure (pylal/campaign/walkers.py).

The plugin calls it right after it saved a good state on a check step; rank 0 decides whether
`checkpoint_every` seconds have passed (wall time: the rate is bounded whatever the step cost),
all ranks learn it by broadcast, the owned atoms are gathered to rank 0, which writes atomically.
"""
from __future__ import annotations

import time

import numpy as np

from pylal.files import atomic_write


def data_file(step: int, tags, types, x, v, image, box, masses) -> str:
    """Text of a LAMMPS data file; box = (xlo, ylo, zlo, xhi, yhi, zhi, xy, xz, yz, px, py, pz);
    masses[t] for type t = 1..ntypes (entry 0 unused, as LAMMPS's atom->mass)."""
    order = np.argsort(tags)
    g = "{:.17g}".format  # round-trips a float64 exactly
    lo, hi, tilt = box[0:3], box[3:6], box[6:9]
    lines = [f"LAMMPS data file: fix pylal checkpoint of the good state at step {step}", "",
             f"{len(tags)} atoms", f"{len(masses) - 1} atom types", ""]
    for k, axis in enumerate("xyz"):
        lines.append(f"{g(lo[k])} {g(hi[k])} {axis}lo {axis}hi")
    if np.any(tilt != 0.0):
        lines.append(f"{g(tilt[0])} {g(tilt[1])} {g(tilt[2])} xy xz yz")
    lines += ["", "Masses", ""] + [f"{t} {g(masses[t])}" for t in range(1, len(masses))]
    lines += ["", "Atoms # atomic", ""]
    lines += [f"{tags[i]} {types[i]} {g(x[i, 0])} {g(x[i, 1])} {g(x[i, 2])} {image[i, 0]} {image[i, 1]} {image[i, 2]}"
              for i in order]
    lines += ["", "Velocities", ""]
    lines += [f"{tags[i]} {g(v[i, 0])} {g(v[i, 1])} {g(v[i, 2])}" for i in order]
    return "\n".join(lines) + "\n"


class Checkpointer:
    def __init__(self, settings, comm):
        self.path = settings.checkpoint
        self.every = settings.checkpoint_every
        self.comm = comm  # pylal.lammps.comm.Collectives
        self.last_write: float | None = None  # rank 0's clock
        self.n_written = 0

    def maybe_write(self, step: int, tags, types, x, v, image, box, masses) -> bool:
        due = self.comm.rank == 0 and (self.last_write is None or time.monotonic() - self.last_write >= self.every)
        if not self.comm.bcast(due):
            return False
        parts = self.comm.gather((tags.copy(), types.copy(), x.copy(), v.copy(), image.copy()))
        if self.comm.rank == 0:
            tags, types, x, v, image = (np.concatenate(c) for c in zip(*parts))
            atomic_write(self.path, data_file(step, tags, types, x, v, image, box, masses).encode())
            self.last_write = time.monotonic()
        self.n_written += 1
        return True
