"""HAL functions (pure, reductions passed in) and the ASE HAL-MD path."""
import numpy as np
import pytest
from ase import units
from ase.md.verlet import VelocityVerlet
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from pylal.calculator import PylalCalculator
from pylal.hal import physics as hal
from pylal.model.committee import TRACE_COUNTS
from conftest import random_parameters


def test_sigma_and_bias_coefficients_match_definitions():
    rng = np.random.default_rng(0)
    committee, mean, b = rng.normal(size=(32, 10)), rng.normal(size=10), rng.normal(size=10)
    e_k, e_bar = committee @ b, mean @ b
    lam = 50.0
    sigma = float(hal.committee_sigma(e_k, e_bar, lam))
    assert sigma**2 == pytest.approx(1 / lam + np.mean((e_k - e_bar) ** 2))
    w = np.asarray(hal.bias_coefficients(committee, mean, e_k, e_bar, sigma))
    # d sigma / d B by finite differences of sigma(B) equals w (eqs. 9-10 with linearity)
    def sig(bb):
        return float(hal.committee_sigma(committee @ bb, mean @ bb, lam))
    num = np.array([(sig(b + 1e-6 * e) - sig(b - 1e-6 * e)) / 2e-6 for e in np.eye(10)])
    np.testing.assert_allclose(w, num, rtol=1e-6)
    assert hal.hal_energy(1.0, 0.5, sigma) == pytest.approx(1.0 - 0.5 * sigma)


def test_softmax_criterion_and_reductions():
    f = np.array([0.1, 0.2, 3.0, 0.1])
    s, f_max = hal.softmax_score(f)
    assert f_max == 3.0 and s == pytest.approx(np.exp(3.0) / np.exp(f).sum())
    assert hal.triggered(s, f_max, s_tol=0.5) and not hal.triggered(s, f_max, s_tol=0.95)
    assert hal.triggered(0.0, f_max, s_tol=None, f_tol=2.0)
    # absolute energy uncertainty per atom (pylal's sigma_tol), independent of f_i
    assert hal.triggered(0.0, 0.0, None, 1.0, sigma_per_atom=0.01, sigma_tol=0.005)
    assert not hal.triggered(0.0, 0.0, None, 1.0, sigma_per_atom=0.004, sigma_tol=0.005)
    assert not hal.triggered(0.0, 0.0, None, 1.0, sigma_per_atom=0.01, sigma_tol=None)
    # split over two "ranks": the reductions give the same answer
    parts = [f[:2], f[2:]]
    s2, fm2 = hal.softmax_score(parts[0], reduce_sum=lambda x: sum(np.sum(np.exp(p - 3.0)) for p in parts),
                                reduce_max=lambda x: max(p.max() for p in parts))
    assert s2 == pytest.approx(s) and fm2 == f_max
    # for N atoms with similar f_i the softmax tends to 1/N: a size-independent criterion is needed
    big = np.full(1000, 0.5)
    big[0] = 2.0
    assert hal.softmax_score(big)[0] < 0.01


def test_adaptive_tau_follows_eq12():
    t = hal.AdaptiveTau(tau_rel=0.1, window=3)
    assert t.update(10.0, 1.0) == 0.0  # burn-in
    t.update(10.0, 1.0)
    assert t.update(10.0, 1.0) == pytest.approx(0.1 * 30 / 3)
    assert t.update(20.0, 1.5) == pytest.approx(0.1 * 40 / 3.5)  # oldest sample dropped
    # cap: the last step's bias never exceeded tau_rel * |F_bar| (a sudden rise of grad sigma)
    assert t.update(20.0, 10.0) == pytest.approx(0.1 * 20 / 10.0)
    assert t.tau < 0.1 * 50 / 12.5
    restored = hal.AdaptiveTau.from_state(t.state())
    assert restored.tau == t.tau
    with pytest.raises(ValueError):
        hal.AdaptiveTau(tau_rel=-1)


def test_hal_md_energy_conservation_and_compilations(si_spec, si_cell):
    """NVE with a fixed tau conserves E_HAL + kinetic energy; a 1000-step run compiles a handful of times."""
    atoms = si_cell.repeat((2, 1, 1))
    atoms.calc = PylalCalculator(random_parameters(si_spec, seed=5, spread=0.05), tau=0.2, check_every=10)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    before = sum(TRACE_COUNTS.values())
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    energies = []
    for _ in range(100):
        dyn.run(10)
        energies.append(atoms.get_total_energy())
    energies = np.array(energies)
    compiled = sum(TRACE_COUNTS.values()) - before
    assert compiled <= 4, f"{compiled} compilations in 1000 steps"
    drift = np.abs(energies - energies[0]).max() / len(atoms)
    assert drift < 1e-4, f"E_HAL + KE drift {drift:.2e} eV/atom"
    assert "f_i" in atoms.calc.results


def test_breathing_ghost_and_pair_counts_keep_the_compiled_step(si_spec, si_cell):
    """LAMMPS passes owned + ghost atoms; in NPT their count and the pair count go up and down. The padded
    sizes grow only (25% headroom), so counts moving back across bucket edges do not compile again (with
    sizes that followed every bucket, the sequence below compiled 3 more times after its first two steps)."""
    from pylal.model.committee import CommitteeModel
    from pylal.model.neighbors import PairList, ase_pairs

    model = CommitteeModel(random_parameters(si_spec, seed=2))
    cell = si_cell.repeat((1, 1, 3))  # 24 centres: a padded size no other test uses
    full = ase_pairs(cell, si_spec.r_cut, si_spec.species)
    counts = []
    for ghosts, kept in [(100, 0.8), (300, 1.0), (200, 0.85), (320, 0.95), (150, 0.8), (310, 1.0), (60, 0.9)]:
        n_p = int(kept * full.n_pairs)
        pairs = PairList(full.vectors[:n_p], full.centers[:n_p], full.neighbors[:n_p],
                         np.concatenate([full.species, np.zeros(ghosts, np.int32)]), full.n_centers)
        before = sum(TRACE_COUNTS.values())
        result = model.step(pairs, tau=0.1)
        counts.append(sum(TRACE_COUNTS.values()) - before)
        assert result.forces_mean.shape == (len(cell) + ghosts, 3)
    assert sum(counts[2:]) == 0, counts
