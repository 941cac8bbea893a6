"""The basis contract (pylal.model.registry): a third basis, written here in this file alone, registers
itself and goes through everything a basis does: the [fit] table, the design rows and Bayesian fit, the
parameter file, the committee step with its member forces (the registry's default autodiff gradients),
forces by finite differences."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_forces_by_central_differences
from pylal.model import registry
from pylal.model.basis import radial_basis, spec_dict, spec_from_fields
from pylal.model.params import Parameters
from pylal.server.config import ServerConfig


@dataclasses.dataclass(frozen=True)
class PairSpec:
    """A toy 2-body basis: per centre [1, sum_j R_n(r_ij) for each neighbour species]."""

    species: tuple
    r_cut: float = 3.8
    r_min: float = 1.5
    n_max: int = 6
    prior: object = None
    kind = "pair-toy"

    @property
    def n_species(self):
        return len(self.species)

    @property
    def n_per_species(self):
        return 1 + self.n_species * self.n_max

    @property
    def size(self):
        return self.n_species * self.n_per_species

    def to_dict(self):
        return {**spec_dict(self), "kind": self.kind}

    @classmethod
    def from_dict(cls, d):
        return spec_from_fields(cls, {k: v for k, v in d.items() if k != "kind"})

    @classmethod
    def from_config(cls, fit_cfg):
        return cls(species=tuple(fit_cfg.species), r_cut=fit_cfg.r_cut, r_min=fit_cfg.r_min)

    @classmethod
    def size_unset(cls, fit_cfg):
        return False

    def grown(self):
        return None

    def size_label(self):
        return f"pair n_max {self.n_max}, D {self.size}"

    def kernel(self):
        return None

    def arrays(self):
        return None

    def atomic_features(self, vectors, centers, center_species, neighbor_species, n_centers, pair_mask, arrays):
        radial = radial_basis(self, jnp.linalg.norm(vectors, axis=-1))  # zero beyond r_cut
        onehot = jax.nn.one_hot(neighbor_species, self.n_species, dtype=vectors.dtype)
        channel = (onehot[:, :, None] * radial[:, None, :]).reshape(len(vectors), -1)
        pairs = jax.ops.segment_sum(channel, centers, num_segments=n_centers)
        return jnp.concatenate([jnp.ones((n_centers, 1), vectors.dtype), pairs], axis=1)

    member_pair_gradients = registry.autodiff_member_pair_gradients

    def degrees(self):
        return np.tile(np.concatenate([[0.0], np.tile(np.arange(1.0, self.n_max + 1), self.n_species)]),
                       self.n_species)

    def constant_columns(self):
        return np.arange(self.n_species) * self.n_per_species


@pytest.fixture
def pair_kind():
    registry.register("pair-toy", PairSpec)
    yield
    registry._KINDS.pop("pair-toy")


def test_a_third_basis_fits_saves_and_runs_through_the_committee(pair_kind, tmp_path):
    from pylal.calculator import PylalCalculator
    from pylal.fit.committee import fit_parameters
    from pylal.reference import label, make_calculator
    from pylal.sampling import diamond_si

    fit_cfg = ServerConfig.from_dict({"fit": {"basis": "pair-toy", "species": ["Si"], "r_cut": 3.8}}).fit
    spec = registry.spec_from_config(fit_cfg)
    assert isinstance(spec, PairSpec) and not registry.basis_grows(fit_cfg)
    calc = make_calculator("lammps")
    train = [label(diamond_si(1, rattle=0.1, seed=40 + k), calc).atoms for k in range(6)]
    params = fit_parameters(spec, train, n_members=6)
    path = tmp_path / "pair.npz"
    params.save(path)
    loaded = Parameters.load(path)
    assert loaded.spec == spec and np.array_equal(loaded.mean, params.mean)

    atoms = diamond_si(1, rattle=0.12, seed=9)
    atoms.calc = PylalCalculator(loaded, tau=0.2, check_every=1)
    e0 = atoms.get_potential_energy()
    assert np.isfinite(atoms.calc.results["f_i"]).all()
    assert_forces_by_central_differences(atoms, [(0, 0), (5, 2)])
    assert atoms.get_potential_energy() == pytest.approx(e0, rel=1e-12)


def test_the_default_member_gradients_equal_single_member_forces(pair_kind):
    from pylal.model.committee import CommitteeModel
    from pylal.model.neighbors import ase_pairs
    from pylal.sampling import diamond_si

    spec = PairSpec(species=("Si",))
    rng = np.random.default_rng(0)
    params = Parameters(spec, rng.normal(size=spec.size), rng.normal(size=(3, spec.size)), 1.0)
    atoms = diamond_si(1, rattle=0.1, seed=2)
    pairs = ase_pairs(atoms, spec.r_cut, spec.species)
    res = CommitteeModel(params).step(pairs, tau=0.0, members=True)
    for k in range(3):
        single = Parameters(spec, params.committee[k], params.committee[k:k + 1], 1.0)
        rk = CommitteeModel(single).step(pairs, tau=0.0)
        np.testing.assert_allclose(res.member_forces[k], rk.forces_mean, atol=1e-10)


def test_an_unknown_kind_is_named():
    with pytest.raises(ValueError, match="unknown basis kind 'nope'"):
        registry.spec_from_dict({"kind": "nope", "species": ["Si"]})
