"""ACE forces through ace-jax's C++ kernel (pylal.model.ace_kernel) against ace-jax's XLA autodiff step.

The kernel reads a radial table (~1e-8 of max|F| from the exact radial), so the two paths agree to that,
not to round-off; finite differences of the kernel path are in test_model_physics (basis "ace").
"""
import numpy as np
import pytest

from pylal.model.committee import CommitteeModel
from pylal.model.neighbors import ase_pairs
from pylal.model.params import Parameters
from conftest import random_parameters

TABLE_TOL = 1e-7  # relative to the largest entry; measured ~2e-9


def _close(kernel, xla, name):
    x, y = np.asarray(getattr(kernel, name)), np.asarray(getattr(xla, name))
    assert np.abs(x - y).max() <= TABLE_TOL * np.abs(y).max(), name


@pytest.fixture(scope="module", params=["poly", "sbessel"])
def sic_setup(request):
    from ase.build import bulk

    from pylal.model.ace import AceSpec
    atoms = bulk("Si", "diamond", 5.2, cubic=True)
    atoms.symbols[[1, 4, 6]] = "C"
    atoms.cell[0, 1] = 0.4
    atoms.rattle(0.15, seed=4)
    # two species, order 2 (the XLA step compiles faster than sic_ace_spec's order 3; tests/test_fix_pylal.py)
    spec = AceSpec(species=("Si", "C"), r_cut=3.5, order=2, max_degree=6, prior=(1.0, 1.6), radial=request.param)
    return spec, ase_pairs(atoms, spec.r_cut, spec.species)


def test_kernel_step_equals_the_xla_step(sic_setup):
    """Two species: committee and member energies, F_bar, grad sigma, member forces, virials, atom sigma."""
    spec, pairs = sic_setup
    params = random_parameters(spec, n_members=4)
    kernel = CommitteeModel(params).step(pairs, tau=0.3, members=True)
    xla = CommitteeModel(params, ace_kernel=False).step(pairs, tau=0.3, members=True)
    assert kernel.sigma == pytest.approx(xla.sigma, rel=1e-9)
    assert kernel.e_mean == pytest.approx(xla.e_mean, rel=1e-9)
    for name in ("e_members", "forces_mean", "grad_sigma", "virial_mean", "virial_sigma", "member_forces",
                 "member_virials", "atom_sigma"):
        _close(kernel, xla, name)


def test_hot_swap_recomputes_the_member_readouts(sic_setup):
    spec, pairs = sic_setup
    model = CommitteeModel(random_parameters(spec, n_members=4, seed=1))
    new = random_parameters(spec, n_members=4, seed=2)
    model.set_parameters(new)
    swapped = model.step(pairs, tau=0.3, members=True)
    fresh = CommitteeModel(new).step(pairs, tau=0.3, members=True)
    np.testing.assert_array_equal(swapped.member_forces, fresh.member_forces)
    np.testing.assert_array_equal(swapped.grad_sigma, fresh.grad_sigma)


def test_no_compiler_falls_back_to_xla_with_a_warning(sic_setup, monkeypatch):
    import pylal.model.ace_kernel as ace_kernel

    def unavailable(spec):
        raise ace_kernel.KernelUnavailable("no C++17 compiler (test)")

    monkeypatch.setattr(ace_kernel, "ace_kernel", unavailable)
    spec, pairs = sic_setup
    params = random_parameters(spec, n_members=4)
    with pytest.warns(UserWarning, match="no C[+][+]17 compiler.*XLA"):
        model = CommitteeModel(params)
    expected = CommitteeModel(params, ace_kernel=False).step(pairs, tau=0.3, members=True)
    np.testing.assert_array_equal(model.step(pairs, tau=0.3, members=True).forces, expected.forces)


def test_design_rows_keep_the_exact_features(sic_setup):
    """The fit reads the exact XLA features (no radial table): its basis model does not use the kernel."""
    from pylal.fit.design import _basis_model

    spec, _ = sic_setup
    assert _basis_model(spec)._kernel is None
    assert CommitteeModel(Parameters(spec, np.zeros(spec.size), np.zeros((2, spec.size)), 1.0))._kernel is not None


def test_radial_table_file_equals_a_fresh_table_and_a_bad_file_is_rebuilt(tmp_path, monkeypatch):
    """The table read from pylal's cache is ace-jax's table bit for bit; a file that does not belong to
    the spec (another spec's content under its name, or garbage) is rebuilt, never used."""
    import dataclasses

    from ace_jax.eval.model import lean_keep_basis, with_radial_table

    from pylal.model.ace import AceSpec, ace_basis
    from pylal.model.ace_kernel import tabulated

    monkeypatch.setenv("PYLAL_CACHE_DIR", str(tmp_path))
    spec = AceSpec(species=("Si",), r_cut=3.5, order=2, max_degree=6)
    model = lean_keep_basis(dataclasses.replace(ace_basis(spec).model, folded=False))
    fresh = with_radial_table(model, True)[0]
    built = tabulated(model, spec)
    (path,) = (tmp_path / "ace_tables").iterdir()
    read = tabulated(model, spec)
    for m in (built, read):
        assert m.rtab_grid == fresh.rtab_grid
        assert np.array_equal(np.asarray(m.rtab_coefs), np.asarray(fresh.rtab_coefs))
    with np.load(path) as f:
        wrong = {**f, "key": np.array("another spec"), "rtab_coefs": 2 * f["rtab_coefs"]}
    np.savez(tmp_path / "wrong.npz", **wrong)
    for content in ((tmp_path / "wrong.npz").read_bytes(), b"not a table"):
        path.write_bytes(content)
        assert np.array_equal(np.asarray(tabulated(model, spec).rtab_coefs), np.asarray(fresh.rtab_coefs))
        with np.load(path) as f:  # and the file was replaced by the right one
            assert np.array_equal(f["rtab_coefs"], np.asarray(fresh.rtab_coefs))
