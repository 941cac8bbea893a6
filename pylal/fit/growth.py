"""A basis whose size follows the data, within a refit time budget.

A campaign whose config does not fix the basis size ([fit] n_max / l_max for the power basis,
max_degree for ACE) starts on the first step of a ladder (a few hundred functions for up to five
species with compressed chemical channels) and climbs it when the data support a larger basis, as
ACEpotentials' and pacemaker's users grow the polynomial degree as data come in (the ladder is the
spec's: `LADDER`, `grown()`; power (n_max, l_max) (4, 3) -> (6, 3) -> (6, 4) -> (8, 4), ACE degree 10 -> 18):

1. the data determine the current coefficients: the evidence's number of well-determined parameters
   gamma (MacKay; HAL eqs. 25-27) is at least SUPPORTED_FRACTION of D, so the basis, not the data,
   limits the fit;
2. there are at least ROWS_PER_FUNCTION force rows per function of the larger basis;
3. the trial of the larger basis is predicted to stay within the budget ([fit] refit_budget seconds). A trial
   evaluates every configuration's design rows again and fits once: rows cost ~rho D N_atoms (the D-member
   basis step), the fit ~kappa D^3 (QR factors and SVDs of D x D matrices), plus one compilation of the
   new basis; rho and kappa are measured on this server's own rows and fits (`RefitCost`);
4. the trial fit of the larger basis is published only when its cross-validation force RMSE is at
   least GAIN lower than the current one's; otherwise the campaign stays, and tries again after the
   data have grown by RETRY_GROWTH.
"""
from __future__ import annotations

import dataclasses

SUPPORTED_FRACTION = 0.6
ROWS_PER_FUNCTION = 4.0
GAIN = 0.05
RETRY_GROWTH = 1.5  # force rows, relative to the last rejected trial
KAPPA0 = 3e-8  # s / D^3 of a fit before one is measured (2 shared cores, 2026-12)
RHO0 = 1.5e-5  # s per atom per basis function of design rows before they are measured (CdTe, D 806: 0.55 s / 64 atoms)
COMPILE_SECONDS = 5.0  # the D-member step of a new basis compiles once (3-4 s at D 806)


class RefitCost:
    """Seconds of a fit (~kappa D^3) and of design rows (~rho D per atom), each the largest of the last few
    measurements (the machine is shared: a cautious estimate)."""

    def __init__(self, kappa: float = KAPPA0, rho: float = RHO0):
        self.kappa0, self.rho0 = kappa, rho
        self.measured: list[float] = []
        self.measured_rows: list[float] = []

    def record(self, size: int, seconds: float):
        """A fit of D = size took `seconds`."""
        if size > 0 and seconds > 0:
            self.measured = (self.measured + [seconds / size**3])[-5:]

    def record_rows(self, size: int, n_atoms: int, seconds: float):
        """Design rows of n_atoms atoms (all configurations of one evaluation) took `seconds`."""
        if size > 0 and n_atoms > 0 and seconds > 0:
            self.measured_rows = (self.measured_rows + [seconds / (size * n_atoms)])[-5:]

    @property
    def kappa(self) -> float:
        return max(self.measured) if self.measured else self.kappa0

    @property
    def rho(self) -> float:
        return max(self.measured_rows) if self.measured_rows else self.rho0

    def predict(self, size: int) -> float:
        """Seconds of one fit of D = size."""
        return self.kappa * size**3

    def predict_trial(self, size: int, n_atoms: int) -> float:
        """Seconds of a growth trial: compile, rows of n_atoms atoms, one fit."""
        return COMPILE_SECONDS + self.rho * size * n_atoms + self.predict(size)


@dataclasses.dataclass
class GrowthDecision:
    spec: object | None  # the larger spec to try (None: stay)
    reason: str


def growth_decision(spec, params, n_force_rows: int, cost: RefitCost, budget: float,
                    retry_rows: float = 0.0) -> GrowthDecision:
    """Whether to try the next ladder step after a fit `params` of `spec` (rules 1-3 of the module)."""
    larger = spec.grown()
    if larger is None:
        return GrowthDecision(None, f"at the ladder's top ({spec.size_label()})")
    gamma = float(params.hyper.get("n_effective", 0.0))
    if gamma < SUPPORTED_FRACTION * spec.size:
        return GrowthDecision(None, f"gamma {gamma:.0f} < {SUPPORTED_FRACTION:g} D: the data do not determine "
                                    f"the current basis yet")
    if n_force_rows < ROWS_PER_FUNCTION * larger.size or n_force_rows < retry_rows:
        need = max(ROWS_PER_FUNCTION * larger.size, retry_rows)
        return GrowthDecision(None, f"{n_force_rows} force rows, {need:.0f} needed to try {larger.size_label()}")
    n_atoms = n_force_rows // 3  # the rows a trial evaluates again
    seconds = cost.predict_trial(larger.size, n_atoms)
    if seconds > budget:
        return GrowthDecision(None, f"trying {larger.size_label()} would take ~{seconds:.0f} s (design rows of "
                                    f"{n_atoms} atoms and a fit) > refit_budget {budget:g} s")
    return GrowthDecision(larger, f"gamma {gamma:.0f} of D {spec.size} determined, {n_force_rows} force rows, "
                                  f"~{seconds:.0f} s for the trial predicted")


def cv_force_rmse(params) -> float:
    return float(params.hyper.get("calibration", {}).get("forces", {}).get("rmse", float("inf")))


def growth_accepted(current, trial) -> bool:
    """Rule 4: the larger basis must cut the cross-validation force error by GAIN."""
    return cv_force_rmse(trial) < (1.0 - GAIN) * cv_force_rmse(current)
