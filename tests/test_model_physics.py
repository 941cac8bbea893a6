"""Physics of the committee potential: invariances, smoothness, derivatives by finite differences."""
import numpy as np
import pytest
from ase import Atoms
from scipy.spatial.transform import Rotation

from pylal.calculator import PylalCalculator
from pylal.model.neighbors import ase_pairs
from conftest import random_parameters


BASES = ["power", "ace"]  # pylal's own basis and ace-jax's ACE basis (pylal.model.ace)
# the ACE basis on the two-species cell only where each case costs a compilation of a minute
CELLS_AND_BASES = [("si_cell", "power"), ("sic_cell", "power"), ("sic_cell", "ace")]


def spec_for(request, cell: str, basis: str):
    """The Si or SiC spec fixture of a basis kind, for the cell fixture `cell`."""
    system = "si" if cell == "si_cell" else "sic"
    return request.getfixturevalue(f"{system}_spec" if basis == "power" else f"{system}_ace_spec")


def calc_for(spec, tau=0.0, seed=0):
    return PylalCalculator(random_parameters(spec, seed=seed), tau=tau, check_every=1)


def evaluate(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return (atoms.get_potential_energy(), atoms.get_forces(), calc.results["sigma"],
            calc.results["f_i"])


@pytest.mark.parametrize("cell, basis", CELLS_AND_BASES)
def test_invariance_rotation_translation_permutation(cell, basis, request):
    atoms = request.getfixturevalue(cell)
    spec = spec_for(request, cell, basis)
    calc = calc_for(spec, tau=0.3)
    e0, f0, s0, fi0 = evaluate(calc, atoms)

    rot = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ rot.T, scale_atoms=True)
    e, f, s, fi = evaluate(calc, rotated)
    assert e == pytest.approx(e0, rel=1e-10, abs=1e-10)
    assert s == pytest.approx(s0, rel=1e-10)
    np.testing.assert_allclose(f, f0 @ rot.T, atol=1e-9)
    np.testing.assert_allclose(fi, fi0, atol=1e-9)

    shifted = atoms.copy()
    shifted.positions += [0.7, -2.3, 11.0]
    e, f, s, _ = evaluate(calc, shifted)
    assert e == pytest.approx(e0, rel=1e-10)
    np.testing.assert_allclose(f, f0, atol=1e-9)

    perm = np.random.default_rng(1).permutation(len(atoms))
    permuted = atoms[perm]
    e, f, s, fi = evaluate(calc, permuted)
    assert e == pytest.approx(e0, rel=1e-10)
    np.testing.assert_allclose(f, f0[perm], atol=1e-9)
    np.testing.assert_allclose(fi, fi0[perm], atol=1e-9)


def test_periodic_images_supercell(si_spec, si_cell):
    """A 2x1x2 supercell has 4x the energy and committee spread, and tiled forces."""
    calc = calc_for(si_spec)
    lam = calc.model.params.noise_precision
    e0, f0, s0, _ = evaluate(calc, si_cell)
    e_k0 = np.array(calc.results["energies_committee"])
    sc = si_cell.repeat((2, 1, 2))
    e, f, s, _ = evaluate(calc, sc)
    e_k = np.array(calc.results["energies_committee"])
    assert e == pytest.approx(4 * e0, rel=1e-10)
    np.testing.assert_allclose(f, np.tile(f0, (4, 1)), atol=1e-9)
    # sigma~^2 - 1/lambda scales with the square of the cell size (committee energies are extensive):
    # every member's E^k is 4x, so the spread (1/K) sum_k (E^k - E_bar)^2 is 16x (HAL eq. 5)
    assert e_k.shape == e_k0.shape == (8,) and np.ptp(e_k0) > 0
    np.testing.assert_allclose(e_k, 4 * e_k0, rtol=1e-10)
    assert s0**2 - 1 / lam > 0
    assert s**2 - 1 / lam == pytest.approx(16 * (s0**2 - 1 / lam), rel=1e-8)


@pytest.mark.parametrize("basis", BASES)
def test_smooth_at_cutoff(basis, request):
    """Energy and force of a dimer vanish continuously as r crosses the cutoff."""
    si_spec = spec_for(request, "si_cell", basis)
    calc = calc_for(si_spec)
    rc = si_spec.r_cut

    def dimer(r):
        a = Atoms("Si2", positions=[[0, 0, 0], [r, 0, 0]], cell=[20, 20, 20], pbc=False)
        a.calc = calc
        e1 = Atoms("Si", positions=[[0, 0, 0]], cell=[20, 20, 20], pbc=False)
        e1.calc = calc
        return a.get_potential_energy() - 2 * e1.get_potential_energy(), a.get_forces()[1, 0]

    for d in (1e-2, 1e-3):
        e_in, f_in = dimer(rc - d)
        e_out, f_out = dimer(rc + d)
        assert e_out == pytest.approx(0.0, abs=1e-12) and f_out == pytest.approx(0.0, abs=1e-12)
        # pylal's envelope (1 - r/r_cut)^3: E = O(d^3), F = O(d^2); ACE's (ace-jax poly2sx/poly1sr)
        # envelopes are quadratic at r_cut: E = O(d^2), F = O(d) (energy and force still continuous)
        p = 3 if basis == "power" else 2
        assert abs(e_in) < 50 * d**p and abs(f_in) < 50 * d ** (p - 1)
    # inside, it is not trivially zero
    assert abs(dimer(rc - 0.8)[0]) > 1e-6


def _fd_check(fun, x0, analytic, h=1e-5):
    num = np.zeros_like(x0)
    for idx in np.ndindex(x0.shape):
        xp, xm = x0.copy(), x0.copy()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = (fun(xp) - fun(xm)) / (2 * h)
    err = np.linalg.norm(num - analytic) / np.linalg.norm(analytic)
    assert err <= 1e-6, f"relative error {err:.2e}"


@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("cell", ["si_cell", "sic_cell"])
def test_forces_bias_and_virial_by_finite_differences(cell, basis, request):
    atoms = request.getfixturevalue(cell)
    spec = spec_for(request, cell, basis)
    # a close contact so that the ZBL prior is active as well
    atoms.positions[1] = atoms.positions[0] + [0.8, 0.6, 0.5]
    tau = 0.4
    calc = calc_for(spec, tau=tau)
    a = atoms.copy()
    a.calc = calc

    def energy_hal(pos):
        a.positions = pos.reshape(-1, 3)
        return a.get_potential_energy()

    def sigma(pos):
        a.positions = pos.reshape(-1, 3)
        a.get_potential_energy()
        return calc.results["sigma"]

    pos0 = atoms.positions.copy()
    a.positions = pos0
    forces = a.get_forces().copy()
    res = calc.model.step(ase_pairs(a, spec.r_cut, spec.species), tau=tau)
    _fd_check(energy_hal, pos0.ravel(), -forces.ravel())
    _fd_check(sigma, pos0.ravel(), res.grad_sigma.ravel())

    # virial = -dE/d(strain) (LAMMPS convention W = -V sigma_ASE), by finite strain
    a.positions = pos0
    stress = a.get_stress(voigt=False).copy()
    cell0 = atoms.cell.array.copy()

    def energy_strained(eps_flat):
        eps = eps_flat.reshape(3, 3)
        b = atoms.copy()
        b.set_cell(cell0 @ (np.eye(3) + eps).T, scale_atoms=True)
        b.calc = calc
        return b.get_potential_energy()

    _fd_check(energy_strained, np.zeros(9), stress.ravel() * atoms.get_volume())


@pytest.mark.parametrize("cell, basis", CELLS_AND_BASES)
def test_member_forces_and_f_i(cell, basis, request):
    """Member forces from the batched pass equal forces of single-member models; f_i by eq. 6."""
    from pylal.model.params import Parameters
    from pylal.model.committee import CommitteeModel
    si_cell, si_spec = request.getfixturevalue(cell), spec_for(request, cell, basis)
    params = random_parameters(si_spec, n_members=4)
    model = CommitteeModel(params)
    pairs = ase_pairs(si_cell, si_spec.r_cut, si_spec.species)
    res = model.step(pairs, members=True)
    for k in range(4):
        single = Parameters(si_spec, params.committee[k], params.committee[k][None], 1e3)
        rk = CommitteeModel(single).step(pairs)
        np.testing.assert_allclose(res.member_forces[k], rk.forces_mean, atol=1e-10)
        assert res.e_members[k] + res.e_prior == pytest.approx(rk.energy, rel=1e-12)
    spread = np.mean([np.linalg.norm(res.member_forces[k] - res.forces_mean, axis=1) for k in range(4)], axis=0)
    eps = np.linalg.norm(res.forces_mean, axis=1).mean()
    from pylal.hal.physics import relative_force_uncertainty
    f = relative_force_uncertainty(res.member_forces, res.forces_mean, eps)
    np.testing.assert_allclose(f, spread / (np.linalg.norm(res.forces_mean, axis=1) + eps))


def test_member_gradients_equal_the_explicit_pair_jacobian(sic_spec, sic_cell):
    """member_gradients (per-centre contraction, no P x F x 3 Jacobian) == Jacobian . coefficients,
    two species, padded pairs included."""
    import jax.numpy as jnp

    from pylal.model.member_gradients import member_gradients, neighbor_slots, pair_expansion
    from pylal.model.neighbors import ase_pairs
    from reference_jacobian import features_and_pair_jacobian

    pairs = ase_pairs(sic_cell, sic_spec.r_cut, sic_spec.species)
    n, p = pairs.n_centers, pairs.n_pairs
    vectors = np.concatenate([pairs.vectors, [[2 * sic_spec.r_cut, 0, 0]] * 5])  # 5 padded pairs
    centers = np.concatenate([pairs.centers, np.zeros(5, np.int32)])
    neighbor_species = pairs.species[np.concatenate([pairs.neighbors, np.zeros(5, np.int32)])]
    mask = np.concatenate([np.ones(p), np.zeros(5)])
    slots, most = neighbor_slots(pairs.centers, n)
    slots = np.concatenate([slots, np.zeros(5, np.int32)])
    coefs = np.random.default_rng(3).normal(size=(6, sic_spec.n_species, sic_spec.n_per_species))
    expansion = pair_expansion(sic_spec, jnp.asarray(vectors), centers, neighbor_species, n)
    grads = member_gradients(sic_spec, expansion, centers, slots, mask, pairs.species[:n], most + 3,
                             jnp.asarray(coefs), chunk=3)
    _, jac = features_and_pair_jacobian(sic_spec, jnp.asarray(pairs.vectors), pairs.centers, neighbor_species[:p], n)
    centre_species = pairs.species[pairs.centers]
    expected = np.einsum("pfa,mpf->mpa", jac, coefs[:, centre_species, :])
    assert np.abs(np.asarray(grads)[:, :p] - expected).max() < 1e-12 * max(1.0, np.abs(expected).max())
    assert np.all(np.asarray(grads)[:, p:] == 0)
