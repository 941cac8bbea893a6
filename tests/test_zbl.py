"""The ZBL prior's switch-off window per species pair ("covalent", pylal.model.zbl.switch_radii)."""
import numpy as np
import pytest
from ase import Atoms
from ase.data import covalent_radii

from pylal.calculator import PylalCalculator
from pylal.model.basis import BasisSpec
from pylal.model.registry import spec_from_dict
from pylal.model.params import Parameters
from pylal.model.zbl import switch_radii
from pylal.server.config import ConfigError, ServerConfig


def test_covalent_window_follows_each_pairs_bond_length():
    r_on, r_off = switch_radii(("Ga", "N"), "covalent")
    bond_gan = covalent_radii[31] + covalent_radii[7]
    assert r_off[0, 1] == r_off[1, 0] == pytest.approx(0.75 * bond_gan)
    assert r_on[1, 1] == pytest.approx(0.5 * 2 * covalent_radii[7])
    assert r_off[1, 0] < 1.6 < r_off[0, 0]  # Ga-N switched off well below its bond (1.95 A), Ga-Ga not yet
    r_on, r_off = switch_radii(("Ga", "N"), (1.2, 1.8))  # one window in Angstrom for every pair
    assert np.all(r_on == 1.2) and np.all(r_off == 1.8)
    for bad in ("covalnet", (1.8, 1.2), (1.0,)):
        with pytest.raises(ValueError, match="prior"):
            switch_radii(("Si",), bad)


def test_the_model_applies_the_window_of_each_pair():
    """A model with zero coefficients is the ZBL prior alone: zero for Ga-N at 1.6 A (beyond its window),
    repulsive for Ga-Ga at 1.6 A and N-N at 1.0 A (inside theirs)."""
    spec = BasisSpec(species=("Ga", "N"), r_cut=3.0, r_min=1.0, n_max=2, l_max=1)
    assert spec.prior == "covalent" and spec_from_dict(spec.to_dict()) == spec
    params = Parameters(spec, np.zeros(spec.size), np.zeros((2, spec.size)), noise_precision=1.0)

    def energy(symbols, r):
        atoms = Atoms(symbols, positions=[[0, 0, 0], [r, 0, 0]], cell=[12, 12, 12], pbc=False)
        atoms.calc = PylalCalculator(params, tau=0.0)
        return atoms.get_potential_energy()

    assert energy("GaN", 1.6) == 0.0
    assert energy("Ga2", 1.6) > 0.1 and energy("N2", 1.0) > 0.1


def test_server_config_names_a_bad_prior(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[fit]\nprior = 'zbl'\n")
    with pytest.raises(ConfigError, match="prior"):
        ServerConfig.load(p)
    p.write_text("[fit]\nprior = [1.8, 1.2]\n")
    with pytest.raises(ConfigError, match="prior"):
        ServerConfig.load(p)
    p.write_text("[fit]\nprior = []\n")
    assert ServerConfig.load(p).fit.prior == []

