"""Learning that no longer pays: the held-out force error of the published versions has stopped
improving although the walkers keep flagging. Then the basis, not the data, limits the potential
(the calibrated committee still reports its real error, and f_tol asks for less than the basis
can give); the campaign ends as `saturated` instead of labelling until a cap."""
from __future__ import annotations


class LearningCurve:
    """(labels, held-out force RMSE, MD steps of the slowest walker) of each newly published version."""

    def __init__(self):
        self.points: list[tuple[int, float, int]] = []

    def add(self, labels: int, force_rmse: float, steps: int = 0):
        if not self.points or labels > self.points[-1][0]:
            self.points.append((labels, float(force_rmse), int(steps)))

    def saturated(self, window: int, min_gain: float, min_steps: int = 0) -> str | None:
        """A message when the last `window` labels lowered the held-out force RMSE by less than the
        fraction `min_gain` while the slowest walker ran at least `min_steps` MD steps (None: still
        learning, too few points, or walkers that flag at nearly every check and have not yet explored:
        labels a few steps apart cannot show what the basis can learn). window 0 disables it."""
        if window <= 0 or not self.points:
            return None
        labels, now, steps = self.points[-1]
        before = [(rmse, st) for n, rmse, st in self.points if n <= labels - window]
        if not before:
            return None
        then, steps_then = before[-1]
        if steps - steps_then < min_steps:
            return None
        gain = (then - now) / then
        if gain >= min_gain:
            return None
        head = (f"learning saturated: the last {window} labels changed the held-out force RMSE from {then:.4g} to "
                f"{now:.4g} eV/A ({100 * gain:+.1f}%, less than {100 * min_gain:g}%). ")
        if now > then:  # not a plateau: the labels made the potential worse
            return head + DEGRADING_CAUSES
        return head + ("The committee is calibrated, so its remaining flags are real errors the basis cannot remove: "
                       "enlarge the basis ([fit] n_max, l_max, r_cut) or raise f_tol / sigma_tol to the accuracy it "
                       "reaches")

    def degrading(self, factor: float = 1.5, min_labels: int = 5) -> str | None:
        """A message when the newest held-out force RMSE is more than `factor` times the best so far, at least
        `min_labels` labels after it: correct labels that make a linear fit worse on held-out data point to
        the data or the fit, not to missing data (None otherwise)."""
        if not self.points:
            return None
        labels, now, _ = self.points[-1]
        best_labels, best, _ = min(self.points, key=lambda p: p[1])
        if labels - best_labels < min_labels or now <= factor * best:
            return None
        return (f"held-out force RMSE rose from {best:.4g} eV/A (at {best_labels} configurations) to {now:.4g} eV/A "
                f"(at {labels}): new labels make the potential worse. " + DEGRADING_CAUSES)


DEGRADING_CAUSES = ("Likely causes: the walkers sample states far from the held-out set (compare their density and "
                    "temperature in the traces with [holdout]: a barostat driven by a poor potential can boil or "
                    "crush the cell), or a basis too small to fit both; check `pylal report`, try a larger basis or "
                    "walkers without a barostat. The newest version is not the best one.")
