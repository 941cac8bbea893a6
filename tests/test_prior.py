"""Delta-learning with a LAMMPS pair-style prior (pylal.prior, docs/prior.md): E = E_prior + E_ML.

The prior is stored in the parameter file; LAMMPS (native pair style + fix pylal) and ASE
(PylalCalculator, prior through the lammps module) give prior + learned part to 1e-9; the fit on
prior-subtracted targets recovers a known learned part; Morse fits from dimer curves and mixing."""
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.morse import MorsePotential
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import random_parameters
from lammps_util import NKTV2P, read_dump, run_lmp, thermo, write_data
from pylal.calculator import PylalCalculator
from pylal.cli import main as cli
from pylal.fit.committee import fit_parameters
from pylal.model.basis import BasisSpec
from pylal.model.params import ParameterFileError, Parameters
from pylal.prior import LammpsPrior, lammps_commands
from pylal.prior.evaluate import PriorEvaluator
from pylal.prior.morse import Morse, dimer_curve, dimer_morse, fit_morse, mix, morse_prior
from pylal.reference import potential_dir

ELEMENTS = ("Si", "C")
SPEC = BasisSpec(species=ELEMENTS, r_cut=3.5, n_max=4, l_max=2, prior=(1.0, 1.6))  # + internal ZBL
PRIOR = morse_prior({"Si": Morse(2.17, 2.35, 1.4), "C": Morse(3.6, 1.45, 2.0)}, cutoff=4.5)


def sic_cell() -> Atoms:
    """64 atoms, two species, triclinic (as in test_fix_pylal)."""
    atoms = bulk("Si", "diamond", 5.2, cubic=True) * (2, 2, 2)
    atoms.symbols[[1, 4, 6, 17, 30, 41, 55]] = "C"
    cell = atoms.cell.array.copy()
    cell[1, 0] = 0.6
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.12, seed=4)
    atoms.wrap()
    return atoms


def with_prior(params: Parameters, prior) -> Parameters:
    return Parameters(params.spec, params.mean, params.committee, params.noise_precision,
                      params.version, dict(params.hyper), lammps_prior=prior)


def results(calc, atoms):
    a = atoms.copy()
    a.calc = calc
    energy, forces = a.get_potential_energy(), a.get_forces()
    virial = -a.get_stress(voigt=False) * a.get_volume()
    return energy, forces, virial, a.calc.results


# ---- parameter file ---------------------------------------------------------------------------
def test_old_files_load_with_same_hash_and_prior_round_trips(tmp_path):
    params = random_parameters(SPEC, n_members=3, seed=2)
    # a file written the way pylal-params/1 was before priors existed (header without lammps_prior)
    header = {"format": "pylal-params/1", "basis": SPEC.to_dict(), "species": list(SPEC.species),
              "r_cut": SPEC.r_cut, "noise_precision": float(params.noise_precision), "version": 0,
              "n_members": 3, "hyper": {}}
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    h.update(params.mean.tobytes())
    h.update(params.committee.tobytes())
    header["hash"] = h.hexdigest()
    buf = io.BytesIO()
    np.savez(buf, mean=params.mean, committee=params.committee, header=np.array(json.dumps(header, sort_keys=True)))
    (tmp_path / "old.npz").write_bytes(buf.getvalue())
    old = Parameters.load(tmp_path / "old.npz")  # its hash is checked against the v1 header it was written with
    assert old.lammps_prior is None and old.spec == SPEC and old.content_hash == params.content_hash
    header["hash"] = "0" * 64  # a damaged v1 file still fails the check
    np.savez(tmp_path / "bad.npz", mean=params.mean, committee=params.committee,
             header=np.array(json.dumps(header, sort_keys=True)))
    with pytest.raises(ParameterFileError, match="hash mismatch"):
        Parameters.load(tmp_path / "bad.npz")

    stored = with_prior(params, PRIOR)
    digest = stored.save(tmp_path / "new.npz")
    back = Parameters.load(tmp_path / "new.npz")
    assert back.lammps_prior == PRIOR and back.content_hash == digest != params.content_hash
    other = morse_prior({"Si": Morse(2.17, 2.35, 1.41), "C": Morse(3.6, 1.45, 2.0)}, cutoff=4.5)
    assert with_prior(params, other).content_hash != digest  # the prior is part of the hash


# ---- Morse from dimer curves ------------------------------------------------------------------
def test_dimer_fit_recovers_morse_and_mixing_rule_in_lammps():
    # an independent Morse (ASE's calculator; cutoff far beyond the scan) as the "reference"
    d_e, r_e, a = 2.7, 2.1, 1.7
    ref = MorsePotential(epsilon=d_e, r0=r_e, rho0=a * r_e, rcut1=5.0, rcut2=6.0)
    m = dimer_morse(ref, "Si", 1.4, 4.0, 40)
    assert m.d_e == pytest.approx(d_e, rel=1e-8) and m.r_e == pytest.approx(r_e, rel=1e-8)
    assert m.a == pytest.approx(a, rel=1e-6)
    r, v = dimer_curve(ref, "Si", np.linspace(1.5, 4.0, 30))
    full = fit_morse(r, v)  # all three parameters free
    assert (full.d_e, full.r_e, full.a) == pytest.approx((d_e, r_e, a), rel=1e-6)

    # mixing (Shuaibi): D_AB = sqrt(D_A D_B), r_e and a arithmetic means; evaluated by LAMMPS
    si, c = Morse(2.17, 2.35, 1.4), Morse(3.6, 1.45, 2.0)
    prior = morse_prior({"Si": si, "C": c}, cutoff=12.0, style="morse")
    evaluator = PriorEvaluator(prior, ["C", "Si"])
    for dist in (1.6, 1.9, 2.4, 3.3):
        dimer = Atoms("SiC", positions=[[0, 0, 0], [0.3 * dist, 0.4 * dist, np.sqrt(0.75) * dist]], pbc=False)
        e = evaluator.evaluate(dimer).energy
        expect = np.sqrt(si.d_e * c.d_e) * Morse(1.0, (si.r_e + c.r_e) / 2, (si.a + c.a) / 2).energy(dist)
        assert e == pytest.approx(expect, abs=1e-10)
        assert mix(si, c).energy(dist) == pytest.approx(expect, abs=1e-12)


def test_zbl_prior_independent_of_type_order():
    """ZBL's pair_coeff values belong to types I and J: the lines swap them when needed."""
    prior = LammpsPrior.zbl(["Si", "C"], 0.8, 1.6)
    atoms = Atoms("SiCSi", positions=[[0, 0, 0], [1.1, 0, 0], [0.2, 1.2, 0.1]], pbc=False)
    e1 = PriorEvaluator(prior, ["Si", "C"]).evaluate(atoms).energy
    e2 = PriorEvaluator(prior, ["C", "Si"]).evaluate(atoms).energy
    assert e1 > 1.0 and e1 == pytest.approx(e2, rel=1e-12)


def test_evaluator_reuses_its_lammps_system_exactly():
    """Later calls on periodic cells only move box and atoms: same numbers as a fresh set-up."""
    evaluator, rng = PriorEvaluator(PRIOR, ELEMENTS, 3.5), np.random.default_rng(3)
    for i in range(4):
        atoms = sic_cell()
        atoms.set_cell(atoms.cell.array + 0.3 * rng.normal(size=(3, 3)), scale_atoms=True)
        atoms.rattle(0.05, seed=i)
        a, b = evaluator.evaluate(atoms), PriorEvaluator(PRIOR, ELEMENTS, 3.5).evaluate(atoms)
        assert abs(a.energy - b.energy) < 1e-9 and np.abs(a.forces - b.forces).max() < 1e-9
        assert np.abs(a.virial - b.virial).max() < 1e-9


# ---- ASE path ---------------------------------------------------------------------------------
def test_ase_calculator_is_prior_plus_learned_part_and_f_i_uses_total_force():
    learned = random_parameters(SPEC, n_members=8, seed=1)
    atoms = sic_cell()
    e0, f0, w0, r0 = results(PylalCalculator(learned, check_every=1), atoms)
    e, f, w, r = results(PylalCalculator(with_prior(learned, PRIOR), check_every=1), atoms)
    lp = PriorEvaluator(PRIOR, ELEMENTS).evaluate(atoms)
    assert abs(e - (lp.energy + e0)) < 1e-9
    assert np.abs(f - (lp.forces + f0)).max() < 1e-9
    assert np.abs(w - (lp.virial + w0)).max() < 1e-9
    assert np.abs(r["energies_committee"] - (r0["energies_committee"] + lp.energy)).max() < 1e-9
    assert r["sigma"] == r0["sigma"]  # the prior is common to all members
    # f_i (HAL eq. 6): same member spread, denominator |F_bar_i| + eps with the TOTAL mean force
    spread = r0["f_i"] * (np.linalg.norm(f0, axis=1) + np.linalg.norm(f0, axis=1).mean())
    total = np.linalg.norm(f, axis=1)
    assert np.abs(r["f_i"] - spread / (total + total.mean())).max() < 1e-12
    assert np.abs(r["f_i"] - r0["f_i"]).max() > 1e-3  # it does differ from the learned-only f_i


# ---- LAMMPS path ------------------------------------------------------------------------------
def _deck(pair_lines: str, dump: bool = True) -> str:
    extra = ("dump d all custom 1 forces.dump id type x y z fx fy fz f_ml[1]\n"
             "dump_modify d format float %22.16g") if dump else ""
    return f"""units metal
atom_style atomic
atom_modify map array
boundary p p p
read_data cell.data
{pair_lines}
fix ml all pylal params.npz elements {' '.join(ELEMENTS)} tau 0 check_every 1
compute vir all pressure NULL virial
thermo_style custom step pe c_vir[1] c_vir[2] c_vir[3] c_vir[4] c_vir[5] c_vir[6] vol f_ml[4]
thermo_modify format float %22.16g
{extra}
run 0
"""


@pytest.fixture
def system(tmp_path):
    params = with_prior(random_parameters(SPEC, n_members=8, seed=1), PRIOR)
    params.save(tmp_path / "params.npz")
    write_data(sic_cell(), tmp_path / "cell.data", ELEMENTS)
    return tmp_path, params


@pytest.mark.parametrize("ranks", [1, pytest.param(2, marks=pytest.mark.mpi)])
def test_lmp_with_prior_equals_ase_prior_plus_learned(system, ranks):
    """Deck lines from lammps_commands + fix pylal == PylalCalculator (prior + learned), 1e-9:
    energy, forces, virial, and f_i (total mean force in the denominator on both paths)."""
    tmp, params = system
    run_lmp(_deck("\n".join(lammps_commands(PRIOR, ELEMENTS, 4.0))), tmp, ranks=ranks)
    row = thermo((tmp / "log.lammps").read_text())[-1]
    frame = read_dump(tmp / "forces.dump")[0]
    atoms = sic_cell()
    atoms.positions = frame[:, 2:5]
    energy, forces, virial, res = results(PylalCalculator(params, check_every=1), atoms)
    w_lmp = np.array([row[f"c_vir[{k}]"] for k in range(1, 7)]) * row["Volume"] / NKTV2P
    assert abs(row["PotEng"] - energy) < 1e-9
    assert np.abs(frame[:, 5:8] - forces).max() < 1e-9
    assert np.abs(w_lmp - virial[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]]).max() < 1e-9
    assert np.abs(frame[:, 8] - res["f_i"]).max() < 1e-9
    assert row["f_ml[4]"] == pytest.approx(res["f_max"], rel=1e-9)


def test_fix_refuses_deck_without_the_prior(system):
    tmp, params = system
    out = run_lmp(_deck("pair_style zero 4.0\npair_coeff * *", dump=False), tmp, check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "physics prior (pair style 'morse/smooth/linear')" in text and "is 'zero'" in text
    for line in lammps_commands(PRIOR, ELEMENTS, SPEC.r_cut):
        assert line in text  # the lines to add are printed


def test_engine_does_not_hot_swap_to_another_prior(system):
    from pylal.lammps.engine import Engine

    tmp, params = system
    engine = Engine([str(tmp / "params.npz"), "elements", *ELEMENTS, "exit_file", "none"], None, 2)
    other = with_prior(params, LammpsPrior.zbl(ELEMENTS, 1.0, 1.8))
    engine.swap(other, step=10)
    assert engine.params.lammps_prior == PRIOR and "LAMMPS prior differs" in engine.pop_messages()
    engine.swap(with_prior(params, PRIOR), step=20)
    assert "swapped in" in engine.pop_messages()


# ---- fit on prior-subtracted targets ----------------------------------------------------------
SI_SPEC = BasisSpec(species=("Si",), r_cut=3.6, n_max=4, l_max=2, prior=None)
SI_PRIOR = morse_prior({"Si": Morse(2.17, 2.35, 1.4)}, cutoff=5.0)


@pytest.fixture(scope="module")
def si_data():
    """Labels = Morse prior + a known learned part (its committee all equal to the mean)."""
    truth = random_parameters(SI_SPEC, n_members=1, seed=7)
    truth = Parameters(SI_SPEC, truth.mean, truth.mean[None], 1e6, lammps_prior=SI_PRIOR)
    calc = PylalCalculator(truth, check_every=0)
    data = []
    for i in range(10):
        a = bulk("Si", "diamond", 5.43 * (1 + 0.015 * (i % 3 - 1)), cubic=True)
        a.rattle(0.1, seed=i)
        a.calc = calc
        a.calc = SinglePointCalculator(a, energy=a.get_potential_energy(), forces=a.get_forces(),
                                       stress=a.get_stress())
        data.append(a)
    return truth, data


def test_fit_on_prior_subtracted_targets_recovers_learned_part(si_data):
    truth, data = si_data
    fitted = fit_parameters(SI_SPEC, data[:8], n_members=4, prior=SI_PRIOR)
    assert fitted.lammps_prior == SI_PRIOR
    no_prior = fit_parameters(SI_SPEC, data[:8], n_members=4)
    learned = Parameters(SI_SPEC, truth.mean, truth.committee, 1e6)  # the learned part alone
    errors = {}
    for name, p in (("prior", fitted), ("none", no_prior)):
        lp = Parameters(SI_SPEC, p.mean, p.committee, 1e6)
        errors[name] = max(np.abs(results(PylalCalculator(lp, check_every=0), a)[1]
                                  - results(PylalCalculator(learned, check_every=0), a)[1]).max()
                           for a in data[8:])
    # the learned part, recovered on held-out cells (up to the ridge's shrinkage; measured 4e-6 eV/A);
    # without the prior the fit cannot absorb it (Morse cutoff 5 A > model cutoff 3.6 A; measured 4 eV/A)
    assert errors["prior"] < 1e-4 and errors["none"] > 1e3 * errors["prior"]
    held = data[9]
    _, f_total, _, _ = results(PylalCalculator(fitted, check_every=0), held)
    assert np.abs(f_total - held.get_forces()).max() < 1e-4  # and prior + learned = the labels


def test_refit_server_fits_residual_and_writes_prior(tmp_path, si_data):
    from pylal.server.config import ConfigError, ServerConfig
    from pylal.server.refit import Refitter
    from pylal.server.versions import VersionStore

    truth, data = si_data
    (tmp_path / "prior.json").write_text(SI_PRIOR.to_json())
    fit = dict(species=["Si"], r_cut=3.6, n_max=4, l_max=2, prior=[], n_members=4, lammps_prior_file="prior.json")
    cfg = ServerConfig.from_dict({"run_dir": str(tmp_path), "fit": fit})

    class NoLabels:
        def labeled_ids(self):
            return []

        def labeled_atoms(self, ids=None):
            return []

    versions = VersionStore(tmp_path)
    pointer = Refitter(SI_SPEC, cfg.fit, NoLabels(), versions, data[:8]).refit()
    published = Parameters.load(tmp_path / pointer["file"])
    assert published.lammps_prior == SI_PRIOR
    direct = fit_parameters(SI_SPEC, data[:8], n_members=4, prior=SI_PRIOR)
    np.testing.assert_allclose(published.mean, direct.mean, rtol=1e-9, atol=1e-12)
    # the same prior given inline as a table; a config without it is refused (walkers run the prior)
    inline = ServerConfig.from_dict({"run_dir": str(tmp_path), "fit": dict(fit, lammps_prior_file="",
                                                                          lammps_prior=SI_PRIOR.to_dict())})
    assert Refitter(SI_SPEC, inline.fit, NoLabels(), versions, []).prior == SI_PRIOR
    bare = ServerConfig.from_dict({"run_dir": str(tmp_path), "fit": dict(fit, lammps_prior_file="")})
    with pytest.raises(ConfigError, match="lammps_prior"):
        Refitter(SI_SPEC, bare.fit, NoLabels(), versions, [])
    with pytest.raises(ConfigError, match=r"\[fit\] lammps_prior.*unknown key"):
        Refitter(SI_SPEC, ServerConfig.from_dict({"fit": dict(fit, lammps_prior_file="", lammps_prior={
            "style": "morse", "coef": {}})}).fit, NoLabels(), versions, [])


# ---- command line -----------------------------------------------------------------------------
def test_cli_fit_morse_from_sw_dimer_and_commands(tmp_path, capsys):
    """The SW two-body term has its minimum -epsilon at r = 2^(1/6) sigma: the dimer fit finds it."""
    sw = (Path(potential_dir()) / "Si.sw").read_text()
    row = next(line.split() for line in sw.splitlines() if re.match(r"\s*Si\s+Si\s+Si\s", line))
    epsilon, sigma = float(row[3]), float(row[4])
    assert cli(["prior", "fit-morse", "--reference", "lammps", "--species", "Si", "-o", str(tmp_path / "p.json")]) == 0
    prior = LammpsPrior.load(tmp_path / "p.json")
    d0, alpha, r0 = prior.coeff("Si", "Si")
    assert d0 == pytest.approx(epsilon, rel=1e-8) and r0 == pytest.approx(2 ** (1 / 6) * sigma, rel=1e-6)
    assert prior.style == "morse/smooth/linear" and alpha > 0
    with_prior(random_parameters(SI_SPEC, 2), prior).save(tmp_path / "p.npz")
    capsys.readouterr()
    assert cli(["prior", "commands", str(tmp_path / "p.npz"), "--elements", "Si"]) == 0
    assert capsys.readouterr().out.splitlines() == lammps_commands(prior, ["Si"], SI_SPEC.r_cut)
