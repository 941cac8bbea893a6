"""Run under mpirun: a Walker holds at a flag (`Walker.wait_for_version`, on_flag wait) while rank 0's
client (a stub) answers only after HOLD seconds. Every rank measures its CPU time (process_time:
all threads of the rank) around the hold; rank 0 prints one JSON line: per rank CPU s, wall s, and
what arrived."""
import json
import sys
import time

from mpi4py import MPI

from pylal.lammps.comm import Collectives
from pylal.lammps.settings import parse_fix_args
from pylal.lammps.walker import Walker

HOLD = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0


class SlowClient:
    """The part of pylal.server.client.Client the wait uses; version 2 exists only after HOLD s."""
    params_path = "current.npz"

    def __init__(self, hold: float):
        self.ready_at = time.monotonic() + hold
        self.ack_status: dict = {}

    def wait_for_version(self, version, timeout, flag_id=None):
        left = self.ready_at - time.monotonic()
        if left > timeout:
            time.sleep(timeout)
            return None
        time.sleep(max(left, 0.0))
        return f"parameters version {version}"


comm = Collectives(MPI.COMM_WORLD)
# no `server` keyword: the walker connects to nothing; rank 0 gets the stub client below
settings = parse_fix_args(["none.npz", "elements", "Si", "wait_timeout", str(3 * HOLD), "exit_file", "none"])
walker = Walker(settings, comm, version=1, r_cut=3.8)
comm.comm.Barrier()  # the hold starts together on every rank
if comm.rank == 0:
    walker.client = SlowClient(HOLD)
wall, cpu = time.monotonic(), time.process_time()
new, path = walker.wait_for_version(step=100, version=1)
cpu, wall = time.process_time() - cpu, time.monotonic() - wall
rows = comm.gather(dict(rank=comm.rank, cpu=cpu, wall=wall, new=new, path=path))
if comm.rank == 0:
    print(json.dumps(dict(ranks=comm.size, hold=HOLD, rows=rows)))
sys.stdout.flush()
