"""The real CP2K reference (pylal.reference.cp2k) with minimal settings (Gamma point, SZV basis, 60 Ry),
chosen by the number of atoms of the configuration, so that one refit server meets a good label and
each failure of the real code: `scf_n` atoms: max_scf 2 (the SCF cannot converge), `crash_n`: a basis
set CP2K does not have (CP2K aborts), `slow_n`: a huge cutoff and k-point grid (runs far past any test
timeout). Used by tests/test_dft.py through "cp2k_cases:make" (a `module:factory` reference)."""
from ase.calculators.calculator import Calculator, all_changes

from pylal.reference.cp2k import CP2KReference

TINY = dict(basis_set="SZV-MOLOPT-SR-GTH", cutoff=60.0, rel_cutoff=20.0, kpts=[1, 1, 1])


class ByAtomCount(Calculator):
    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, scf_n=3, crash_n=4, slow_n=5, scratch="", **kwargs):
        super().__init__(**kwargs)
        base = dict(TINY, scratch=scratch)
        self.cases = {scf_n: CP2KReference(**dict(base, max_scf=2)),
                      crash_n: CP2KReference(**dict(base, basis_set="NO-SUCH-BASIS")),
                      slow_n: CP2KReference(**dict(base, cutoff=3000.0, kpts=[8, 8, 8]))}
        self.normal = CP2KReference(**base)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        ref = self.cases.get(len(self.atoms), self.normal)
        ref.calculate(self.atoms, properties, system_changes)
        self.results = dict(ref.results)


def make(**options):
    return ByAtomCount(**options)
