"""Labelling by the reference calculator, run by an executor: local worker processes or Dask.

Both executors share one small interface used by the server's scheduler thread:
    capacity() -> int                  free slots
    submit(task_id, config)            config: dict of numpy arrays (numbers, positions, cell, pbc)
    collect(wait) -> [(task_id, result)]  finished tasks, waiting at most `wait` seconds
    close()
A result is {"ok": True, "results": {...}, "wall_time": s} or {"ok": False, "error": "Type: text",
"wall_time": s}. Failures are values (pylal.reference.label turns exceptions and NaN/inf results
into LabelFailure); a task past `timeout` is a failure too: the local executor kills the worker
process and everything it started (a hung calculation cannot be interrupted otherwise; the worker runs
in its own process group, so a DFT code it launched dies with it) and starts a new one; the Dask
executor cancels the future and restarts that worker through its nanny (Client.restart_workers).
Retries are the scheduler's job (server.py), so both executors behave the same.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_connections
from pathlib import Path

import msgpack
import numpy as np

# ---- the task itself (runs in a worker process) ---------------------------------------------
_CALCULATORS: dict = {}


def label_config(config: dict, reference: dict) -> dict:
    """Label one configuration with the reference named in `reference` (calculator, options, properties).
    The calculator is built once per worker process and reused."""
    from ase import Atoms

    from pylal.reference import label, make_calculator

    start = time.perf_counter()
    try:
        key = msgpack.packb([reference["calculator"], reference.get("options", {})])
        if key not in _CALCULATORS:
            _CALCULATORS[key] = make_calculator(reference["calculator"], **reference.get("options", {}))
        atoms = Atoms(numbers=config["numbers"], positions=config["positions"], cell=config["cell"],
                      pbc=config["pbc"])
        out = label(atoms, _CALCULATORS[key], tuple(reference.get("properties", ("energy", "forces", "stress"))))
    except Exception as err:  # building the calculator failed, or a bug: still a value
        return {"ok": False, "error": f"{type(err).__name__}: {err}", "wall_time": time.perf_counter() - start}
    if not out.ok:
        return {"ok": False, "error": f"{out.error_type}: {out.message}", "wall_time": out.wall_time}
    return {"ok": True, "results": {k: np.asarray(v) for k, v in out.results.items()}, "wall_time": out.wall_time}


# ---- msgpack with numpy arrays (the local pipe carries no pickle either) ---------------------
def _default(obj):
    if isinstance(obj, np.ndarray):
        return {"__nd__": True, "dtype": obj.dtype.str, "shape": list(obj.shape),
                "data": np.ascontiguousarray(obj).tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot pack {type(obj).__name__}")


def _hook(obj):
    if obj.get("__nd__"):
        return np.frombuffer(obj["data"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    return obj


def pack(obj) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpack(data: bytes):
    return msgpack.unpackb(data, object_hook=_hook, raw=False)


def _worker_main(fd: int):
    """Local worker loop (`python -m pylal.server.executor FD`): the first message is the reference
    spec and extra sys.path entries; then receive {task, config}, send {task, result}; exit on None/EOF."""
    conn = Connection(fd)
    setup = unpack(conn.recv_bytes())
    _prepend_paths(setup["pythonpath"])
    try:
        import pylal.reference  # noqa: F401  (warm imports before declaring ready)
    except Exception:
        pass
    conn.send_bytes(pack({"ready": os.getpid()}))
    while True:
        try:
            msg = unpack(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if msg is None:
            return
        try:
            result = label_config(msg["config"], setup["reference"])
        except BaseException as err:  # noqa: BLE001 - report anything, keep the worker alive
            result = {"ok": False, "error": f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}",
                      "wall_time": 0.0}
        conn.send_bytes(pack({"task": msg["task"], "result": result}))


def _prepend_paths(paths):
    for p in reversed(paths):
        if p not in sys.path:
            sys.path.insert(0, p)


class _Worker:
    """A worker process started with subprocess (not multiprocessing: spawn would re-import the
    server's __main__, fork is unsafe with threads and JAX), talking over a socketpair with
    length-prefixed msgpack frames (multiprocessing.connection.Connection, send_bytes/recv_bytes)."""

    def __init__(self, reference, pythonpath):
        parent, child = socket.socketpair()
        # the child imports the same pylal as this process, whatever the install
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *pythonpath, os.environ.get("PYTHONPATH", "")]))
        # its own process group: a kill at the timeout also ends what the reference started (cp2k_shell, mpirun)
        self.proc = subprocess.Popen([sys.executable, "-m", "pylal.server.executor", str(child.fileno())],
                                     pass_fds=[child.fileno()], env=env, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        child.close()
        self.conn = Connection(parent.detach())
        self.conn.send_bytes(pack({"reference": reference, "pythonpath": list(pythonpath)}))
        self.ready = False
        self.task = None  # (task_id, deadline, started)

    def kill(self):
        try:  # the worker and every process it started (a DFT code computing a label past its timeout)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.conn.close()


class LocalExecutor:
    """N long-lived worker processes, each labelling one configuration at a time."""

    kind = "local"

    def __init__(self, workers: int, reference: dict, timeout: float, pythonpath=()):
        self.n, self.reference, self.timeout = workers, dict(reference), timeout
        self.pythonpath = list(pythonpath)
        self.workers = [_Worker(self.reference, self.pythonpath) for _ in range(workers)]
        self.backlog: list = []  # submitted while no worker was ready

    def capacity(self) -> int:
        return self.n - sum(w.task is not None for w in self.workers) - len(self.backlog)

    def submit(self, task_id, config: dict):
        self.backlog.append((task_id, config))
        self._dispatch()

    def _dispatch(self):
        for w in self.workers:
            if not self.backlog:
                return
            if w.ready and w.task is None:
                task_id, config = self.backlog.pop(0)
                w.conn.send_bytes(pack({"task": task_id, "config": config}))
                w.task = (task_id, time.monotonic() + self.timeout, time.monotonic())

    def _replace(self, w):
        w.kill()
        i = self.workers.index(w)
        self.workers[i] = _Worker(self.reference, self.pythonpath)

    def collect(self, wait: float = 0.1) -> list:
        done = []
        deadline = min([w.task[1] for w in self.workers if w.task] + [time.monotonic() + wait])
        ready = wait_connections([w.conn for w in self.workers], timeout=max(0.0, deadline - time.monotonic()))
        for w in list(self.workers):
            if w.conn in ready:
                try:
                    msg = unpack(w.conn.recv_bytes())
                except (EOFError, OSError):  # the worker died (segfault in the reference, OOM kill, ...)
                    if w.task is not None:
                        done.append((w.task[0], {"ok": False, "wall_time": time.monotonic() - w.task[2],
                                                 "error": f"WorkerDied: label worker exited with code "
                                                          f"{w.proc.poll()}"}))
                    self._replace(w)
                    continue
                if "ready" in msg:
                    w.ready = True
                elif w.task is not None and msg.get("task") == w.task[0]:
                    done.append((w.task[0], msg["result"]))
                    w.task = None
        now = time.monotonic()
        for w in list(self.workers):
            if w.task is not None and now > w.task[1]:
                done.append((w.task[0], {"ok": False, "wall_time": now - w.task[2],
                                         "error": f"Timeout: no result after {self.timeout:g} s "
                                                  "(worker killed and replaced)"}))
                self._replace(w)
        self._dispatch()
        return done

    def close(self):
        for w in self.workers:
            try:
                w.conn.send_bytes(pack(None))
            except OSError:
                pass
        for w in self.workers:
            try:
                w.proc.wait(2)
            except subprocess.TimeoutExpired:
                pass
            w.kill()


class DaskExecutor:
    """Labels on a Dask cluster: an existing scheduler (`address`; with dask-jobqueue this is a
    SLURM/PBS cluster) or, without an address, a LocalCluster of `workers` processes."""

    kind = "dask"

    def __init__(self, workers: int, reference: dict, timeout: float, address: str = "", pythonpath=()):
        from distributed import Client, LocalCluster

        self.reference, self.timeout, self.n = dict(reference), timeout, workers
        self.cluster = None
        if address:
            self.client = Client(address, timeout=30)
        else:
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=":0")
            self.client = Client(self.cluster)
        self.pythonpath = list(pythonpath)
        self._add_paths()
        self.futures: dict = {}  # task_id -> (future, deadline, started)

    def _add_paths(self):
        if self.pythonpath:
            self.client.run(_prepend_paths, self.pythonpath)

    def capacity(self) -> int:
        n = max(len(self.client.scheduler_info(n_workers=-1).get("workers", {})), self.n) \
            if self.cluster is None else self.n
        return n - len(self.futures)

    def submit(self, task_id, config: dict):
        fut = self.client.submit(label_config, config, self.reference, pure=False,
                                 key=f"pylal-label-{task_id}-{uuid.uuid4().hex[:8]}")
        self.futures[task_id] = (fut, time.monotonic() + self.timeout, time.monotonic())

    def collect(self, wait: float = 0.1) -> list:
        end = time.monotonic() + wait
        while True:
            done, now = [], time.monotonic()
            for task_id, (fut, deadline, started) in list(self.futures.items()):
                if fut.done():
                    try:
                        result = fut.result()
                    except Exception as err:  # the task itself raised (label_config catches most)
                        result = {"ok": False, "error": f"{type(err).__name__}: {err}", "wall_time": now - started}
                    done.append((task_id, result))
                    del self.futures[task_id]
                elif now > deadline:
                    self._kill(fut)
                    done.append((task_id, {"ok": False, "wall_time": now - started,
                                           "error": f"Timeout: no result after {self.timeout:g} s "
                                                    "(future cancelled, worker restarted)"}))
                    del self.futures[task_id]
            if done or time.monotonic() >= end:
                return done
            time.sleep(min(0.02, max(0.0, end - time.monotonic())))

    def _kill(self, fut):
        """A hung task keeps its worker thread: restart the worker process that runs it."""
        try:
            busy = [w for w, keys in self.client.processing().items() if fut.key in keys]
            fut.cancel()
            if busy:
                self.client.restart_workers(busy, raise_for_error=False)
                self._add_paths()
        except Exception:  # best effort: the label is already recorded as failed
            pass

    def close(self):
        for fut, _, _ in self.futures.values():
            fut.cancel()
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(cfg, reference: dict):
    """From the [executor] section of the server config."""
    if cfg.kind == "dask":
        return DaskExecutor(cfg.workers, reference, cfg.timeout, cfg.address, cfg.pythonpath)
    return LocalExecutor(cfg.workers, reference, cfg.timeout, cfg.pythonpath)


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]))
