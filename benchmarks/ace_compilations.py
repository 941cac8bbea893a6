"""JIT compilations of the committee step in a 1000-step NPT run with the ACE model (kernel path).

ACE (order 2, degree 16) fitted to 10 Stillinger-Weber configurations (LAMMPS oracle), 64-atom Si at 1200 K,
Berendsen NPT (ASE), HAL bias tau 0.1 with f_i every 10 steps, K=8. Issue 13 asks <= 3.
Last line: `ace_npt_compilations: <n>` (TRACE_COUNTS of pylal.model.committee).
"""
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
from ase import units  # noqa: E402
from ase.md.nptberendsen import NPTBerendsen  # noqa: E402
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution  # noqa: E402

from pylal.calculator import PylalCalculator  # noqa: E402
from pylal.model.ace import AceSpec  # noqa: E402
from pylal.model.committee import TRACE_COUNTS  # noqa: E402
from pylal.fit.committee import fit_parameters  # noqa: E402
from pylal.reference import make_calculator  # noqa: E402
from pylal.sampling import diamond_si, oracle_md  # noqa: E402


def main(steps=1000):
    spec = AceSpec(species=("Si",), r_cut=3.8, order=2, max_degree=16)
    sw = make_calculator("lammps")
    train = [c for i, t in enumerate([600, 1200]) for c in oracle_md(diamond_si(2), sw, t, 5, stride=40, seed=i)]
    params = fit_parameters(spec, train, n_members=8)
    before = sum(TRACE_COUNTS.values())  # the fit's own compilations (design rows) are not the run's
    atoms = diamond_si(2, rattle=0.05, seed=1)
    atoms.calc = PylalCalculator(params, tau=0.1, check_every=10)
    MaxwellBoltzmannDistribution(atoms, temperature_K=1200, rng=np.random.default_rng(0))
    dyn = NPTBerendsen(atoms, 1.0 * units.fs, temperature_K=1200, pressure_au=0.0, taut=50 * units.fs,
                       taup=200 * units.fs, compressibility_au=1e-2 / units.GPa)
    dyn.run(steps)
    volume = atoms.get_volume() / len(atoms)
    print(f"{steps} NPT steps, {len(atoms)} atoms, final volume {volume:.2f} A^3/atom, "
          f"compilations (fit included) per function: {dict(TRACE_COUNTS)}")
    print(f"ace_npt_compilations: {sum(TRACE_COUNTS.values()) - before}")


if __name__ == "__main__":
    main()
