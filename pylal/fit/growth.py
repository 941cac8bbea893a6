"""A basis whose size follows the data, within a refit time budget.

A campaign whose config does not fix the basis size ([fit] n_max / l_max for the power basis,
max_degree for ACE) starts on the first step of a ladder (a few hundred functions for up to five
species with compressed chemical channels) and climbs it when the data support a larger basis, as
ACEpotentials' and pacemaker's users grow the polynomial degree as data come in:

1. the data determine the current coefficients: the evidence's number of well-determined parameters
   gamma (MacKay; HAL eqs. 25-27) is at least SUPPORTED_FRACTION of D, so the basis, not the data,
   limits the fit;
2. there are at least ROWS_PER_FUNCTION force rows per function of the larger basis;
3. the larger basis's refit is predicted to stay within the budget ([fit] refit_budget seconds):
   a refit costs ~kappa D^3 (QR factors and SVDs of D x D matrices), kappa measured on the last fits;
4. the trial fit of the larger basis is published only when its cross-validation force RMSE is at
   least GAIN lower than the current one's; otherwise the campaign stays, and tries again after the
   data have grown by RETRY_GROWTH.
"""
from __future__ import annotations

import dataclasses

LADDER_POWER = ((4, 3), (6, 3), (6, 4), (8, 4))  # (n_max, l_max)
LADDER_ACE = (10, 12, 14, 16, 18)  # max_degree (order 2)
SUPPORTED_FRACTION = 0.6
ROWS_PER_FUNCTION = 4.0
GAIN = 0.05
RETRY_GROWTH = 1.5  # force rows, relative to the last rejected trial
KAPPA0 = 3e-8  # s / D^3 of a whole refit before one is measured (2 shared cores, 2026-12)


def first_spec(spec):
    """The spec with its size keys at the ladder's first step."""
    if spec.kind == "ace":
        return dataclasses.replace(spec, max_degree=LADDER_ACE[0])
    n_max, l_max = LADDER_POWER[0]
    return dataclasses.replace(spec, n_max=n_max, l_max=l_max)


def next_spec(spec):
    """The next larger step of the ladder (None: at or beyond its top)."""
    if spec.kind == "ace":
        larger = [d for d in LADDER_ACE if d > spec.max_degree]
        return dataclasses.replace(spec, max_degree=larger[0]) if larger else None
    larger = [s for s in LADDER_POWER if (s[0], s[1]) > (spec.n_max, spec.l_max)
              and s[0] >= spec.n_max and s[1] >= spec.l_max]
    return dataclasses.replace(spec, n_max=larger[0][0], l_max=larger[0][1]) if larger else None


def size_label(spec) -> str:
    if spec.kind == "ace":
        return f"max_degree {spec.max_degree}, D {spec.size}"
    return f"n_max {spec.n_max}, l_max {spec.l_max}, D {spec.size}"


class RefitCost:
    """Refit seconds ~ kappa D^3; kappa is the largest of the last few measured refits (the machine is
    shared: a cautious estimate)."""

    def __init__(self, kappa: float = KAPPA0):
        self.kappa0 = kappa
        self.measured: list[float] = []

    def record(self, size: int, seconds: float):
        if size > 0 and seconds > 0:
            self.measured = (self.measured + [seconds / size**3])[-5:]

    @property
    def kappa(self) -> float:
        return max(self.measured) if self.measured else self.kappa0

    def predict(self, size: int) -> float:
        return self.kappa * size**3


@dataclasses.dataclass
class GrowthDecision:
    spec: object | None  # the larger spec to try (None: stay)
    reason: str


def growth_decision(spec, params, n_force_rows: int, cost: RefitCost, budget: float,
                    retry_rows: float = 0.0) -> GrowthDecision:
    """Whether to try the next ladder step after a fit `params` of `spec` (rules 1-3 of the module)."""
    larger = next_spec(spec)
    if larger is None:
        return GrowthDecision(None, f"at the ladder's top ({size_label(spec)})")
    gamma = float(params.hyper.get("n_effective", 0.0))
    if gamma < SUPPORTED_FRACTION * spec.size:
        return GrowthDecision(None, f"gamma {gamma:.0f} < {SUPPORTED_FRACTION:g} D: the data do not determine "
                                    f"the current basis yet")
    if n_force_rows < ROWS_PER_FUNCTION * larger.size or n_force_rows < retry_rows:
        need = max(ROWS_PER_FUNCTION * larger.size, retry_rows)
        return GrowthDecision(None, f"{n_force_rows} force rows, {need:.0f} needed to try {size_label(larger)}")
    seconds = cost.predict(larger.size)
    if seconds > budget:
        return GrowthDecision(None, f"{size_label(larger)} would take ~{seconds:.0f} s per refit > refit_budget "
                                    f"{budget:g} s")
    return GrowthDecision(larger, f"gamma {gamma:.0f} of D {spec.size} determined, {n_force_rows} force rows, "
                                  f"~{seconds:.0f} s per refit predicted")


def cv_force_rmse(params) -> float:
    return float(params.hyper.get("calibration", {}).get("forces", {}).get("rmse", float("inf")))


def growth_accepted(current, trial) -> bool:
    """Rule 4: the larger basis must cut the cross-validation force error by GAIN."""
    return cv_force_rmse(trial) < (1.0 - GAIN) * cv_force_rmse(current)
