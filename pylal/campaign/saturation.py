"""Learning that no longer pays: the held-out force error of the published versions has stopped
improving although the walkers keep flagging. Then the basis, not the data, limits the potential
(the calibrated committee still reports its real error, and f_tol asks for less than the basis
can give); the campaign ends as `saturated` instead of labelling until a cap."""
from __future__ import annotations


class LearningCurve:
    """(labels, held-out force RMSE) of each newly published version."""

    def __init__(self):
        self.points: list[tuple[int, float]] = []

    def add(self, labels: int, force_rmse: float):
        if not self.points or labels > self.points[-1][0]:
            self.points.append((labels, float(force_rmse)))

    def saturated(self, window: int, min_gain: float) -> str | None:
        """A message when the last `window` labels lowered the held-out force RMSE by less than the
        fraction `min_gain` (None: still learning, or too few points). window 0 disables it."""
        if window <= 0 or not self.points:
            return None
        labels, now = self.points[-1]
        before = [rmse for n, rmse in self.points if n <= labels - window]
        if not before:
            return None
        then = before[-1]
        gain = (then - now) / then
        if gain >= min_gain:
            return None
        return (f"learning saturated: the last {window} labels changed the held-out force RMSE from {then:.4g} to "
                f"{now:.4g} eV/A ({100 * gain:+.1f}%, less than {100 * min_gain:g}%). The committee is calibrated, so "
                f"its remaining flags are real errors the basis cannot remove: enlarge the basis ([fit] n_max, l_max, "
                f"r_cut) or raise f_tol / sigma_tol to the accuracy it reaches")
