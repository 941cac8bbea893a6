"""Energy, forces and virial of the prior for an ase.Atoms, computed by LAMMPS itself.

A private LAMMPS instance (the `lammps` Python module, MPI_COMM_SELF) runs the same pair_style /
pair_coeff lines as the deck (for periodic cells set up once per atom count and types; later calls
only move the box and the atoms and `run 0`) (pylal.prior.deck.lammps_commands), so the fit (labels minus
prior), the ASE calculator (prior + learned part) and `fix pylal` in a LAMMPS run all see one and the
same prior to round-off. Cell handling (non-periodic directions padded, lower-triangular box) is the
reference calculator's (pylal.reference.calculators.lammps_frame).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from ase.data import atomic_masses, atomic_numbers

from pylal.prior.deck import lammps_commands
from pylal.prior.spec import LammpsPrior, PriorError

NKTV2P = 1.6021765e6  # metal units: bar per eV/A^3 (LAMMPS force->nktv2p)


@dataclasses.dataclass
class PriorResult:
    energy: float  # eV
    forces: np.ndarray  # (N, 3) eV/A, ASE frame
    virial: np.ndarray  # (3, 3) eV, LAMMPS convention W = sum r (x) f (= -stress * volume); ASE frame


class PriorEvaluator:
    """`evaluate(atoms)` -> PriorResult. `species`: the elements of atom types 1..n (default: those
    the structure holds, sorted). `r_cut`: cutoff of the `zero` overlay (only sizes the neighbour
    list; it does not change the numbers)."""

    def __init__(self, prior: LammpsPrior, species=None, r_cut: float = 1.0):
        self.prior = prior
        self.species = None if species is None else list(species)
        self.r_cut = float(r_cut)
        self._lmp = None
        self._key = None  # (types, n types, periodic dims) of the system set up in LAMMPS
        self.calls = 0

    def __getstate__(self):  # picklable (executor processes): the LAMMPS instance is rebuilt on demand
        state = self.__dict__.copy()
        state["_lmp"], state["_key"] = None, None
        return state

    @property
    def lmp(self):
        if self._lmp is None:
            from mpi4py import MPI  # noqa: F401  (load libmpi before lammps)
            import lammps

            self._lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none"], comm=MPI.COMM_SELF)
        return self._lmp

    def close(self):
        if self._lmp is not None:
            self._lmp.close()
            self._lmp, self._key = None, None

    def _build(self, box, pos, types, species, k):
        lmp = self.lmp
        lmp.commands_list([
            "clear", "units metal", "atom_style atomic", "atom_modify map array",
            "boundary " + " ".join("p" if d < k else "f" for d in range(3)),
            "region cell prism 0 {!r} 0 {!r} 0 {!r} {!r} {!r} {!r} units box".format(*_box_words(box)),
            f"create_box {len(species)} cell",
        ])
        n = lmp.create_atoms(len(types), list(range(1, len(types) + 1)), types, pos.ravel().tolist())
        if n != len(types):
            raise RuntimeError(f"prior evaluation: LAMMPS created {n} of {len(types)} atoms")
        lmp.commands_list(
            [f"mass {i + 1} {atomic_masses[atomic_numbers[s]]}" for i, s in enumerate(species)]
            + lammps_commands(self.prior, species, self.r_cut)
            + ["compute pylal_prior_w all pressure NULL virial",
               "thermo_style custom step pe c_pylal_prior_w[1]", "thermo_modify norm no"])

    def _update(self, box, pos):
        """New box (change_box, which first wraps the atoms into the OLD periodic box), then the new
        positions by atom id; `run 0` wraps them into the new box. Periodic cells only."""
        lmp = self.lmp
        lx, ly, lz, xy, xz, yz = _box_words(box)
        lmp.command(f"change_box all x final 0 {lx} y final 0 {ly} z final 0 {lz} "
                    f"xy final {xy} xz final {xz} yz final {yz} units box")
        nlocal = lmp.extract_global("nlocal")
        ids = np.array(lmp.numpy.extract_atom("id")[:nlocal])
        lmp.numpy.extract_atom("x")[:nlocal] = pos[ids - 1]

    def evaluate(self, atoms) -> PriorResult:
        from pylal.reference.calculators import lammps_frame

        symbols = atoms.get_chemical_symbols()
        species = self.species or sorted(set(symbols))
        missing = sorted(set(symbols) - set(species))
        if missing:
            raise PriorError(f"prior evaluation: elements {missing} are not among the types {species}")
        types = [species.index(s) + 1 for s in symbols]
        box, pos, q, k = lammps_frame(atoms)
        lmp = self.lmp
        key = (tuple(types), len(species), k)
        if key == self._key and k == 3:  # same atoms, periodic: move the box and the atoms, no rebuild
            self._update(box, pos)
        else:
            self._key = None
            self._build(box, pos, types, species, k)
            self._key = key
        lmp.command("run 0 post no")
        self.calls += 1
        energy = float(lmp.get_thermo("pe"))
        nlocal = lmp.extract_global("nlocal")
        ids = np.array(lmp.numpy.extract_atom("id")[:nlocal])
        forces = np.array(lmp.numpy.extract_atom("f")[:nlocal])[np.argsort(ids)] @ q.T
        virial = np.zeros((3, 3))
        if k == 3:
            from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

            xx, yy, zz, xy, xz, yz = lmp.numpy.extract_compute("pylal_prior_w", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR)
            nktv2p = lmp.extract_global("nktv2p") or NKTV2P  # LAMMPS's own bar per eV/A^3
            w = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]]) * (atoms.get_volume() / nktv2p)
            virial = q @ w @ q.T
        return PriorResult(energy, forces, virial)


def _box_words(box):
    """lx ly lz xy xz yz of a lower-triangular box, every digit (repr)."""
    return tuple(repr(float(box[i, j])) for i, j in ((0, 0), (1, 1), (2, 2), (1, 0), (2, 0), (2, 1)))


def subtract_prior(atoms, evaluator: PriorEvaluator):
    """A copy of labelled `atoms` whose energy, forces and stress are the residual to the prior
    (the Delta-learning targets, Shuaibi eqs. 1-3)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    res = evaluator.evaluate(atoms)
    out = atoms.copy()
    old = atoms.calc.results if atoms.calc is not None else {}
    new = {}
    if "energy" in old:
        new["energy"] = old["energy"] - res.energy
    if "forces" in old:
        new["forces"] = old["forces"] - res.forces
    if "stress" in old and atoms.pbc.all():
        stress = atoms.get_stress(voigt=False) + res.virial / atoms.get_volume()  # sigma = -W / V
        new["stress"] = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    out.calc = SinglePointCalculator(out, **new)
    return out
