"""The committee step with MPI reductions (host callback inside the jitted step) equals serial."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import mpirun

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 4])
def test_split_over_ranks_equals_serial(ranks):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([mpirun(), "-np", str(ranks), sys.executable, str(ROOT / "tests/mpi/split_centres.py")],
                         capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    d = json.loads(out.stdout.strip().splitlines()[-1])
    assert d["ranks"] == ranks
    for key in ("d_energy", "d_sigma", "d_forces", "d_member_forces", "d_virial", "d_softmax", "d_f_max"):
        assert d[key] < 1e-9, (key, d)
