"""pylal through `fix ID all python/invoke 1 post_force pylal_post_force`, for LAMMPS builds with
the PYTHON package but without PLUGIN (e.g. Debian's `lammps`). Deck lines: docs/python_invoke.md.

It drives the same per-rank Engine as the C++ `fix pylal`. python/invoke neither reverse-
communicates ghost forces nor tallies energy or virial, so each rank makes centres of its owned
atoms AND of the ghost atoms within r_cut of them, and builds the pairs itself (vesin, no periodic
boundary: ghosts are explicit images). With a ghost shell of at least 2 r_cut those ghost centres
have complete neighbourhoods, so the forces on owned atoms are exact and the ghost rows are
dropped; energies count the owned centres only (Engine.evaluate passes n_energy_centers=n_local).

Runs inside LAMMPS's embedded Python: `lammps` must be that LAMMPS's own module, while numpy,
jax, ... come from pylal's virtual environment $PYLAL_VENV (see `_prefer_venv`).
"""
from __future__ import annotations

import ctypes
import os
import sys
import tempfile


def _prefer_venv():
    """The deck appended $PYLAL_VENV's site-packages AFTER the system paths, so `lammps` (and
    mpi4py, which must match LAMMPS's MPI library) resolve to the system's modules first. Import
    those now, then move the venv to the front so that the rest (numpy, jax, ...) is pylal's
    versions, not older system copies."""
    for name in ("lammps", "mpi4py"):
        try:
            __import__(name)
        except ImportError:
            pass
    venv = os.environ.get("PYLAL_VENV")
    if venv:
        root = os.path.realpath(venv) + os.sep
        ours = [p for p in sys.path if os.path.realpath(p).startswith(root)]
        sys.path[:] = ours + [p for p in sys.path if p not in ours]


_prefer_venv()

import numpy as np  # noqa: E402
import vesin  # noqa: E402

from pylal.lammps import engine as eng  # noqa: E402
from pylal.lammps import stat as layout  # noqa: E402
from pylal.lammps.settings import FixArgumentError  # noqa: E402

# names accepted by last_stat (fields of pylal/lammps/stat.py)
STAT_NAMES = ("e_hal", "e", "sigma", "tau", "f_max", "softmax", "flags", "version", "stop", "swaps")

_INSTANCES: dict[int, "_Instance"] = {}  # LAMMPS instance address -> its engine and state

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


class _Instance:
    def __init__(self, lmp, engine: eng.Engine, cut_ghost: float):
        self.lmp = lmp
        self.engine = engine
        self.cut_ghost = cut_ghost
        self.stat = np.zeros(layout.SIZE)
        self.ghost_key = None  # identifies the current ghost set (changes when LAMMPS reneighbours)
        self.x_ref = None  # positions when that ghost set was built
        self.neighbors = vesin.NeighborList(cutoff=engine.r_cut, full_list=True)


def _address(lmp_ptr) -> int:
    return _capsule_pointer(lmp_ptr, None)


def _instance(lmp_ptr) -> _Instance:
    try:
        return _INSTANCES[_address(lmp_ptr)]
    except KeyError:
        raise RuntimeError("pylal: call pylal_setup (python ... invoke) before the first run; "
                           "see docs/python_invoke.md") from None


def setup(lmp_ptr, args: str) -> None:
    """Creates the engine of this LAMMPS instance. args: what follows `pylal` in `fix ID all pylal
    ...` (docs/fix_pylal.md), e.g. "si.npz elements Si tau 0.5". Call it after the box exists."""
    import lammps

    lmp = lammps.lammps(ptr=lmp_ptr)
    comm = None
    if lmp.extract_setting("world_size") > 1:  # needs mpi4py built against LAMMPS's MPI library
        from mpi4py import MPI
        comm = MPI.Comm.f2py(lmp.lib.lammps_get_mpi_comm(lmp.lmp))
    engine = eng.Engine(args.split(), comm=comm, ntypes=lmp.extract_global("ntypes"))
    cut_ghost = _ghost_cutoff(lmp, comm)
    if cut_ghost < 2 * engine.r_cut:
        raise FixArgumentError(f"pylal (python/invoke): communication cutoff {cut_ghost:g} A is less than "
                               f"2 r_cut = {2 * engine.r_cut:g} A: put `comm_modify cutoff C` with C >= 2 r_cut "
                               f"+ neighbor skin before the setup line")
    _INSTANCES[_address(lmp_ptr)] = _Instance(lmp, engine, cut_ghost)


def _ghost_cutoff(lmp, comm) -> float:
    """The communication cutoff (comm_modify cutoff) as `info communication` prints it on rank 0:
    LAMMPS 2021's library interface does not expose it, and commands cannot run during a run."""
    cut = None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "info")
        lmp.command(f"info communication out overwrite {path}")
        if os.path.exists(path):
            with open(path) as fh:
                cut = next(float(line.split("=")[1]) for line in fh if line.startswith("Communication cutoff"))
    return cut if comm is None else comm.bcast(cut, root=0)


def _check_ghost_shell(inst: _Instance, x: np.ndarray, key) -> None:
    """Owned forces are exact only if every atom within 2 r_cut of an owned atom is present.
    LAMMPS sent as ghosts the atoms within the ghost cutoff when it last reneighboured; since then
    two atoms approach each other by at most twice the largest displacement."""
    engine = inst.engine
    if key != inst.ghost_key:
        inst.ghost_key, inst.x_ref = key, x.copy()
    moved = float(np.sqrt(((x - inst.x_ref) ** 2).sum(axis=1).max(initial=0.0)))
    moved = engine.comm.max(moved)
    if inst.cut_ghost - 2 * moved < 2 * engine.r_cut:
        raise FixArgumentError(
            f"pylal (python/invoke): the ghost shell must reach 2 r_cut = {2 * engine.r_cut:g} A beyond "
            f"every owned atom, but the communication cutoff is {inst.cut_ghost:g} A and atoms moved up to "
            f"{moved:.3g} A since the last reneighbouring: set `comm_modify cutoff` >= 2 r_cut + neighbor skin "
            f"= {2 * engine.r_cut:g} + skin")


def _pairs(inst: _Instance, x: np.ndarray, n_local: int):
    """Atom order [owned | ghost centres | other neighbours] and the pairs of all the centres."""
    i, j, d = inst.neighbors.compute(points=x, box=np.zeros((3, 3)), periodic=False, quantities="ijD")
    i, j = i.astype(np.int64), j.astype(np.int64)  # vesin gives unsigned indices
    ghost_centres = np.unique(j[(i < n_local) & (j >= n_local)])
    is_centre = np.zeros(len(x), bool)
    is_centre[:n_local] = True
    is_centre[ghost_centres] = True
    keep = is_centre[i]
    i, j, d = i[keep], j[keep], d[keep]
    others = np.setdiff1d(np.unique(j), np.flatnonzero(is_centre), assume_unique=True)
    order = np.concatenate([np.arange(n_local), ghost_centres, others])
    new_index = np.full(len(x), -1, np.int32)
    new_index[order] = np.arange(len(order), dtype=np.int32)
    return order, n_local + len(ghost_centres), new_index[i], new_index[j], np.ascontiguousarray(d, np.float64)


def post_force(lmp_ptr, vflag=0) -> None:
    """Callback of `fix ID all python/invoke 1 post_force pylal_post_force`: adds F_HAL to the
    forces of the owned atoms."""
    inst = _instance(lmp_ptr)
    lmp, engine = inst.lmp, inst.engine
    n_local, n_ghost = lmp.extract_global("nlocal"), lmp.extract_global("nghost")
    n_all = n_local + n_ghost
    x = lmp.numpy.extract_atom("x", nelem=n_all, dim=3)
    types = lmp.numpy.extract_atom("type", nelem=n_all)
    tags = lmp.numpy.extract_atom("id", nelem=n_all)
    image = lmp.numpy.extract_atom("image", nelem=n_local)
    _check_ghost_shell(inst, x, (n_local, tags.tobytes(), image.tobytes()))

    order, n_centres, pair_i, pair_j, vectors = _pairs(inst, x, n_local)
    lo, hi, xy, yz, xz, periodic, _ = lmp.extract_box()
    box = np.array([*lo, *hi, xy, xz, yz, *periodic], dtype=np.float64)
    step = lmp.extract_global("ntimestep")
    inst.stat[layout.INDEX["natoms"]] = lmp.get_natoms()
    inst.stat[layout.INDEX["saved_step"]] = -1  # the guard flags, but this path cannot roll back
    engine.evaluate(step, n_local, len(order), np.ascontiguousarray(x[order]),
                    np.ascontiguousarray(types[order], np.int32), np.ascontiguousarray(tags[order], np.int32),
                    pair_i, pair_j, vectors, box, inst.stat, n_centers=n_centres)
    f_hal = np.zeros((n_local, 3))
    engine.finish(f_hal, None, inst.stat)
    lmp.numpy.extract_atom("f", nelem=n_local, dim=3)[:] += f_hal
    engine.end_of_step(inst.stat)  # flags, trace, wait; stat "stop", see last_stat("stop")
    text = engine.pop_messages()
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()


def last_stat(lmp_ptr, name: str = "e_hal") -> float:
    """A scalar of the last step, for python-style LAMMPS variables: e_hal (E_HAL of all atoms, eV),
    e (unbiased E), sigma, tau, f_max, softmax, flags (written so far), version (of the
    parameters), stop (1 when on_flag stop fired), swaps."""
    if name not in STAT_NAMES:
        raise ValueError(f"pylal last_stat: unknown name '{name}' (known: {', '.join(STAT_NAMES)})")
    return float(_instance(lmp_ptr).stat[layout.INDEX[name]])
