"""The collectives of one LAMMPS run's engine over its MPI communicator (mpi4py); with no
communicator (or one rank) each is the identity. The HAL scalars of a step go through
`hal_reduce`: ONE Allreduce of the controller's packed vector (pylal.hal.controller.PACKED) with a
user-defined operation (`combine_packed`: sums, and the exact softmax merge). Where the other ranks
may wait seconds for rank 0 (the on_flag wait for the refit server), `bcast_idle` lets them sleep."""
from __future__ import annotations

import time

import numpy as np

from pylal.hal.controller import combine_packed


def _hal_op(inbuf, outbuf, datatype):
    a = np.frombuffer(inbuf, dtype=np.float64)
    b = np.frombuffer(outbuf, dtype=np.float64)
    b[:] = combine_packed(a, b)


class Collectives:
    def __init__(self, comm=None):
        self.comm = comm if comm is not None and comm.Get_size() > 1 else None
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = 1 if self.comm is None else self.comm.Get_size()
        self._op = None  # the HAL operation, created on first use

    @property
    def parallel(self) -> bool:
        return self.comm is not None

    def sum(self, x):
        x = np.array(x, dtype=np.float64, order="C")  # (0-d stays 0-d)
        if self.comm is None:
            return x
        from mpi4py import MPI
        out = np.empty_like(x)
        self.comm.Allreduce(x, out, op=MPI.SUM)
        return out

    def max(self, x):
        if self.comm is None:
            return x
        from mpi4py import MPI
        return self.comm.allreduce(float(x), op=MPI.MAX)

    def hal_reduce(self, packed: np.ndarray) -> np.ndarray:
        if self.comm is None:
            return packed
        from mpi4py import MPI
        if self._op is None:
            self._op = MPI.Op.Create(_hal_op, commute=True)
        out = np.empty_like(packed)
        self.comm.Allreduce(np.ascontiguousarray(packed, dtype=np.float64), out, op=self._op)
        return out

    def bcast(self, obj):
        return obj if self.comm is None else self.comm.bcast(obj, root=0)

    def bcast_idle(self, obj, max_sleep: float = 0.05):
        """`bcast` whose receivers sleep while they wait: for waits that can last seconds (rank 0
        polls the refit server, flushes the flags at the end), not for the per-step collectives. MPICH completes a
        blocking collective by busy polling, so a rank waiting in `bcast` burns a whole core (the
        one the refit needs). Here every rank enters a non-blocking barrier and tests it between
        sleeps (1 ms, doubling up to max_sleep), then the payload goes by the ordinary bcast. The
        wait is bounded as `bcast` is: by rank 0 (an exception there aborts every rank)."""
        if self.comm is None:
            return obj
        request, pause = self.comm.Ibarrier(), 0.001
        while not request.Test():
            time.sleep(pause)
            pause = min(2 * pause, max_sleep)
        return self.comm.bcast(obj, root=0)

    def allgather(self, obj) -> list:
        return [obj] if self.comm is None else self.comm.allgather(obj)

    def gather(self, obj) -> list | None:
        """Every rank's obj on rank 0 (None elsewhere)."""
        return [obj] if self.comm is None else self.comm.gather(obj, root=0)
