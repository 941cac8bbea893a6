"""`fix pylal` keywords (pylal/lammps/settings.py) parse straight into the rules their code uses:
HalRule, GuardRule, CarveRule keep their own defaults; FIX_HAL holds the ones the fix sets otherwise."""
import dataclasses

import pytest

from pylal.hal.controller import HalRule
from pylal.hal.guard import GuardRule
from pylal.lammps.settings import (CARVE_KEYWORDS, FIX_HAL, GUARD_KEYWORDS, HAL_KEYWORDS, FixArgumentError,
                                   FixSettings, parse_fix_args)

BASE = ["p.npz", "elements", "Si"]


def test_defaults_are_the_rules_own():
    s = parse_fix_args(BASE)
    assert s.hal == FIX_HAL == dataclasses.replace(HalRule(), check_every=10, cooldown=100, flag_guard=True)
    assert s.guard == GuardRule() and s.rollback and s.watch == "p.npz"
    rule = s.carve_rule(r_cut=4.2)
    assert (rule.max_atoms, rule.shape, rule.margin) == (128, "periodic", 4.2)


def test_keywords_set_the_rules():
    s = parse_fix_args(BASE + "tau_rel 0.2 tau_window 50 f_tol 0.1 cooldown 0 on_flag stop guard_fmax 0 "
                              "guard_rmin 0.5 rollback no carve_margin 6 label_max_atoms 0".split())
    assert (s.hal.tau_rel, s.hal.tau_window, s.hal.f_tol, s.hal.s_tol, s.hal.cooldown) == (0.2, 50, 0.1, None, 0)
    assert s.hal.stop_on_flag and s.hal.check_every == 10
    assert s.guard == GuardRule(f_max=None, r_min=0.5) and not s.rollback
    assert s.carve_rule(r_cut=4.2).margin == 6.0 and s.carve.max_atoms == 0
    assert parse_fix_args(BASE + ["guard", "no"]).guard is None
    assert parse_fix_args(BASE + "f_tol 0.1 s_tol 0.4".split()).hal.s_tol == 0.4


def test_rule_keywords_have_no_copy_in_the_settings():
    """Each default has one home: no rule keyword is also a field of FixSettings (but the rules)."""
    fields = {f.name for f in dataclasses.fields(FixSettings)} - {"hal", "guard", "carve"}
    assert not fields & (set(HAL_KEYWORDS) | set(GUARD_KEYWORDS) | set(CARVE_KEYWORDS))


@pytest.mark.parametrize("args, message", [("tau 0.1 tau_rel 0.1", "either 'tau'"),
                                           ("cooldown -1", "'cooldown' must be >= 0"),
                                           ("guard maybe", "'guard' must be one of")])
def test_bad_keywords_are_named(args, message):
    with pytest.raises(FixArgumentError, match=message):
        parse_fix_args(BASE + args.split())
