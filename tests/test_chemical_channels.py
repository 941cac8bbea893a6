"""Compressed chemical channels of the power basis (pylal.model.basis, chem_channels): a basis that grows
linearly with the number of species, spans the per-species basis when not compressed, and keeps the physics
(finite-difference forces, rotation invariance, the hand-written member gradients)."""
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk
from scipy.spatial.transform import Rotation

from pylal.model.basis import BasisSpec, atomic_features, chemical_embedding
from pylal.model.neighbors import ase_pairs
from pylal.model.params import Parameters
from conftest import assert_forces_by_central_differences, random_parameters

SPECIES = ("Al", "Si", "Mg", "Cu", "Fe")


def ternary_cell(seed=5):
    atoms = bulk("Si", "diamond", 5.3, cubic=True)
    atoms.symbols[[1, 4]] = "C"
    atoms.symbols[[2, 7]] = "Ge"
    atoms.rattle(0.12, seed=seed)
    return atoms


def features(spec, atoms):
    pairs = ase_pairs(atoms, spec.r_cut, spec.species)
    return np.asarray(atomic_features(spec, jnp.asarray(pairs.vectors), pairs.centers,
                                      pairs.species[pairs.neighbors], pairs.n_centers))


def test_basis_size_grows_linearly_with_the_number_of_species():
    sizes = [BasisSpec(species=SPECIES[:s], n_max=8, l_max=4, chem_channels=2).size for s in range(1, 6)]
    full = [BasisSpec(species=SPECIES[:s], n_max=8, l_max=4).size for s in range(1, 6)]
    # from two species on every centre species adds the same block: D = S * F(2 channels)
    per_species = np.diff(sizes[1:])
    assert np.all(per_species == per_species[0]) and sizes[1] == 2 * per_species[0]
    assert sizes[4] == 5 * sizes[1] // 2
    assert full[4] > 5 * sizes[4]  # the per-species channels grow like S^3
    assert sizes[0] == full[0] and sizes[1] == full[1]  # nothing to compress below 3 species


def test_embedding_is_orthonormal_and_ordered_by_atomic_number():
    spec = BasisSpec(species=("Fe", "Al", "Cu"), chem_channels=2)
    w = chemical_embedding(spec)
    assert w.shape == (3, 2)
    np.testing.assert_allclose(w.T @ w, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(w[:, 0], 1 / np.sqrt(3))  # channel 0: the total density
    # channel 1 a monotone contrast in Z: Al (13) < Fe (26) < Cu (29)
    assert w[1, 1] > w[0, 1] > w[2, 1]
    # the species' order in the spec does not change which weight an element gets
    other = chemical_embedding(BasisSpec(species=("Cu", "Fe", "Al"), chem_channels=2))
    np.testing.assert_allclose(other[[1, 2, 0]], w, atol=1e-12)


def test_compressed_features_lie_in_the_span_of_the_per_species_features():
    """Compression is a fixed linear map of the species densities, so every compressed feature of a
    centre is a linear combination of the per-species features of that centre (same radial, angular
    resolution); with chem_channels >= S the basis is the per-species one itself."""
    atoms = ternary_cell()
    full = BasisSpec(species=("Si", "C", "Ge"), r_cut=3.5, n_max=2, l_max=1, prior=None)
    comp = BasisSpec(species=("Si", "C", "Ge"), r_cut=3.5, n_max=2, l_max=1, prior=None, chem_channels=2)
    same = BasisSpec(species=("Si", "C", "Ge"), r_cut=3.5, n_max=2, l_max=1, prior=None, chem_channels=3)
    assert comp.n_per_species < full.n_per_species
    np.testing.assert_array_equal(features(same, atoms), features(full, atoms))
    # one linear map for all centres: least squares over the centres of rattled cells (more centres than
    # per-species features)
    cells = [ternary_cell(seed=20 + k) for k in range(8)]
    x = np.vstack([features(full, a) for a in cells])
    y = np.vstack([features(comp, a) for a in cells])
    assert x.shape[0] > x.shape[1]
    t, *_ = np.linalg.lstsq(x, y, rcond=None)
    assert np.abs(x @ t - y).max() < 1e-9 * np.abs(y).max()
    # and the compression loses information: the per-species features are not in the compressed span
    t2, *_ = np.linalg.lstsq(y, x, rcond=None)
    assert np.abs(y @ t2 - x).max() > 1e-3 * np.abs(x).max()


@pytest.fixture
def compressed_spec():
    return BasisSpec(species=("Si", "C", "Ge"), r_cut=3.5, n_max=4, l_max=2, prior=(1.0, 1.6), chem_channels=2)


def test_forces_by_finite_differences_and_rotation_invariance(compressed_spec):
    from pylal.calculator import PylalCalculator

    atoms = ternary_cell()
    atoms.calc = PylalCalculator(random_parameters(compressed_spec, seed=1), tau=0.0, check_every=1)
    e0, f0 = atoms.get_potential_energy(), atoms.get_forces().copy()
    assert_forces_by_central_differences(atoms, [(0, 0), (3, 1), (5, 2), (7, 0)], abs=1e-7)
    rot = Rotation.from_euler("xyz", [0.4, -0.9, 1.7]).as_matrix()
    atoms.set_cell(atoms.cell.array @ rot.T, scale_atoms=True)
    assert atoms.get_potential_energy() == pytest.approx(e0, rel=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), f0 @ rot.T, atol=1e-9)


def test_member_gradients_of_the_compressed_basis_equal_the_explicit_jacobian(compressed_spec):
    from pylal.model.member_gradients import member_gradients, neighbor_slots, pair_expansion
    from reference_jacobian import features_and_pair_jacobian

    spec, atoms = compressed_spec, ternary_cell()
    pairs = ase_pairs(atoms, spec.r_cut, spec.species)
    n = pairs.n_centers
    neighbor_species = pairs.species[pairs.neighbors]
    slots, most = neighbor_slots(pairs.centers, n)
    coefs = np.random.default_rng(3).normal(size=(5, spec.n_species, spec.n_per_species))
    vectors = jnp.asarray(pairs.vectors)
    expansion = pair_expansion(spec, vectors, pairs.centers, neighbor_species, n)
    grads = member_gradients(spec, expansion, pairs.centers, slots, np.ones(pairs.n_pairs), pairs.species[:n],
                             most, jnp.asarray(coefs), chunk=4)
    _, jac = features_and_pair_jacobian(spec, vectors, pairs.centers, neighbor_species, n)
    expected = np.einsum("pfa,mpf->mpa", jac, coefs[:, pairs.species[pairs.centers], :])
    assert np.abs(np.asarray(grads) - expected).max() < 1e-12 * max(1.0, np.abs(expected).max())


def test_parameter_file_keeps_the_compression(tmp_path, compressed_spec):
    path = tmp_path / "p.npz"
    random_parameters(compressed_spec).save(path)
    assert Parameters.load(path).spec == compressed_spec
    # files written before the key existed read as one channel per species
    assert BasisSpec.from_dict({k: v for k, v in compressed_spec.to_dict().items()
                                if k != "chem_channels"}).chem_channels == 0
    with pytest.raises(ValueError, match="chem_channels"):
        BasisSpec(species=("Si",), chem_channels=-1)
