"""By hand (not in make test): a 1725-atom Si cell flagged at step 0 by fix pylal on 1, 2 and 4 LAMMPS ranks
(label_max_atoms 64, carve_regions 4); the carved flag files must be the same on every rank count.

  .venv/bin/python tests/lammps/carve_ranks.py [WORKDIR]      (about 45 s; 4 ranks oversubscribe 2 cores)
"""
import sys
from pathlib import Path

import ase.io
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import random_parameters
from lammps_util import run_lmp, write_data
from test_carve import carve_deck, parent_cell
from pylal.model.basis import BasisSpec

spec = BasisSpec(species=("Si",), r_cut=3.5, n_max=4, l_max=2)
cells = {}
for ranks in (1, 2, 4):
    d = Path(sys.argv[1] if len(sys.argv) > 1 else "carve_ranks") / f"np{ranks}"
    d.mkdir(parents=True, exist_ok=True)
    random_parameters(spec, n_members=8, seed=1).save(d / "params.npz")
    write_data(parent_cell(repeat=6, vacancies=3), d / "cell.data", ["Si"])
    run_lmp(carve_deck(ranks, max_atoms=64, regions=4), d, ranks=ranks, timeout=600)
    cells[ranks] = [ase.io.read(p) for p in sorted((d / "flags").glob("flag_*_r*.xyz"))]
    print(ranks, "ranks:", [(len(c), int(c.arrays["force_weights"].sum()), int(c.info["carve_centre_id"])) for c in cells[ranks]], flush=True)
for ranks in (2, 4):
    assert len(cells[ranks]) == len(cells[1])
    for a, b in zip(cells[1], cells[ranks]):
        assert (a.arrays["id"] == b.arrays["id"]).all() and (a.arrays["force_weights"] == b.arrays["force_weights"]).all()
        print(ranks, "vs 1 rank: max |dx| =", np.abs(a.positions - b.positions).max(), "cell", np.abs(a.cell.array - b.cell.array).max())
