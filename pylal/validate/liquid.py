"""Liquid structure of any ASE calculator: g(r) from NVT MD of a small periodic cell.

``liquid_rdf`` starts from the diamond supercell (``repeat``^3 cubic cells, 64 atoms by default, at
the fixed lattice constant ``a``, i.e. the same volume for every calculator), melts it at ``t_melt``
for ``melt_steps``, equilibrates at ``t_liquid`` for ``equilibrate_steps`` and then histograms g(r)
every ``stride`` steps over ``sample_steps`` (Langevin, ASE; seeded, so the same calculator gives the
same trajectory). Every ``stride`` steps the configuration is checked (finite positions, no two atoms
closer than ``min_distance``, temperature below ``max_temperature_factor`` x the target) and an
UnstableError names the step and the reason. A LAMMPS reference (pylal.reference LammpsCalculator) runs
the same protocol inside LAMMPS instead (NVE + CSVR thermostat, the same canonical ensemble and friction,
its own random stream; `canonical_snapshots`): through ASE every step is a LAMMPS `run 0`, whose setup cost
20 ms per step in a campaign process whose heap JAX has fragmented (a 30-40 s reference liquid).

g(r) (``radial_distribution``) is a numpy histogram of all minimum-image pair distances: the minimum
image is exact for r below half the smallest cell height (5.43 A for the 64-atom cell), so r_max must
stay below it (checked). For 64 atoms the N^2 distance matrix per frame is cheaper than building a
neighbour list, and the same code runs for every frame. Normalisation: the ideal-gas pair count in
each shell, g(r_k) = 2 n_k / (N_frames N rho 4/3 pi (r_{k+1}^3 - r_k^3)), rho = N / V.

``coordination_number`` = 4 pi rho int_0^{r_c} g(r) r^2 dr. By default r_c = 3.1 A (``r_coordination``),
a fixed radius near the first minimum of liquid Si, not the first minimum found in g(r): liquid SW
has a very shallow minimum (g ~ 0.87-0.95 from 3.1 to 3.5 A at 2500 K), so its position in a short
run moves by +-0.15 A and the coordination with it by +-1 (docs/validation.md); at a fixed radius
it is reproducible to +-0.2. ``r_coordination=None`` integrates to the first minimum instead.

Any other system: ``LiquidSettings(structure=spec)`` (pylal/validate/structure.py) starts from that
cell instead of the diamond supercell (``a`` and ``repeat`` are then unused; the spec's own repeat
sizes the cell), at its nominal density; ``pylal.validate.derive`` scales the protocol to a campaign.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from ase import units
from ase.geometry import find_mic, get_distances
from ase.md.langevin import Langevin

from pylal.reference.calculators import LammpsCalculator
from pylal.validate.crystal import diamond_cell
from pylal.validate.stability import UnstableError, check_configuration, check_finite
from pylal.validate.structure import build_structure

try:
    from ase.md.velocitydistribution import thermalize_momenta  # ASE >= 3.29
except ImportError:  # older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def thermalize_momenta(atoms, temperature_K, rng=None):
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


@dataclasses.dataclass
class LiquidSettings:
    symbol: str = "Si"
    a: float = 5.431  # A, lattice constant of the starting diamond cell: fixes the density (NVT)
    repeat: int = 2  # 2 -> 64 atoms
    t_melt: float = 4000.0  # K
    t_liquid: float = 2500.0  # K
    melt_steps: int = 1000
    equilibrate_steps: int = 1000
    sample_steps: int = 2000
    stride: int = 10  # steps between g(r) frames and between stability checks
    timestep_fs: float = 1.0
    friction: float = 0.02  # 1/fs
    r_max: float = 5.0  # A
    n_bins: int = 100
    seed: int = 0
    r_coordination: float | None = 3.1  # A, coordination radius; None: first minimum of g(r)
    min_distance: float = 1.5  # A; closer pairs mean the model has collapsed
    max_temperature_factor: float = 3.0  # instantaneous T above this x target: exploded
    structure: dict | None = None  # start cell (pylal/validate/structure.py); None: diamond `symbol` at `a`, `repeat`

    @classmethod
    def quick(cls, **overrides) -> "LiquidSettings":
        return cls(**{"melt_steps": 800, "equilibrate_steps": 200, "sample_steps": 400, **overrides})


def inscribed_radius(cell) -> float:
    """Half the smallest distance between opposite cell faces: the minimum-image limit."""
    cell = np.asarray(cell)
    volume = abs(np.linalg.det(cell))
    heights = [volume / np.linalg.norm(np.cross(cell[i - 2], cell[i - 1])) for i in range(3)]
    return 0.5 * min(heights)


def radial_distribution(frames, cell, r_max: float, n_bins: int):
    """g(r) at the bin centres from position arrays (n_frames, N, 3) in one periodic cell."""
    frames = np.asarray(frames, dtype=float)
    if frames.ndim == 2:
        frames = frames[None]
    n_frames, n = frames.shape[:2]
    if r_max >= inscribed_radius(cell):
        raise ValueError(f"r_max {r_max} A >= half the smallest cell height {inscribed_radius(cell):.3f} A: "
                         "the minimum image would miss pairs; use a larger cell")
    edges = np.linspace(0.0, r_max, n_bins + 1)
    counts = np.zeros(n_bins)
    iu = np.triu_indices(n, 1)
    for pos in frames:
        _, d = get_distances(pos, cell=cell, pbc=True)
        counts += np.histogram(d[iu], bins=edges)[0]
    rho = n / abs(np.linalg.det(cell))
    shells = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = 2.0 * counts / (n_frames * n * rho * shells)
    return 0.5 * (edges[1:] + edges[:-1]), g


def first_peak_and_minimum(r, g) -> tuple[float, float]:
    """Position of the first peak (global maximum of g) and of the first minimum after it."""
    r, g = np.asarray(r), np.asarray(g)
    if not np.any(g > 0):
        raise UnstableError("g(r) is zero everywhere below r_max")
    smooth = np.convolve(g, np.ones(5) / 5, mode="same")  # 5 bins (0.25 A): suppress histogram noise
    peak = int(np.argmax(smooth))
    after = smooth[peak:]
    rising = np.nonzero(np.diff(after) > 0)[0]
    if len(rising) == 0:
        raise UnstableError("no minimum of g(r) after the first peak below r_max")
    return float(r[peak]), float(r[peak + rising[0]])


def coordination_number(r, g, rho: float, r_cut: float) -> float:
    """4 pi rho int_0^r_cut g(r) r^2 dr over the histogram's bins (centres r, uniform width) whose
    centre lies below r_cut, with each bin's exact shell volume: the mean neighbour count."""
    r, g = np.asarray(r), np.asarray(g)
    half = 0.5 * (r[1] - r[0])
    inside = r < r_cut
    shells = 4.0 / 3.0 * np.pi * ((r[inside] + half) ** 3 - (r[inside] - half) ** 3)
    return float(rho * np.sum(g[inside] * shells))


def _run_checked(dyn, atoms, steps: int, stride: int, settings: LiquidSettings, target: float, stage: str,
                 frames=None):
    done = 0
    while done < steps:
        n = min(stride, steps - done)
        dyn.run(n)
        done += n
        where = f" ({stage}, step {done})"
        check_configuration(atoms, settings.min_distance, where)
        check_finite(f"energy{where}", atoms.get_potential_energy())
        temperature = atoms.get_temperature()
        if not temperature < settings.max_temperature_factor * target:
            raise UnstableError(f"temperature {temperature:.0f} K > {settings.max_temperature_factor:g} x "
                                f"{target:g} K{where}")
        if frames is not None:
            frames.append(atoms.positions.copy())


def _ase_trajectory(calc, atoms, s: LiquidSettings) -> list:
    """Frames (positions) of the melt/equilibrate/sample protocol, Langevin MD in ASE, checked every stride."""
    atoms.calc = calc
    rng = np.random.default_rng(s.seed)
    thermalize_momenta(atoms, s.t_melt, rng=rng)
    dyn = Langevin(atoms, s.timestep_fs * units.fs, temperature_K=s.t_melt, friction=s.friction / units.fs,
                   fixcm=False, rng=rng)
    _run_checked(dyn, atoms, s.melt_steps, s.stride, s, s.t_melt, "melt")
    dyn.set_temperature(temperature_K=s.t_liquid)
    _run_checked(dyn, atoms, s.equilibrate_steps, s.stride, s, s.t_liquid, "equilibration")
    frames = []
    _run_checked(dyn, atoms, s.sample_steps, s.stride, s, s.t_liquid, "sampling", frames)
    return frames


def _lammps_trajectory(calc, atoms, s: LiquidSettings) -> list:
    """The same protocol inside LAMMPS (module docstring); the sampled frames are checked."""
    run = dict(timestep_fs=s.timestep_fs, friction=s.friction)
    melted = calc.canonical_snapshots(atoms, s.t_melt, 1, s.melt_steps, 0, seed=s.seed, **run)[-1]
    snapshots = calc.canonical_snapshots(melted, s.t_liquid, s.sample_steps // s.stride, s.stride,
                                         s.equilibrate_steps, seed=s.seed + 1, **run)
    for i, snap in enumerate(snapshots):
        check_configuration(snap, s.min_distance, f" (sampling, step {(i + 1) * s.stride})")
        check_finite(f"energy (sampling, step {(i + 1) * s.stride})", snap.get_potential_energy())
    return [snap.positions for snap in snapshots]


def start_cell(settings: LiquidSettings):
    """The cell that is melted: the diamond supercell, or the settings' structure."""
    if settings.structure is None:
        return diamond_cell(settings.a, settings.symbol).repeat(settings.repeat)
    return build_structure(settings.structure)


def liquid_rdf(calc, settings: LiquidSettings = LiquidSettings()) -> dict:
    """Melt, equilibrate and sample; returns r, g, first peak/minimum, coordination, density."""
    s = settings
    atoms = start_cell(s)
    trajectory = _lammps_trajectory if isinstance(calc, LammpsCalculator) else _ase_trajectory
    frames = trajectory(calc, atoms, s)
    r, g = radial_distribution(frames, atoms.cell.array, s.r_max, s.n_bins)
    rho = len(atoms) / atoms.get_volume()
    peak, minimum = first_peak_and_minimum(r, g)
    r_c = s.r_coordination if s.r_coordination is not None else minimum
    return {"r": r.tolist(), "g": g.tolist(), "first_peak": peak, "first_minimum": minimum,
            "r_coordination": r_c, "coordination": coordination_number(r, g, rho, r_c),
            "density": float(rho), "n_frames": len(frames), "msd": sampled_msd(frames, atoms.cell.array)}


def sampled_msd(frames, cell) -> float:
    """Mean squared displacement (A^2) from the first to the last sampled frame, minimum image (frames
    may be wrapped): a liquid diffuses (SW Si, 0.4 ps at 2500 K: several A^2), a crystal only vibrates
    (about 0.1 A^2). It caps at the squared half cell, so it tells "moved" from "did not", nothing finer."""
    if len(frames) < 2:
        return float("nan")
    _, lengths = find_mic(np.asarray(frames[-1]) - np.asarray(frames[0]), cell, pbc=True)
    return float(np.mean(lengths**2))
