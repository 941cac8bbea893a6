"""The HAL controller: the one place that decides, per step, the bias strength tau and whether the
committee is trusted (van der Oord et al. 2022). `fix pylal` (pylal/lammps/engine.py), `fix
python/invoke` (same engine), the ASE calculator and the ASE loop all call `HalController.decide`.

It owns
  tau        fixed, or adaptive (HAL eq. 12 with the per-step cap, physics.AdaptiveTau); the tau of a
             step is remembered, so re-evaluating a step (LAMMPS setup after `run`) reuses it;
             `burn_in()` after a parameter swap (tau = 0 for tau_window steps on the new committee)
  f_i, eps   relative force uncertainty (eq. 6), eps = global mean |F_bar_i| unless given
  softmax    s = max_i exp(f_i) / sum_j exp(f_j) (eq. 8)
  flag rule  s > s_tol (eq. 8), max f_i > f_tol (eq. 7), spread / N > sigma_tol (pylal), or a
             non-finite f_i; no new flag within `cooldown` steps of the last one
  guard      (optional, pylal.hal.guard) every step: a configuration broken beyond learning in place
             (exploding forces, close contact, sigma jump, too long a step); `decision.guard`
             says why, and the host rolls back (fix pylal) or restores its last good state (ASE loop).
             With `flag_guard` the rejected configuration is a flag too, under the same cooldown,
             except when the host rolls back (then it cannot recur at every step); a rollback
             also burns tau in again (the bias drove the run there)
and its restart state. The model computes (F_bar, grad sigma~, member forces, spread); the engine
and the calculator only move data between the model, the controller and their host.

Global sums go through ONE injected reduction `reduce(packed) -> packed` over the vector laid out
as PACKED: the first N_SUMS entries are summed over processes, the guard's figures take the maximum,
the last two are softmax partials combined by `combine_packed` (an exact log-sum-exp merge). With
a guard the reduction happens every step (adaptive tau makes one every step anyway). A check step with a given eps makes one
reduction; with the default eps two, since eps must be global before any f_i exists (eq. 6).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pylal.hal import physics
from pylal.hal.guard import GUARD_FIELDS, NEUTRAL, Guard, GuardEvent

PACKED = ("sum_abs_force_mean", "sum_abs_grad_sigma", "n_atoms", *(f"guard_{g}" for g in GUARD_FIELDS),
          "softmax_max", "softmax_sum")
N_SUMS = 3
GUARD = slice(N_SUMS, N_SUMS + len(GUARD_FIELDS))  # combined with max
SOFTMAX = GUARD.stop  # softmax_max; softmax_sum follows


def combine_packed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The reduction's operation on two PACKED vectors (commutative and associative)."""
    out = np.empty(len(PACKED))
    out[:N_SUMS] = a[:N_SUMS] + b[:N_SUMS]
    out[GUARD] = np.maximum(a[GUARD], b[GUARD])
    out[SOFTMAX:] = physics.combine_softmax_partials(a[SOFTMAX], a[SOFTMAX + 1], b[SOFTMAX], b[SOFTMAX + 1])
    return out


def serial_reduce(packed: np.ndarray) -> np.ndarray:
    """One process holds every atom."""
    return packed


@dataclasses.dataclass(frozen=True)
class HalRule:
    """Every number of the HAL policy, and its default: `fix pylal` differs in check_every, cooldown
    and flag_guard (pylal.lammps.settings.FIX_HAL); docs/keywords.md lists every host's."""

    tau: float = 0.0  # fixed bias strength (eV); ignored when tau_rel is given
    tau_rel: float | None = None  # adaptive tau (HAL eq. 12)
    tau_window: int = 100  # steps of eq. 12's average, also the burn-in
    eps: float | None = None  # f_i regulariser; None: global mean |F_bar_i|
    check_every: int = 1  # steps between f_i checks (0: never)
    s_tol: float | None = 0.5  # softmax tolerance (eq. 8)
    f_tol: float | None = None  # max f_i tolerance (eq. 7)
    sigma_tol: float | None = None  # committee spread per atom (eV/atom)
    cooldown: int = 0  # steps after a flag during which no new one is raised
    stop_on_flag: bool = False  # a flag of f_i also asks the host to stop (fix on_flag stop, the ASE loop)
    flag_guard: bool = False  # a guard event is a flag too (fix pylal sends its configuration for labelling)

    @property
    def biased(self) -> bool:
        """Whether the bias direction grad sigma~ is needed on ordinary steps."""
        return self.tau_rel is not None or self.tau != 0.0

    def is_check_step(self, step: int) -> bool:
        return self.check_every > 0 and step % self.check_every == 0


@dataclasses.dataclass
class Decision:
    """What the controller decided at one step."""

    step: int
    tau: float  # tau used at this step
    tau_next: float  # tau of the next step
    check: bool = False  # f_i evaluated (first evaluation of a check step)
    flag: bool = False  # of f_i, or (flag_guard) of the guard
    stop: bool = False
    f_max: float = 0.0  # of the last check step
    softmax: float = 0.0
    f_i: np.ndarray | None = None  # (n_local,) on check steps
    bias_norm: np.ndarray | None = None  # (n_local,) |F_bias_i| = tau |grad sigma~_i| on check steps
    n_atoms: float | None = None  # global atom count, when a reduction was made
    guard: GuardEvent | None = None  # the guard rejected this configuration (why)


class HalController:
    def __init__(self, rule: HalRule, reduce=serial_reduce, guard: Guard | None = None):
        self.rule = rule
        self.reduce = reduce
        self.guard = guard
        self.adaptive = physics.AdaptiveTau(rule.tau_rel, rule.tau_window) if rule.tau_rel is not None else None
        self.last_tau = (None, 0.0)  # (step, tau used at that step)
        self.last_update_step: int | None = None  # last step added to adaptive tau's window
        self.last_check_step: int | None = None
        self.last_flag_step: int | None = None
        self.last_step: int | None = None  # of the last decide(): a step decided again acts on no guard event
        self.n_flags = 0
        self.f_max = 0.0
        self.softmax = 0.0

    def set_rule(self, rule: HalRule):
        """A new flag rule; tau's settings must stay (its window belongs to them)."""
        if (rule.tau, rule.tau_rel, rule.tau_window) != (self.rule.tau, self.rule.tau_rel, self.rule.tau_window):
            raise ValueError("HalController.set_rule: tau, tau_rel and tau_window cannot change")
        self.rule = rule

    # ---- tau ----------------------------------------------------------------------------
    def tau_at(self, step: int) -> float:
        """tau of this step; the same value when the step is evaluated again."""
        if self.last_tau[0] == step:
            return self.last_tau[1]
        tau = self.current_tau()
        self.last_tau = (step, tau)
        return tau

    def current_tau(self) -> float:
        """tau of a step not yet evaluated."""
        return self.adaptive.tau if self.adaptive is not None else self.rule.tau

    def burn_in(self):
        """After a parameter swap: eq. 12's window averaged the old committee's bias forces; as
        after each refit in HAL, tau is 0 again for tau_window steps."""
        if self.adaptive is not None:
            self.adaptive = physics.AdaptiveTau(self.rule.tau_rel, self.rule.tau_window)

    def wants_members(self, step: int) -> bool:
        return self.rule.is_check_step(step)

    # ---- the decision -------------------------------------------------------------------
    def decide(self, step: int, forces_mean, grad_sigma=None, member_forces=None, spread: float = 0.0,
               guard_figures=None, rollback: bool = False) -> Decision:
        """Collective when a reduction is needed: every process calls it with its own atoms.

        forces_mean (n, 3): total unbiased force on this process's atoms (any prior included);
        grad_sigma (n, 3) or None (unbiased step); member_forces (K, n, 3) on check steps (total,
        prior included); spread: the committee's energy spread (HAL eq. 5 without 1/lambda), global;
        guard_figures: this process's pylal.hal.guard.local_figures (with a guard: every step);
        rollback: the host restores its last good state if the guard rejects this step."""
        rule = self.rule
        tau = self.tau_at(step)
        repeated, self.last_step = step == self.last_step, step
        update = self.adaptive is not None and (self.last_update_step is None or step > self.last_update_step)
        check = member_forces is not None and rule.is_check_step(step) and step != self.last_check_step
        guarding = self.guard is not None and guard_figures is not None
        decision = Decision(step=step, tau=tau, tau_next=tau, f_max=self.f_max, softmax=self.softmax)
        if not (update or check or guarding):
            return decision
        f_norm = np.linalg.norm(forces_mean, axis=1)
        g_norm = np.linalg.norm(grad_sigma, axis=1) if grad_sigma is not None else np.zeros(len(f_norm))
        figures = guard_figures if guarding else NEUTRAL
        packed = np.array([f_norm.sum(), g_norm.sum(), float(len(f_norm)), *figures, -np.inf, 0.0])
        if check:
            if rule.eps is None:  # eps = global mean |F_bar_i| first (its own reduction)
                packed = self.reduce(packed)
                eps = packed[0] / max(packed[2], 1.0)
            else:
                eps = rule.eps
            f_i = physics.relative_force_uncertainty(member_forces, forces_mean, eps)
            partials = physics.softmax_partials(f_i)
            if rule.eps is None:
                packed[SOFTMAX:] = self.reduce(np.array([0.0, 0.0, 0.0, *NEUTRAL, *partials]))[SOFTMAX:]
            else:
                packed[SOFTMAX:] = partials
                packed = self.reduce(packed)
        else:
            packed = self.reduce(packed)
        decision.n_atoms = float(packed[2])
        if update:
            self.adaptive.update(packed[0], packed[1])
            self.last_update_step = step
            decision.tau_next = self.current_tau()
        if guarding:  # first: a step the guard rejects is flagged (once) as a guard event, not by the check
            event = self.guard.check(packed[GUARD], spread)
            decision.guard = None if repeated else event
        if check:
            self._check(decision, packed, f_i, g_norm, spread)
        if decision.guard is not None:
            self._on_guard(decision, rollback)
        return decision

    def _cooled(self, step: int) -> bool:
        """The one cooldown of every flag: none within `cooldown` steps of the last."""
        return self.last_flag_step is None or step - self.last_flag_step >= self.rule.cooldown

    def _count_flag(self, step: int):
        self.last_flag_step = step
        self.n_flags += 1

    def _on_guard(self, decision: Decision, rollback: bool):
        """A rejected step: flagged (flag_guard) when cooled or rolled back; a rollback burns tau in."""
        if self.rule.flag_guard and (rollback or self._cooled(decision.step)):
            decision.flag = True
            self._count_flag(decision.step)
        if rollback:
            self.burn_in()
            self.guard.reset()

    def _check(self, decision: Decision, packed, f_i, g_norm, spread):
        rule, step = self.rule, decision.step
        self.last_check_step = step
        self.f_max, self.softmax = float(packed[SOFTMAX]), 1.0 / float(packed[SOFTMAX + 1])
        sigma_per_atom = spread / max(packed[2], 1.0) if rule.sigma_tol is not None else None
        untrusted = (not np.isfinite(self.f_max)
                     or physics.triggered(self.softmax, self.f_max, rule.s_tol, rule.f_tol, sigma_per_atom, rule.sigma_tol))
        decision.check, decision.f_i, decision.bias_norm = True, f_i, decision.tau * g_norm
        decision.f_max, decision.softmax = self.f_max, self.softmax
        decision.flag = bool(untrusted and decision.guard is None and self._cooled(step))
        decision.stop = decision.flag and rule.stop_on_flag
        if decision.flag:
            self._count_flag(step)

    # ---- restart ------------------------------------------------------------------------
    STATE_KEYS = ("last_update_step", "last_check_step", "last_flag_step", "n_flags", "f_max", "softmax")

    def state(self) -> dict:
        return dict(tau=self.adaptive.state() if self.adaptive is not None else None, last_tau=list(self.last_tau),
                    **{key: getattr(self, key) for key in self.STATE_KEYS})

    def restore(self, state: dict):
        if state["tau"] is not None and self.adaptive is not None:
            self.adaptive = physics.AdaptiveTau.from_state(state["tau"])
        self.last_tau = tuple(state["last_tau"])
        for key in self.STATE_KEYS:
            setattr(self, key, state[key])
