"""Running LAMMPS decks with `fix pylal` from the tests: data files, mpirun, thermo and dumps."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NKTV2P = 1.6021765e6  # metal units: bar per eV/A^3 (LAMMPS force->nktv2p)


def env(**extra) -> dict:
    """One thread per rank. LAMMPS runs the pylal installed in the venv (`make test` reinstalls
    it whenever a source file changed), where the plugin library is."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # not the source tree: no plugin there
    return dict(base, **extra, OMP_NUM_THREADS="1",
                XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


def write_data(atoms, path, elements) -> None:
    ase.io.write(path, atoms, format="lammps-data", specorder=list(elements), masses=True)


def run_lmp(deck: str, workdir: Path, ranks: int = 1, timeout: int = 900, check: bool = True, **extra_env):
    """Runs `mpirun -np ranks lmp -in in.deck` in workdir (the plugin auto-loads from the venv)."""
    (workdir / "in.deck").write_text(deck)
    cmd = [str(BIN / "mpirun"), "-np", str(ranks), str(BIN / "lmp"), "-in", "in.deck", "-log", "log.lammps"]
    out = subprocess.run(cmd, cwd=workdir, env=env(**extra_env), capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"lmp failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def run_driver(config: dict, workdir: Path, ranks: int = 1, timeout: int = 900) -> dict:
    """Runs tests/lammps/driver.py (LAMMPS driven from Python) under mpirun; returns its JSON."""
    (workdir / "driver.json").write_text(json.dumps(config))
    cmd = [str(BIN / "mpirun"), "-np", str(ranks), sys.executable, str(ROOT / "tests/lammps/driver.py"), "driver.json"]
    out = subprocess.run(cmd, cwd=workdir, env=env(), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"driver failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads((workdir / "driver_out.json").read_text())


def thermo(log_text: str) -> list[dict]:
    """All thermo rows of a LAMMPS log, as dicts keyed by column name."""
    rows, header = [], None
    for line in log_text.splitlines():
        words = line.split()
        if words and words[0] == "Step":
            header = words
            continue
        if header and words and len(words) == len(header):
            try:
                rows.append(dict(zip(header, map(float, words))))
                continue
            except ValueError:
                pass
        if words and words[0] == "Loop":
            header = None
    return rows


def read_dump(path: Path) -> dict[int, np.ndarray]:
    """Last-frame-wins map step -> (N, columns) array sorted by atom id (first column = id)."""
    frames, lines = {}, Path(path).read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("ITEM: TIMESTEP"):
            step = int(lines[i + 1])
            n = int(lines[i + 3])
            start = next(k for k in range(i, len(lines)) if lines[k].startswith("ITEM: ATOMS")) + 1
            data = np.array([[float(v) for v in lines[k].split()] for k in range(start, start + n)])
            frames[step] = data[np.argsort(data[:, 0])]
            i = start + n
        else:
            i += 1
    return frames
