"""Shared set-up of the server tests: a run folder with a config and a small labelled training set,
servers in a thread (fast) or in a subprocess (for kill -9), SW-labelled Si cells."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ase.io import write

from pylal.reference import label, make_calculator
from pylal.sampling import diamond_si

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SMALL = dict(species=["Si"], r_cut=3.8, r_min=1.5, n_max=4, l_max=2)  # basis size 35: fast fits


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def si_cell(seed: int, repeat=1, rattle=0.1, n_atoms=None):
    """Rattled diamond Si (8 atoms for repeat 1); n_atoms < 8: atoms removed (vacancies),
    n_atoms > 8: interstitials added (the faulty reference keys on the atom count)."""
    atoms = diamond_si(repeat, rattle=rattle, seed=seed)
    if n_atoms is not None:
        while len(atoms) > n_atoms:
            del atoms[-1]
        k = 0
        while len(atoms) < n_atoms:
            atoms.append("Si")
            atoms.positions[-1] = [1.36 + 0.9 * k, 1.36, 4.07]
            k += 1
    return atoms


_INITIAL_CACHE: dict = {}


def initial_set(n=4, repeat=1):
    key = (n, repeat)
    if key not in _INITIAL_CACHE:
        calc = make_calculator("lammps")
        _INITIAL_CACHE[key] = [label(si_cell(1000 + s, repeat), calc).atoms for s in range(n)]
    return _INITIAL_CACHE[key]


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def write_config(run: Path, bind=None, initial=4, **sections) -> Path:
    """run/config.toml with run_dir = run; sections: {"executor": {...}, "refit": {...}, ...}."""
    run.mkdir(parents=True, exist_ok=True)
    fit = dict(SMALL, n_members=8, **sections.pop("fit", {}))
    if initial:
        write(run / "initial.xyz", initial_set(initial))
        fit.setdefault("initial_data", ["initial.xyz"])
    top = {"run_dir": str(run), "bind": bind or "tcp://127.0.0.1:*",
           **{k: sections.pop(k) for k in list(sections) if not isinstance(sections[k], dict)}}
    sections["fit"] = fit
    sections.setdefault("executor", {}).setdefault("pythonpath", [str(HERE)])
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for name, table in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path = run / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class ThreadServer:
    """The real Server, run in a thread of the test process (JAX stays warm between tests)."""

    def __init__(self, config_path):
        from pylal.server.config import ServerConfig
        from pylal.server.server import Server

        self.cfg = ServerConfig.load(config_path)
        self.server = Server(self.cfg)
        self.thread = threading.Thread(target=self.server.serve, kwargs=dict(install_signals=False), daemon=True)
        self.thread.start()
        assert self.server.ready.wait(120), "server did not start"
        self.address = self.server.address
        self.key = self.server.key

    def stop(self):
        self.server.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_process(config_path, run: Path, timeout=300) -> subprocess.Popen:
    """`pylal serve CONFIG` as a subprocess; returns once RUN/server.json names its pid."""
    (run / "server.json").unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{HERE}", OMP_NUM_THREADS="1")
    log = open(run / "serve.out", "a")
    proc = subprocess.Popen([sys.executable, "-m", "pylal.cli", "serve", str(config_path)], stdout=log,
                            stderr=subprocess.STDOUT, env=env, cwd=run, start_new_session=True)
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {(run / 'serve.out').read_text()[-3000:]}")
        try:
            if json.loads((run / "server.json").read_text())["pid"] == proc.pid:
                return proc
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    kill_process(proc)
    raise RuntimeError("server did not start in time")


def kill_process(proc: subprocess.Popen, sig=signal.SIGKILL):
    """Kill the server and its process group (its label workers), by pid."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    proc.wait(30)


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """`what`: text, or a function giving it at the timeout (state worth seeing then)."""
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")


def returns_without_waiting(fn, bound=30.0, what="the call"):
    """fn() run in a thread; its value, once it has returned. For calls that must not wait on the server
    or for a new version: the test arranges that what such a wait would wait for cannot come (no flag
    sent, no server), so a waiting call never returns and the generous `bound` only ends the test."""
    done, out = threading.Event(), []

    def call():
        try:
            out.append(("value", fn()))
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            out.append(("error", e))
        finally:
            done.set()

    threading.Thread(target=call, daemon=True).start()
    assert done.wait(bound), f"{what} waited (for something that cannot come); it must return at once"
    kind, value = out[0]
    if kind == "error":
        raise value
    return value
