"""`pylal filter` end to end on SW-labelled Si, and the atoms -> features layer of pylal.select."""
import csv

import numpy as np
import pytest
from ase.io import read, write

from pylal.calculator import PylalCalculator
from pylal.cli import main
from pylal.fit.committee import fit_parameters
from pylal.fit.design import configuration_blocks
from pylal.model.basis import BasisSpec
from pylal.reference import label, make_calculator
from pylal.sampling import diamond_si
from pylal.fit.design import DesignSet
from pylal.select.features import (basis_vectors, design_features, evidence_sigma2, labelled_config,
                                   posterior_features)
from pylal.select.greedy import max_relative_force_uncertainty

SPEC = BasisSpec(species=("Si",), r_cut=3.8, n_max=4, l_max=2)


@pytest.fixture(scope="module")
def pool():
    """12 SW-labelled 8-atom Si cells: rattled, strained, one with a close contact (prior active)."""
    reference = make_calculator("lammps")
    out = []
    for i in range(12):
        a = diamond_si(1, rattle=0.05 + 0.02 * (i % 4), seed=i)
        a.set_cell(a.cell * (1 + 0.02 * (i % 3 - 1)), scale_atoms=True)
        if i == 11:
            a.positions[1] = a.positions[0] + [1.0, 0.9, 0.7]  # 1.5 A: inside the ZBL switch
        res = label(a, reference)
        assert res.ok
        out.append(res.atoms)
    return out


def test_labelled_config_recovers_basis_and_prior_forces(pool):
    for a in (pool[0], pool[11]):
        c = labelled_config(SPEC, a)
        b, _, _, _, f_prior, _ = configuration_blocks(SPEC, a)
        assert np.allclose(c.basis, b, rtol=1e-12, atol=1e-9)
        assert np.allclose(c.f_prior, f_prior, atol=1e-9)
    assert np.abs(labelled_config(SPEC, pool[11]).f_prior).max() > 0.1  # the check is not vacuous


def test_greedy_score_is_the_calculators_max_fi(pool):
    params = fit_parameters(SPEC, pool[:4], n_members=8, seed=1)
    for a in (pool[5], pool[11]):
        calc = PylalCalculator(params, check_every=1)
        b = a.copy()
        b.calc = calc
        b.get_potential_energy()
        score = max_relative_force_uncertainty(labelled_config(SPEC, a), params.mean, params.committee)
        assert score == pytest.approx(calc.results["f_max"], rel=1e-8)


def test_posterior_features_from_atoms(pool):
    params = fit_parameters(SPEC, pool[:4], n_members=4)
    phi_pool, phi_train = posterior_features(SPEC, pool[4:], pool[:4])
    assert phi_pool.shape == (8, SPEC.size) and phi_train.shape == (4, SPEC.size)
    # a training configuration is better known than one far from the training set
    var_train = np.einsum("ij,ij->i", phi_train, phi_train)
    var_pool = np.einsum("ij,ij->i", phi_pool, phi_pool)
    assert var_train.max() < var_pool[-1]  # the close-contact cell is the most uncertain
    assert np.argmax(var_pool) == 7
    # evidence noise: kernel = alpha B^T Sigma B' > 0, same shapes
    e_pool, _ = posterior_features(SPEC, pool[4:], pool[:4], params=params, noise="evidence")
    assert evidence_sigma2(params) > 0 and np.all(np.isfinite(e_pool))
    # the server's path: training set as a DesignSet, candidates as unlabelled B
    design = DesignSet(SPEC)
    for a in pool[:4]:
        design.add(a)
    unlabelled = [a.copy() for a in pool[4:]]
    s_pool, s_train = design_features(design, basis_vectors(SPEC, unlabelled))
    assert np.allclose(s_pool, phi_pool, rtol=1e-9, atol=1e-12)
    assert np.allclose(s_train, phi_train, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["greedy_fi", "maxdet"])
def test_pylal_filter_end_to_end(pool, tmp_path, method):
    pool_file, held_file = tmp_path / "pool.xyz", tmp_path / "held.xyz"
    write(pool_file, pool[:10], format="extxyz")
    write(held_file, pool[10:], format="extxyz")
    out = tmp_path / "sel.xyz"
    argv = ["filter", str(pool_file), "--budget", "6", "--method", method, "--batch", "2", "--initial", "2",
            "--n-max", "4", "--l-max", "2", "--members", "8", "--random-repeats", "2", "-o", str(out)]
    if method == "maxdet":
        argv += ["--held-out", str(held_file)]
    assert main(argv) == 0
    selected = read(out, index=":")
    assert len(selected) == 6
    idx = [a.info["pool_index"] for a in selected]
    assert len(set(idx)) == 6
    assert [a.info["select_round"] for a in selected] == [0, 0, 1, 1, 2, 2]
    for a in selected:  # the reference labels travel with the configurations
        ref = pool[a.info["pool_index"]]
        assert np.allclose(a.positions, ref.positions)
        assert a.get_potential_energy() == pytest.approx(ref.get_potential_energy())
        assert np.allclose(a.get_forces(), ref.get_forces())
    with open(tmp_path / "sel_curve.csv") as f:
        rows = list(csv.DictReader(f))
    methods = {r["method"] for r in rows}
    assert methods == {method, "random (x2)"}
    assert [int(r["n_labels"]) for r in rows if r["method"] == method] == [2, 4, 6]
    assert all(float(r["force_rmse_eV_per_A"]) > 0 for r in rows)
    assert (tmp_path / "sel_curve.png").stat().st_size > 1000
