"""`pylal export`: the mean ACE potential as a PACE .yace, read back by ace-jax's own PACE evaluator."""
import numpy as np
import pytest
from ase.build import bulk

from pylal.calculator import PylalCalculator
from pylal.cli import main
from pylal.model.ace import AceSpec
from pylal.model.export import ExportError, write_yace
from pylal.model.params import Parameters
from conftest import random_parameters


def test_yace_round_trip_equals_pylal_energies_and_forces(tmp_path, sic_cell):
    """pylal's ACE model (no ZBL prior) and ace-jax's evaluation of the exported .yace agree to 1e-8."""
    from ace_jax import ACECalculator

    spec = AceSpec(species=("Si", "C"), r_cut=3.5, order=3, max_degree=5, prior=None)
    params = random_parameters(spec, n_members=2)
    write_yace(params, tmp_path / "m.yace")
    a = sic_cell.copy()
    a.calc = PylalCalculator(params, tau=0.0)
    b = sic_cell.copy()
    b.calc = ACECalculator(str(tmp_path / "m.yace"))
    assert abs(a.get_potential_energy()) > 1e-3  # not trivially zero
    assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-8)


def test_sbessel_yace_is_released_ml_pace_format_and_equals_pylal(tmp_path, sic_cell):
    """The "sbessel" radials export as ML-PACE's own SBessel radials (no tabulated radials, which released
    ML-PACE cannot read); ace-jax's PACE evaluator of that file gives pylal's energies and forces to 1e-8."""
    from ace_jax import ACECalculator
    from ace_jax.eval.pace_io import load_tree

    spec = AceSpec(species=("Si", "C"), r_cut=3.5, order=3, max_degree=6, prior=None, radial="sbessel")
    params = random_parameters(spec, n_members=2)
    write_yace(params, tmp_path / "m.yace")
    bonds = load_tree(tmp_path / "m.yace")["bonds"].values()
    assert {b["radbasename"] for b in bonds} == {"SBessel"} and all("radtable" not in b for b in bonds)
    a = sic_cell.copy()
    a.calc = PylalCalculator(params, tau=0.0)
    b = sic_cell.copy()
    b.calc = ACECalculator(str(tmp_path / "m.yace"))
    assert abs(a.get_potential_energy()) > 1e-3
    assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-8)
    assert np.abs(a.get_forces()).max() > 1e-3


def test_export_cli_writes_yace_and_lammps_lines(tmp_path, si_ace_spec, si_spec, capsys):
    random_parameters(si_ace_spec).save(tmp_path / "params.npz")
    assert main(["export", str(tmp_path / "params.npz"), "--yace", str(tmp_path / "out" / "si.yace")]) == 0
    assert (tmp_path / "out" / "si.yace").stat().st_size > 1000
    lines = (tmp_path / "out" / "si.lammps").read_text()
    assert "pair_style pace" in lines and "pair_coeff * * si.yace Si" in lines and "ZBL" in lines
    # pylal's own basis has no PACE form: a clear error naming the basis kind
    random_parameters(si_spec).save(tmp_path / "power.npz")
    assert main(["export", str(tmp_path / "power.npz"), "--yace", str(tmp_path / "p.yace")]) == 2
    assert "'power'" in capsys.readouterr().err
    with pytest.raises(ExportError, match="kind 'ace'"):
        write_yace(Parameters.load(tmp_path / "power.npz"), tmp_path / "p.yace")


def test_ace_basis_builds_for_hydrogen_and_matches_finite_differences():
    """ace-jax 0.4.1 has no bond length for H: pylal supplies r0 (2 x ASE's covalent radius) so a water
    model builds; its forces are the gradient of its energy."""
    from ase.build import molecule

    from pylal.model.ace import bond_lengths

    r0 = bond_lengths(("H", "O"))
    assert r0[0, 0] == pytest.approx(0.62) and r0[1, 1] == pytest.approx(1.7)  # O: ace-jax's own table
    assert bond_lengths(("Si", "C")) is None  # tabulated elements keep ace-jax's default
    params = random_parameters(AceSpec(species=("H", "O"), r_cut=3.0, order=2, max_degree=4, prior=None))
    atoms = molecule("H2O")
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    atoms.calc = PylalCalculator(params, tau=0.0)
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    assert np.isfinite(e) and np.abs(f).max() > 1e-3
    h, x = 1e-5, atoms.positions.copy()
    for i, a in [(0, 0), (1, 2), (2, 1)]:
        energies = []
        for s in (h, -h):
            atoms.positions = x
            atoms.positions[i, a] += s
            energies.append(atoms.get_potential_energy())
        assert -(energies[0] - energies[1]) / (2 * h) == pytest.approx(f[i, a], abs=1e-6)
