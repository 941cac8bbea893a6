"""Issue 24 item 4: ranks that wait do not spin. A 2-rank walker held at a flag for 20 s (rank 0
waits for the refit server, the other rank for rank 0) costs well under 1 s of CPU on each rank:
MPICH's blocking collectives busy-poll, so the wait must not sit in one (Collectives.bcast_idle)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import mpirun

from pylal.lammps.comm import Collectives

ROOT = Path(__file__).resolve().parents[1]
HOLD = 20.0


def test_bcast_idle_without_communicator_is_the_identity():
    payload = {"a": 1}
    assert Collectives(None).bcast_idle(payload) is payload


@pytest.mark.slow
@pytest.mark.mpi
def test_walker_held_at_a_flag_costs_no_cpu_on_any_rank():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    out = subprocess.run([mpirun(), "-np", "2", sys.executable, str(ROOT / "tests/mpi/idle_wait.py"), str(HOLD)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    d = json.loads(out.stdout.strip().splitlines()[-1])
    assert d["ranks"] == 2
    for row in d["rows"]:
        assert row["new"] == "parameters version 2" and row["path"] == "current.npz", row  # the payload arrived
        assert row["wall"] >= HOLD - 0.5, row  # the walker really was held
        assert row["cpu"] < 1.0, d  # CPU seconds of this rank during the 20 s hold
