"""Run under mpirun: each rank owns a share of the atoms as centres; energies, sigma and the
reduced forces must equal the serial evaluation. Prints one JSON line on rank 0."""
import json
import sys
from pathlib import Path

from mpi4py import MPI

import numpy as np

from pylal.hal import physics as hal
from pylal.model.committee import CommitteeModel
from pylal.model.neighbors import PairList, ase_pairs
from pylal.sampling import diamond_si
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, as under pytest
from conftest import random_parameters  # noqa: E402
from pylal.model.basis import BasisSpec

comm = MPI.COMM_WORLD
spec = BasisSpec(species=("Si",), r_cut=3.8, n_max=6, l_max=3)
params = random_parameters(spec, n_members=8)
atoms = diamond_si(2, rattle=0.1, seed=2)
full = ase_pairs(atoms, spec.r_cut, spec.species)


def allreduce(x):
    return comm.allreduce(np.asarray(x), op=MPI.SUM)


# this rank's centres first: a permutation of the atoms, like LAMMPS's owned-then-ghost order
owned = np.arange(len(atoms))[np.arange(len(atoms)) % comm.size == comm.rank]
order = np.concatenate([owned, np.setdiff1d(np.arange(len(atoms)), owned)])
position = np.argsort(order)
keep = np.isin(full.centers, owned)
local = PairList(vectors=full.vectors[keep], centers=position[full.centers[keep]],
                 neighbors=position[full.neighbors[keep]], species=full.species[order],
                 n_centers=len(owned))
res = CommitteeModel(params, reduce_sum=allreduce).step(local, tau=0.3, members=True)
forces = allreduce(res.forces[position])
member_forces = allreduce(res.member_forces[:, position])
forces_mean = allreduce(res.forces_mean[position])
virial = allreduce(res.virial)
# f_i of owned atoms with global reductions (eps = global mean |F_bar|)
eps = hal.mean_force_norm(forces_mean[owned], allreduce)
f_owned = hal.relative_force_uncertainty(member_forces[:, owned], forces_mean[owned], eps)
s, f_max = hal.softmax_score(f_owned, reduce_sum=allreduce,
                             reduce_max=lambda x: comm.allreduce(x, op=MPI.MAX))

serial = CommitteeModel(params).step(full, tau=0.3, members=True)
eps_s = hal.mean_force_norm(serial.forces_mean)
f_s = hal.relative_force_uncertainty(serial.member_forces, serial.forces_mean, eps_s)
s_s, f_max_s = hal.softmax_score(f_s)
if comm.rank == 0:
    print(json.dumps(dict(
        ranks=comm.size,
        d_energy=abs(res.energy_hal - serial.energy_hal),
        d_sigma=abs(res.sigma - serial.sigma),
        d_forces=float(np.abs(forces - serial.forces).max()),
        d_member_forces=float(np.abs(member_forces - serial.member_forces).max()),
        d_virial=float(np.abs(virial - serial.virial).max()),
        d_softmax=abs(s - s_s), d_f_max=abs(f_max - f_max_s))))
sys.stdout.flush()
