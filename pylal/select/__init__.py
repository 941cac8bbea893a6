"""Batch selection and data-set filtering (issue 6): which configurations to label next.

`select_batch(method, features_pool, features_train, b, rng)` works on feature matrices (numpy);
`pylal.select.features` turns ase.Atoms + a training set into posterior features phi_GP;
`pylal.select.filtering` is `pylal filter` (HAL greedy max f_i and the batch methods, with a
learning curve against random selection). Equations and costs: docs/selection.md.
"""
from pylal.select.batch import FEATURE_METHODS, METHODS, select_batch
from pylal.select.posterior import PosteriorTransform, posterior_transform

__all__ = ["FEATURE_METHODS", "METHODS", "select_batch", "PosteriorTransform", "posterior_transform"]
