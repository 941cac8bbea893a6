"""Oracle MD sampling: training and held-out configurations from a reference calculator.

Canonical MD on the reference itself (ASE's Langevin, or LAMMPS's own MD for a LAMMPS reference); every `stride` steps
after `equilibrate` steps a labelled snapshot (energy, forces, stress) is kept.
"""
from __future__ import annotations

import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution


def diamond_si(repeat=2, a=5.431, rattle=0.0, seed=0):
    atoms = bulk("Si", "diamond", a, cubic=True).repeat(repeat)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


def snapshot(atoms):
    """Copy with the current results frozen in a SinglePointCalculator."""
    a = atoms.copy()
    results = {k: atoms.calc.results[k] for k in ("energy", "forces", "stress") if k in atoms.calc.results}
    a.calc = SinglePointCalculator(a, **results)
    return a


def oracle_md(atoms, calculator, temperature, n_samples, stride=50, equilibrate=200,
              timestep_fs=2.0, friction=0.02, seed=0):
    """Labelled snapshots of Langevin MD at `temperature` (K) on the reference; friction in 1/fs. A LAMMPS
    reference on a periodic cell runs its MD inside LAMMPS (same ensemble, another thermostat and random stream:
    `LammpsCalculator.canonical_snapshots`)."""
    from pylal.reference.calculators import LammpsCalculator

    if isinstance(calculator, LammpsCalculator) and atoms.pbc.all():
        return calculator.canonical_snapshots(atoms, temperature, n_samples, stride, equilibrate, timestep_fs,
                                             friction, seed)
    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature, friction=friction / units.fs, fixcm=False,
                   rng=rng)
    dyn.run(equilibrate)
    out = []
    for _ in range(n_samples):
        dyn.run(stride)
        if atoms.pbc.all():  # a stress exists only for a fully periodic cell (not for slabs)
            atoms.get_stress()
        out.append(snapshot(atoms))
    return out
