"""Bayesian fitting: recovery of a known linear model, committee statistics, parameter file."""
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from pylal.calculator import PylalCalculator
from pylal.fit.bayes import bayesian_fit, sample_committee
from pylal.fit.committee import fit_parameters
from pylal.fit.design import Weights, build_design
from pylal.model.basis import BasisSpec
from pylal.model.params import ParameterFileError, Parameters
from conftest import random_parameters


def labelled_by(calc, atoms_list):
    out = []
    for atoms in atoms_list:
        a = atoms.copy()
        a.calc = calc
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
        out.append(a)
    return out


def test_recovers_known_linear_model(si_cell):
    """Noise-free labels from a known linear model: the fit reproduces it on held-out configurations.

    Directions of coefficient space that the data barely constrain are set by the prior (that is
    Bayesian ridge's job), so the model is compared in function space: energies and forces."""
    spec = BasisSpec(species=("Si",), r_cut=3.8, n_max=4, l_max=2)
    truth = random_parameters(spec, n_members=1)
    truth.committee = truth.mean[None]
    configs = []
    for seed in range(30):
        a = si_cell.copy()
        a.rattle(0.3, seed=seed)
        a.set_cell(a.cell * (1 + 0.05 * (seed % 3 - 1)), scale_atoms=True)
        configs.append(a)
    data = labelled_by(PylalCalculator(truth), configs)
    fitted = fit_parameters(spec, data[:24], Weights(1.0, 1.0, 1.0), n_members=4)
    psi, y, kinds = build_design(spec, data[24:], Weights(1.0, 1.0, 1.0))
    assert np.abs(psi @ truth.mean - y).max() < 1e-10  # the design reproduces the labels exactly
    err = np.linalg.norm(psi @ fitted.mean - y) / np.linalg.norm(y)
    assert err < 1e-2, err
    assert fitted.noise_precision > 1e6  # noise-free data: evidence drives the noise down
    # a noisy fit of the same data is visibly worse: the test can tell
    noisy = [a.copy() for a in data[:24]]
    for i, a in enumerate(noisy):
        f = data[i].get_forces() + np.random.default_rng(i).normal(scale=0.05, size=(len(a), 3))
        a.calc = SinglePointCalculator(a, energy=data[i].get_potential_energy(), forces=f,
                                       stress=data[i].get_stress())
    worse = fit_parameters(spec, noisy, Weights(1.0, 1.0, 1.0), n_members=4)
    worse_err = np.linalg.norm(psi @ worse.mean - y) / np.linalg.norm(y)
    assert worse_err > 3 * err, (worse_err, err)


def test_committee_covariance_approaches_sigma():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    cov = a @ a.T + 0.1 * np.eye(6)
    mean = rng.normal(size=6)
    errs = []
    for n in (100, 10000):
        c = sample_committee(mean, cov, n_members=n, seed=1)
        errs.append(np.linalg.norm(np.cov(c.T) - cov) / np.linalg.norm(cov))
    assert errs[1] < 0.05 and errs[1] < errs[0]
    # same seed, same committee
    np.testing.assert_array_equal(sample_committee(mean, cov, 4, seed=7), sample_committee(mean, cov, 4, seed=7))


def test_brr_posterior_matches_closed_form():
    """c_bar = lambda Sigma Psi^T y, Sigma^-1 = alpha I + lambda Psi^T Psi (HAL eqs. 4, 22), in scaled columns
    (each column's RMS, floored at the median column's: pylal.fit.bayes.column_scale)."""
    rng = np.random.default_rng(2)
    psi = rng.normal(size=(200, 5))
    y = psi @ rng.normal(size=5) + 0.1 * rng.normal(size=200)
    mean, cov, lam, alpha = bayesian_fit(psi, y, "brr")
    rms = np.sqrt(np.mean(psi**2, axis=0))
    scale = np.maximum(rms, np.median(rms))
    x = psi / scale
    sigma_s = np.linalg.inv(alpha * np.eye(5) + lam * x.T @ x)
    np.testing.assert_allclose(cov, sigma_s / np.outer(scale, scale), rtol=1e-6)
    np.testing.assert_allclose(mean, lam * sigma_s @ x.T @ y / scale, rtol=1e-6)
    assert 1 / np.sqrt(lam) == pytest.approx(0.1, rel=0.2)  # noise level recovered


def test_rare_column_keeps_a_typical_prior():
    """A column the training rows barely touch (a dilute species' environment) must not get a prior wide in
    proportion to 1 / its RMS: a new row that does touch it is then predicted from the prior scale of a typical
    column, not extrapolated (the W-Be failure: cross-validation errors 15x those of predicting zero)."""
    rng = np.random.default_rng(3)
    psi = rng.normal(size=(300, 6))
    psi[:, 5] = 0.0
    psi[:3, 5] = 1e-4 * rng.normal(size=3)  # seen in three rows, with a tiny value
    c_true = rng.normal(size=6)
    y = psi @ c_true + 0.05 * rng.normal(size=300)
    mean, cov, lam, alpha = bayesian_fit(psi, y, "brr")
    # its posterior std (~ its prior's: the data hardly constrain it) is that of a typical coefficient (|c| ~ 1
    # here), not 1 / its RMS (~1e5)
    assert np.sqrt(cov[5, 5]) < 10 * np.abs(c_true).max(), cov[5, 5]
    assert abs(mean[5]) < 10 * np.abs(c_true).max()


def test_ard_prunes_irrelevant_columns():
    rng = np.random.default_rng(3)
    psi = rng.normal(size=(300, 8))
    truth = np.array([1.0, -2.0, 0, 0, 0.5, 0, 0, 0])
    y = psi @ truth + 0.01 * rng.normal(size=300)
    mean, cov, lam, alpha = bayesian_fit(psi, y, "ard")
    np.testing.assert_allclose(mean, truth, atol=0.01)
    assert np.all(np.diag(cov)[truth == 0] < 1e-6)


def test_parameter_file_roundtrip_and_errors(tmp_path, si_spec):
    p = random_parameters(si_spec, n_members=3)
    p.version = 4
    path = tmp_path / "params.npz"
    h = p.save(path)
    q = Parameters.load(path)
    assert q.content_hash == h and q.version == 4 and q.spec == si_spec
    np.testing.assert_array_equal(q.committee, p.committee)
    with pytest.raises(ParameterFileError, match="does not exist"):
        Parameters.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ParameterFileError, match="corrupt"):
        Parameters.load(tmp_path / "junk.npz")
    # tamper with the coefficients: the hash check catches it
    with np.load(path) as z:
        arrays = dict(z)
    arrays["mean"] = arrays["mean"] + 1e-9
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(ParameterFileError, match="hash"):
        Parameters.load(tmp_path / "tampered.npz")


def test_calibration_stats_leave_out_components_fixed_by_symmetry():
    """A perfect crystal's forces: the committee's std is ~1e-16 (symmetry), a DFT label's error is grid
    noise (1e-4 eV/A); their z would dominate rms z (once it made the cross-validation scale 1e10).
    They are left out of z, not of the RMSE."""
    from pylal.fit.holdout import calibration_stats

    err = np.array([0.1, -0.1, 0.2, 1e-4, -2e-4])
    std = np.array([0.1, 0.1, 0.2, 1e-16, 3e-17])
    stats = calibration_stats(err, std)
    assert stats["rms_z"] == pytest.approx(1.0) and stats["coverage95"] == 1.0 and stats["n"] == 5
    assert stats["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))
    assert calibration_stats(err[:3], 0.5 * std[:3])["rms_z"] == pytest.approx(2.0)  # unchanged otherwise


def test_a_liquid_label_after_crystal_labels_compiles_nothing_new(monkeypatch):
    """Design rows pad their sizes 1.75x (pylal.fit.design.DESIGN_HEADROOM), not MD's 1.25x: in `make demo` a 2500 K
    liquid flagged after the rattled crystals crowded 14 neighbours on one atom against 10-12, and its design rows
    compiled the D-member step again (a 38 s refit with the ACE basis while the walker waited)."""
    from pylal.fit.design import DesignSet
    from pylal.model import committee
    from pylal.model.member_gradients import neighbor_slots
    from pylal.model.neighbors import ase_pairs
    from pylal.reference import make_calculator
    from pylal.sampling import diamond_si, oracle_md

    for table in ("_ATOM_CAPACITY", "_PAIR_CAPACITY", "_SLOT_CAPACITY"):  # sizes as in a fresh server
        monkeypatch.setattr(committee, table, {})
    sw = make_calculator("lammps")
    crystals = []
    for seed in range(2):
        a = diamond_si(2)
        a.rattle(0.03, seed=seed)
        crystals += labelled_by(sw, [a])
    liquid = oracle_md(diamond_si(2), sw, 3000, 1, equilibrate=1500, seed=0)[0]
    spec = BasisSpec(species=("Si",), r_cut=3.8, n_max=3, l_max=2)  # a spec of its own: its own compiled step

    def crowding(atoms):
        pairs = ase_pairs(atoms, spec.r_cut, spec.species)
        return neighbor_slots(pairs.centers, pairs.n_centers)[1]

    # the case: MD's rule, sized on the crystals, has no room for the liquid's most crowded atom (14 vs 9-10)
    md_slots = committee._capacity({}, (0, committee.HEADROOM), max(crowding(a) for a in crystals), minimum=8)
    assert crowding(liquid) > md_slots
    design = DesignSet(spec, Weights())
    before = committee.TRACE_COUNTS["committee_step"]
    for atoms in crystals + [liquid]:
        design.add(atoms)
    assert committee.TRACE_COUNTS["committee_step"] - before == 1
