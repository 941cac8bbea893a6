"""A fit never goes beyond its prior on unseen data (pylal.fit.committee.prior_shrinkage): when the
cross-validation force error of the fitted correction exceeds the prior's own (a zero correction), the
correction is shrunk toward the prior by the factor that cross-validation prefers."""
import numpy as np
import pytest

from pylal.fit.committee import FitSettings, fit_design, prior_shrinkage
from pylal.fit.design import DesignSet
from pylal.model.basis import BasisSpec

SPEC = BasisSpec(species=("Si",), n_max=2, l_max=1, prior=None)  # D = 9


def force_rows(rng, n=30):
    rows = rng.normal(size=(n, SPEC.size))
    rows[:, 0] = 0.0  # the constant feature has no force rows
    return rows


def test_shrinkage_factor_is_the_least_squares_scale_of_the_cross_validated_correction():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=500)
    cv = dict(ref_F=ref, err_F=3.0 * ref - ref + 0.01 * rng.normal(size=500))  # predictions 3x too large
    shrink = prior_shrinkage(cv)
    assert shrink["factor"] == pytest.approx(1 / 3, rel=1e-3)
    assert shrink["shrunk_force_rmse"] < 0.01 < shrink["prior_force_rmse"] < shrink["cv_force_rmse"]
    assert prior_shrinkage(dict(ref_F=ref, err_F=0.5 * ref)) is None  # better than the prior: unchanged


def test_a_fit_whose_configurations_contradict_each_other_falls_back_to_its_prior():
    """Two configurations with the same rows and opposite targets: each fold's fit predicts the other's
    forces with the wrong sign (cross-validation error 2x the prior's), so the correction shrinks to 0."""
    rng = np.random.default_rng(1)
    rows = force_rows(rng)
    c = rng.normal(size=SPEC.size)
    kinds = np.array(["F"] * len(rows))
    design = DesignSet(SPEC)
    design.add_block(rows, rows @ c, kinds)
    design.add_block(rows, -(rows @ c), kinds)
    params = fit_design(design, FitSettings(n_members=4))
    shrink = params.hyper["shrink"]
    assert shrink["cv_force_rmse"] > 1.5 * shrink["prior_force_rmse"]
    assert shrink["factor"] == 0.0
    np.testing.assert_allclose(params.mean, 0.0, atol=1e-12)  # the prior (no reference energies here)
    assert params.hyper["calibration"]["forces"]["rmse"] == pytest.approx(shrink["prior_force_rmse"], rel=1e-9)


def test_a_consistent_fit_is_not_shrunk():
    rng = np.random.default_rng(2)
    c = rng.normal(size=SPEC.size)
    design = DesignSet(SPEC)
    for _ in range(4):
        rows = force_rows(rng)
        design.add_block(rows, rows @ c + 0.01 * rng.normal(size=len(rows)), np.array(["F"] * len(rows)))
    params = fit_design(design, FitSettings(n_members=4))
    assert "shrink" not in params.hyper
    assert params.hyper["calibration"]["forces"]["rmse"] < 0.05


def test_the_shrink_message_names_the_errors_and_what_to_change():
    from pylal.server.server import shrink_message

    text = shrink_message(dict(version=3, cv_force_rmse=32.3, prior_force_rmse=2.21, factor=0.0,
                               shrunk_force_rmse=2.21))
    assert "v3" in text and "32.3" in text and "2.21" in text and "0.00" in text and "[fit]" in text
