"""Start cells and held-out reference MD of a campaign, for elements and alloys.

`campaign_cell` builds the `[initial] bulk` crystal, repeated, and (for an alloy) replaces a random
`substitute` fraction of its sites, e.g. `{Cu = 0.2}` turns 20 % of an fcc Al cell into Cu at random
(HAL's AlSi10 protocol starts from random alloy cells). Each seed gives another arrangement with the
same composition; without `substitute` the seed is ignored and the cell is the plain crystal.

`reference_md` is the held-out MD on the reference: Langevin NVT (pylal.sampling.oracle_md) or, with
a pressure >= 0, Langevin with an isotropic barostat (ASE's LangevinBAOAB, Langevin-Hoover cell
dynamics), so that a solid and a liquid each sit at their own density, as the walkers' do.
"""
from __future__ import annotations

import warnings

import numpy as np
from ase import units
from ase.build import bulk

from pylal.sampling import oracle_md, snapshot

try:
    from ase.md.velocitydistribution import thermalize_momenta  # ASE >= 3.29
except ImportError:  # older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def thermalize_momenta(atoms, temperature_K, rng=None):
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


def substitute_sites(atoms, fractions: dict, seed: int):
    """Replaces round(x N) randomly chosen sites by each element of `fractions` ({symbol: x}); in place."""
    total = sum(fractions.values())
    if any(x < 0 for x in fractions.values()) or total > 1:
        raise ValueError(f"substitute fractions must be >= 0 and sum to <= 1, got {fractions}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(atoms))
    start = 0
    for symbol, x in fractions.items():
        n = int(round(x * len(atoms)))
        atoms.symbols[order[start:start + n]] = symbol
        start += n
    return atoms


def campaign_cell(bulk_kwargs: dict, repeat, substitute: dict | None = None, seed: int = 0):
    """The `[initial]` cell: ase.build.bulk(**bulk_kwargs).repeat(repeat), randomly substituted."""
    atoms = bulk(**bulk_kwargs).repeat(tuple(repeat))
    if substitute:
        substitute_sites(atoms, substitute, seed)
    return atoms


def walker_cell(atoms, repeat=(1, 1, 1), vacancies: int = 0, seed: int = 0):
    """A walker's start cell: `atoms` replicated, with `vacancies` atoms removed at random."""
    atoms = atoms.repeat(tuple(repeat))
    if vacancies >= len(atoms):
        raise ValueError(f"vacancies = {vacancies}: the cell has only {len(atoms)} atoms")
    del atoms[np.random.default_rng(seed).choice(len(atoms), vacancies, replace=False)]
    return atoms


def md_timestep_fs(atoms, longest: float = 2.0) -> float:
    """An MD step for these atoms: `longest` (2 fs) for atoms as heavy as carbon or heavier, shorter for
    lighter ones in proportion to their vibrational period (~sqrt(mass)): 0.58 fs with hydrogen (the usual
    0.5-1 fs), 1.7 fs with Be. 2 fs with H made GFN2-xTB MD of methylamine at 1200 K lose SCF convergence."""
    lightest = float(np.min(atoms.get_masses())) if len(atoms) else 12.0
    return float(min(longest, longest * np.sqrt(lightest / 12.0)))


def reference_md(atoms, calculator, temperature: float, n_samples: int, stride: int = 50, seed: int = 0,
                 equilibrate: int = 200, pressure: float = -1.0, timestep_fs: float | None = None,
                 friction: float = 0.02, pressure_tau_fs: float = 500.0) -> list:
    """Labelled snapshots of reference MD at `temperature` (K). pressure (bar) < 0: NVT Langevin
    (friction in 1/fs); >= 0: the same thermostat time (1/friction) with a hydrostatic barostat.
    timestep_fs None: `md_timestep_fs` of the atoms."""
    if timestep_fs is None:
        timestep_fs = md_timestep_fs(atoms)
    if pressure < 0:
        return oracle_md(atoms, calculator, temperature, n_samples, stride=stride, equilibrate=equilibrate,
                         timestep_fs=timestep_fs, friction=friction, seed=seed)
    from ase.md.langevinbaoab import LangevinBAOAB

    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    with warnings.catch_warnings():  # the cell mass comes from ASE's heuristic for P_tau (it says so)
        warnings.filterwarnings("ignore", message="Using heuristic P_mass")
        dyn = LangevinBAOAB(atoms, timestep_fs * units.fs, temperature_K=temperature,
                            externalstress=-pressure * units.bar,  # ASE stress = -pressure
                            hydrostatic=True, T_tau=units.fs / friction, P_tau=pressure_tau_fs * units.fs, rng=rng)
    dyn.run(equilibrate)
    out = []
    for _ in range(n_samples):
        dyn.run(stride)
        atoms.get_stress()
        out.append(snapshot(atoms))
    return out
