"""A basis that grows with the data (pylal.fit.growth, pylal.server.refit.Refitter.grow): the ladder, the
decision rules, a growth step published as the next version that a running model swaps to like any other,
and the refit budget."""
import dataclasses

import numpy as np
import pytest

from pylal.fit.growth import RefitCost, growth_decision
from pylal.model.basis import BasisSpec
from pylal.model.params import Parameters
from pylal.reference import label, make_calculator
from pylal.sampling import diamond_si
from pylal.server.config import ConfigError, ServerConfig
from pylal.model.registry import basis_grows, spec_from_config
from pylal.server.refit import Refitter
from pylal.server.store import Store
from pylal.server.versions import VersionStore


def fit_config(**fit):
    return ServerConfig.from_dict({"fit": dict(species=["Si"], r_cut=3.8, **fit)}).fit


def test_unset_size_keys_start_on_the_ladder_and_grow_set_ones_stay():
    auto = fit_config()
    assert basis_grows(auto) and (spec_from_config(auto).n_max, spec_from_config(auto).l_max) == (4, 3)
    assert not basis_grows(fit_config(n_max=8, l_max=4))
    assert not basis_grows(fit_config(grow=False))
    assert not basis_grows(fit_config(n_max=6))  # one size key given: the basis is fixed
    assert spec_from_config(fit_config(n_max=6)).l_max == 3
    ace = fit_config(basis="ace")
    assert basis_grows(ace) and spec_from_config(ace).max_degree == 10
    with pytest.raises(ConfigError, match="refit_budget"):
        fit_config(refit_budget=0)
    # five species: the first step is a few hundred functions, and the top stays linear in species
    five = ServerConfig.from_dict({"fit": dict(species=["Al", "Si", "Mg", "Cu", "Fe"])}).fit
    spec = spec_from_config(five)
    assert spec.size == 765
    top = spec
    while top.grown() is not None:
        top = top.grown()
    assert (top.n_max, top.l_max) == (8, 4) and top.size == 3485


def test_growth_decision_rules():
    spec = BasisSpec(species=("Si",), r_cut=3.8, n_max=4, l_max=3)
    larger = spec.grown()
    assert (larger.n_max, larger.l_max) == (6, 3)
    fit = Parameters(spec, np.zeros(spec.size), np.zeros((2, spec.size)), 1.0, hyper={"n_effective": 0.9 * spec.size})
    cost = RefitCost()
    assert growth_decision(spec, fit, 10 * larger.size, cost, 60.0).spec == larger
    few = growth_decision(spec, fit, 2 * larger.size, cost, 60.0)
    assert few.spec is None and "force rows" in few.reason
    loose = dataclasses.replace(fit, hyper={"n_effective": 0.3 * spec.size})
    assert "do not determine" in growth_decision(spec, loose, 10 * larger.size, cost, 60.0).reason
    slow = RefitCost()
    slow.record(spec.size, 50.0)  # this machine: 50 s at D 45 -> the larger basis is far over 60 s
    over = growth_decision(spec, fit, 10 * larger.size, slow, 60.0)
    assert over.spec is None and "refit_budget" in over.reason
    assert growth_decision(spec, fit, 10 * larger.size, cost, 60.0, retry_rows=20 * larger.size).spec is None


@pytest.fixture(scope="module")
def sw_cells():
    calc = make_calculator("lammps")  # Stillinger-Weber Si
    return [label(diamond_si(1, rattle=0.15, seed=300 + k), calc).atoms for k in range(24)]


@pytest.mark.slow
def test_a_growth_step_is_the_next_version_and_swaps_like_any_other(tmp_path, sw_cells):
    from pylal.calculator import PylalCalculator

    cfg = fit_config(n_members=8)
    store, versions = Store(tmp_path / "store.db"), VersionStore(tmp_path)
    refitter = Refitter(spec_from_config(cfg), cfg, store, versions, initial=sw_cells)
    assert refitter.spec.size == 45
    pointer = refitter.refit()
    growth = pointer["growth"]
    assert growth["accepted"], growth
    assert pointer["version"] == 2 and versions.latest() == 2
    assert growth["cv_force_rmse"][1] < 0.95 * growth["cv_force_rmse"][0]
    v1, v2 = (Parameters.load(versions.path(v)) for v in (1, 2))
    assert (v1.spec.n_max, v1.spec.l_max) == (4, 3) and (v2.spec.n_max, v2.spec.l_max) == (6, 3)
    assert v2.hyper["growth"]["tried"].startswith("n_max 6, l_max 3")
    assert refitter.spec == v2.spec and refitter.design.spec == v2.spec and len(refitter.design) == len(sw_cells)
    # a model running version 1 swaps to the grown version 2 and then computes what a fresh one does
    atoms = diamond_si(1, rattle=0.1, seed=7)
    running = PylalCalculator(v1, tau=0.0, check_every=1)
    running.set_parameters(v2)
    fresh = PylalCalculator(v2, tau=0.0, check_every=1)
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = running, fresh
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-12)
    # a restarted server goes on with the grown basis
    again = Refitter(spec_from_config(cfg), cfg, store, versions, initial=sw_cells)
    assert again.spec == v2.spec


def test_a_fixed_basis_never_grows_and_a_slow_refit_is_reported(tmp_path, sw_cells):
    cfg = fit_config(n_max=3, l_max=2, n_members=4, refit_budget=1e-6)
    refitter = Refitter(spec_from_config(cfg), cfg, Store(tmp_path / "store.db"), VersionStore(tmp_path),
                        initial=sw_cells[:6])
    pointer = refitter.refit()
    assert "growth" not in pointer and pointer["version"] == 1
    assert "refit_budget" in pointer["over_budget"] and "n_max 3, l_max 2" in pointer["over_budget"]


def test_r_min_follows_the_shortest_distance_of_the_system():
    from ase.build import bulk, molecule

    from pylal.model.basis import default_r_min

    assert default_r_min(["Si"], [bulk("Si", "diamond", 5.431)]) == pytest.approx(1.50)  # the tuned Si value
    assert default_r_min(["C", "O", "H"], [molecule("CH3CH2OH")]) == pytest.approx(0.60)  # O-H 0.97 A
    assert default_r_min(["Ga", "N"], [bulk("GaN", "wurtzite", a=3.19, c=5.19)]) == pytest.approx(1.25)
    assert default_r_min(["Si"]) == pytest.approx(1.40)  # no structure: the species' covalent bond
    assert spec_from_config(fit_config()).r_min == pytest.approx(1.40)
    assert spec_from_config(fit_config(r_min=1.7)).r_min == 1.7
