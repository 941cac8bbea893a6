"""Batch selection on synthetic feature matrices with known answers (pylal.select, issue 6)."""

import numpy as np
import pytest

from pylal.fit.bayes import bayesian_fit
from pylal.select import METHODS, select_batch
from pylal.select.distance import lcmd, maxdist
from pylal.select.filtering import labels_to_reach, mean_curve
from pylal.select.maxdet import maxdet
from pylal.select.posterior import column_scale, posterior_kernel, posterior_transform


def test_maxdet_picks_independent_directions_never_duplicates():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(4, 7))  # the pool spans 4 directions of R^7
    pool = np.vstack([np.repeat(basis[:1] * 3, 6, axis=0),  # the largest vector, six copies
                      np.repeat(basis[1:2], 3, axis=0), basis[2:], 0.5 * basis[0] + 0.5 * basis[1],
                      2 * basis[0] - basis[3]])
    pick = maxdet(pool, 4, rng)
    assert len(set(pick.tolist())) == 4
    assert np.linalg.matrix_rank(pool[pick]) == 4  # linearly independent
    assert len({tuple(np.round(pool[i], 12)) for i in pick}) == 4  # no two copies of one vector
    # the span is exhausted after 4: with fill=False the batch stops there
    assert len(maxdet(pool, 8, rng, fill=False)) == 4
    assert len(set(maxdet(pool, 8, rng).tolist())) == 8  # filled with distinct others


def test_maxdet_is_the_greedy_determinant_maximiser():
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(12, 5)) * rng.uniform(0.2, 2, size=(12, 1))
    pick = maxdet(pool, 4, rng).tolist()
    chosen = []
    for _ in range(4):
        dets = {j: np.linalg.det(pool[chosen + [j]] @ pool[chosen + [j]].T) for j in range(12) if j not in chosen}
        chosen.append(max(dets, key=dets.get))
    assert pick == chosen


def test_maxdist_picks_the_farthest_point():
    train = np.array([[0.0, 0.0], [0.5, 0.0]])
    pool = np.array([[1.0, 0.0], [10.0, 0.0], [9.5, 0.1], [0.0, -6.0], [0.4, 0.1]])
    assert maxdist(pool, train, 1).tolist() == [1]
    # then the farthest from training u {pool[1]}: (0, -6) (6 away) beats (9.5, 0.1) (0.5 from pool[1])
    assert maxdist(pool, train, 2).tolist() == [1, 3]
    assert select_batch("maxdist", pool, train, 2, 0).tolist() == [1, 3]


def test_lcmd_picks_from_the_largest_cluster():
    rng = np.random.default_rng(2)
    train = np.array([[0.0, 0.0], [100.0, 0.0]])
    angles = rng.uniform(0, 2 * np.pi, 50)
    near_a = np.c_[np.cos(angles), np.sin(angles)] * rng.uniform(0.8, 1.2, (50, 1))  # sum d^2 ~ 50
    near_b = np.array([[103.0, 0.0], [100.0, 3.0], [97.5, 0.0]])  # sum d^2 ~ 24, but farther points
    pool = np.vstack([near_a, near_b])
    pick = lcmd(pool, train, 1)
    assert pick[0] < 50  # from A's cluster (the largest) ...
    assert pick[0] == np.argmax(np.linalg.norm(near_a, axis=1))  # ... its farthest member
    assert maxdist(pool, train, 1)[0] == 50  # whereas MAXDIST takes the farthest point overall
    # once A's cluster is split, B's cluster becomes the largest
    assert set(lcmd(pool, train, 6).tolist()) & {50, 51, 52}


def test_maxdiag_picks_the_largest_posterior_variances():
    rng = np.random.default_rng(3)
    psi = np.zeros((40, 3))
    psi[:, 0] = rng.normal(size=40) * 5  # training data only along e1
    psi[:, 1] = rng.normal(size=40) * 0.01
    t = posterior_transform(psi.T @ psi, len(psi))
    pool = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [2.0, 0, 0], [0, 0.3, 0]])
    var = np.einsum("ij,ij->i", t(pool), t(pool))
    assert np.argmax(var) == 2 and var[0] < 0.1 * var[2]  # e1 is known, e3 is not
    pick = select_batch("maxdiag", t(pool), None, 2, 0)
    assert set(pick.tolist()) == set(np.argsort(-var)[:2].tolist())
    assert 0 not in pick and 3 not in pick


def test_uncertainty_clustering_one_per_cluster_from_uncertain_half():
    rng = np.random.default_rng(4)
    centres = np.array([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]])
    blobs = np.vstack([c + 0.3 * rng.normal(size=(20, 3)) for c in centres])
    certain = 0.05 * rng.normal(size=(60, 3))  # the low-variance half
    pool = np.vstack([certain, blobs])
    pick = select_batch("unc_cluster", pool, None, 3, rng)
    assert all(p >= 60 for p in pick)  # only from the uncertain half
    blob_of = (pick - 60) // 20
    assert sorted(blob_of.tolist()) == [0, 1, 2]  # one per cluster
    for p, k in zip(pick, blob_of):  # the member nearest its cluster's centre
        members = blobs[20 * k:20 * k + 20]
        assert p - 60 - 20 * k == np.argmin(np.linalg.norm(members - members.mean(0), axis=1))


def test_posterior_features_reproduce_the_posterior_kernel():
    """phi_GP . phi_GP' = eq. 22 (trace heuristic), also with column scaling, and with
    sigma^2 = alpha/lambda it is alpha (prior precision) times the BRR posterior energy covariance B^T Sigma B'."""
    rng = np.random.default_rng(5)
    psi = rng.normal(size=(30, 6)) * np.array([1, 10, 0.1, 3, 1, 50])
    pool = rng.normal(size=(4, 6)) * np.array([1, 10, 0.1, 3, 1, 50])
    t = posterior_transform(psi.T @ psi, len(psi))
    assert np.allclose(t(pool) @ t(pool).T, posterior_kernel(pool, pool, psi), rtol=1e-10, atol=1e-12)
    assert np.isclose(t.sigma2, np.trace(psi.T @ psi) / (30 * 6))
    s = column_scale(psi.T @ psi, len(psi))
    ts = posterior_transform(psi.T @ psi, len(psi), scale=s)
    assert np.allclose(ts.kernel(pool, pool), posterior_kernel(pool / s, pool / s, psi / s), rtol=1e-10)
    y = psi @ rng.normal(size=6) + 0.1 * rng.normal(size=30)
    mean, cov, noise, prior = bayesian_fit(psi, y)
    te = posterior_transform(psi.T @ psi, len(psi), sigma2=prior / noise, scale=s)
    assert np.allclose(te.kernel(pool, pool), prior * pool @ cov @ pool.T, rtol=1e-6)


def test_methods_on_a_pool_of_10000_by_200():
    """All feature methods on n = 10,000, d = 200, b = 20 with 50 training points: correctness that
    does not depend on size. How long they take is measured by benchmarks/selection.py
    (synthetic_timing, the same pool size), not asserted here."""
    rng = np.random.default_rng(6)
    n, d, b = 10_000, 200, 20
    latent = rng.normal(size=(n, 30)) @ rng.normal(size=(30, d))  # low-rank plus noise, like MD data
    pool = latent + 0.1 * rng.normal(size=(n, d))
    pool[:5000] *= 0.2  # a less uncertain half
    train = pool[rng.choice(n, 50)] + 0.01
    picks = {m: select_batch(m, pool, train, b, np.random.default_rng(0)) for m in METHODS if m != "greedy_fi"}
    for m, p in picks.items():
        assert len(p) == b and len(set(p.tolist())) == b, m
    assert np.linalg.matrix_rank(pool[picks["maxdet"]]) == b
    assert (picks["unc_cluster"] >= 5000).all() and (picks["maxdiag"] >= 5000).all()


def test_select_batch_interface():
    with pytest.raises(ValueError, match="unknown method"):
        select_batch("nope", np.zeros((3, 2)), None, 1, 0)
    with pytest.raises(ValueError, match="scores"):
        select_batch("greedy_fi", None, None, 1, 0)
    assert select_batch("greedy_fi", None, None, 2, 0, scores=[0.1, 0.5, 0.3]).tolist() == [1, 2]
    assert sorted(select_batch("random", np.zeros((5, 2)), None, 9, 0).tolist()) == [0, 1, 2, 3, 4]
    # no training set: the origin is the centre, so the first distance pick is the largest norm
    pool = np.array([[1.0, 0], [0, 3.0], [2.0, 2.0]])
    assert select_batch("maxdist", pool, None, 1, 0).tolist() == [1]
    assert select_batch("lcmd", pool, np.zeros((0, 2)), 1, 0).tolist() == [1]


def test_learning_curve_helpers():
    curve = [(5, 1.0), (10, 0.5), (15, 0.25)]
    assert labels_to_reach(curve, 0.75) == pytest.approx(7.5)
    assert labels_to_reach(curve, 2.0) == 5
    assert labels_to_reach(curve, 0.1) is None
    m = mean_curve([[(5, 1.0), (10, 0.4)], [(5, 3.0), (10, 0.6)]])
    assert m[0][:2] == (5, 2.0) and m[1][1] == pytest.approx(0.5)
