"""pylal campaign: configuration errors, the termination rule on traces, and one small campaign end to end
(refit server + a LAMMPS walker under mpirun + final ARD fit)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lammps_util import env as lammps_env

from pylal.campaign.config import CampaignConfig
from pylal.campaign.trace import read_trace, summarize
from pylal.server.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DECK = ROOT / "inputs" / "si" / "in.walker"


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_defaults_and_errors(tmp_path):
    (tmp_path / "in.walker").write_text(DECK.read_text())
    cfg = CampaignConfig.load(write_toml(tmp_path / "c.toml", '[[walkers]]\nname = "a"\n'))
    assert cfg.walkers[0].deck == str(tmp_path / "in.walker")
    assert cfg.server.run_dir == (Path("runs") / "c").resolve()
    assert cfg.final.method == "ard" and cfg.termination.quiet_steps == 2000
    assert "tau_rel 0.1" in cfg.hal.fix_keywords() and "sigma_tol 0.005" in cfg.hal.fix_keywords()
    assert "f_tol 0.05" in cfg.hal.fix_keywords({"f_tol": 0.05}) and "sigma_tol" not in cfg.hal.fix_keywords({"sigma_tol": 0.0})
    with pytest.raises(ConfigError, match=r"hal: unknown key\(s\) \['ftol'\]"):
        CampaignConfig.load(write_toml(tmp_path / "c.toml", '[[walkers]]\nhal = { ftol = 0.1 }\n'))
    with pytest.raises(ConfigError, match="unknown key.*'walker'"):
        CampaignConfig.load(write_toml(tmp_path / "c.toml", '[[walker]]\nname = "a"\n'))
    with pytest.raises(ConfigError, match="deck .*missing.in does not exist"):
        CampaignConfig.load(write_toml(tmp_path / "c.toml", '[[walkers]]\ndeck = "missing.in"\n'))
    with pytest.raises(ConfigError, match=r"\[hal\] unknown key"):
        CampaignConfig.load(write_toml(tmp_path / "c.toml", '[hal]\ntau = 1.0\n'))
    with pytest.raises(ConfigError, match="names must be unique"):
        CampaignConfig.load(write_toml(tmp_path / "c.toml", '[[walkers]]\nname = "a"\n[[walkers]]\nname = "a"\n'))
    with pytest.raises(ConfigError, match=r"\[fit\] n_max"):
        CampaignConfig.load(write_toml(tmp_path / "c.toml", '[fit]\nn_max = "8"\n'))
    with pytest.raises(ConfigError, match=r"\[fit\] basis = 'pace': expected one of \['ace', 'power'\]"):
        CampaignConfig.load(write_toml(tmp_path / "c.toml", '[fit]\nbasis = "pace"\n'))


def test_the_demo_input_builds_an_ace_basis():
    from pylal.model.ace import AceSpec
    from pylal.model.registry import spec_from_config

    cfg = CampaignConfig.load(ROOT / "inputs" / "si" / "campaign.toml")
    spec = spec_from_config(cfg.server.fit)
    assert isinstance(spec, AceSpec) and (spec.order, spec.max_degree, spec.size) == (2, 16, 180)


def test_quiet_steps_count_only_the_newest_version_since_the_last_flag(tmp_path):
    rows = ["wall_time,step,version,tau,energy,sigma,f_max,softmax,n_flags,flagged"]
    rows += [f"{i},{s},{v},0,0,0,0,0,0,{f}" for i, (s, v, f) in enumerate(
        [(0, 1, 0), (5, 1, 1), (10, 2, 0), (15, 2, 0), (20, 2, 1), (25, 3, 0), (30, 3, 0), (35, 3, 0)])]
    path = tmp_path / "trace.csv"
    path.write_text("\n".join(rows) + "\n" + "99,40,3,0")  # a row being written is ignored
    trace = read_trace(path)
    assert len(trace) == 8
    assert summarize(trace, newest_version=3).quiet_steps == 10  # steps 25..35 on version 3
    assert summarize(trace, newest_version=4).quiet_steps == 0  # a newer version exists: not yet run
    assert summarize(trace[:5], newest_version=2).quiet_steps == 0  # the last row flagged
    assert summarize(trace, 3).waiting == pytest.approx(2.0)  # wall time after the two flagged rows
    assert summarize([], 1).quiet_steps == 0


def test_a_walker_far_from_the_held_out_densities_is_named(tmp_path):
    from ase.build import bulk

    from pylal.campaign.density import outside_holdout, volume_range

    held = [bulk("Al", "fcc", a=a, cubic=True) for a in (4.05, 4.15)]  # 16.6 and 17.9 A^3/atom
    molecule = bulk("Al", "fcc", a=4.0, cubic=True)
    molecule.pbc = False  # a non-periodic frame has no density to compare
    lo, hi = volume_range(held + [molecule])
    assert (lo, hi) == pytest.approx((4.05 ** 3 / 4, 4.15 ** 3 / 4))
    assert outside_holdout("solid", 19.0, (lo, hi)) is None  # within 15% above the range
    warning = outside_holdout("liquid1500", 27.9, (lo, hi))
    assert "liquid1500 is at 27.9 A^3/atom" in warning and "16.6-17.9" in warning
    assert outside_holdout("dense", 13.0, (lo, hi)) is not None  # compressed as well
    assert outside_holdout("old trace", float("nan"), (lo, hi)) is None
    assert volume_range([molecule]) is None and outside_holdout("x", 99.0, None) is None
    # traces written before the volume column read as NaN; new ones carry it
    old = tmp_path / "old.csv"
    old.write_text("wall_time,step,version,tau,energy,sigma,f_max,softmax,n_flags,flagged\n1,5,1,0,0,0,0,0,0,0\n")
    assert np.isnan(summarize(read_trace(old), 1).volume_per_atom)
    header = "wall_time,step,version,tau,energy,sigma,f_max,softmax,n_flags,flagged,volume_per_atom\n"
    new = tmp_path / "new.csv"
    new.write_text(header + "1,5,1,0,0,0,0,0,0,0,20.02\n")
    assert summarize(read_trace(new), 1).volume_per_atom == 20.02
    # the walker's volume is the median of its last 20 check steps: a spike of a few rows is not a state
    volumes = [17.0] * 30 + [30.0] * 5 + [17.5] * 15
    new.write_text(header + "".join(f"{i},{5 * i},1,0,0,0,0,0,0,0,{v}\n" for i, v in enumerate(volumes)))
    assert summarize(read_trace(new), 1).volume_per_atom == 17.5
    new.write_text(header + "".join(f"{i},{5 * i},1,0,0,0,0,0,0,0,{v}\n" for i, v in enumerate([17.0] * 30 + [30.0] * 11)))
    assert summarize(read_trace(new), 1).volume_per_atom == 30.0


CAMPAIGN = """
[fit]
species = ["Si"]
n_max = 4
l_max = 2
n_members = 8
[initial]
repeat = [1, 1, 1]
n_configs = 3
rattle = 0.02                  # near-perfect cells only: MD at 2000 K leaves the data and flags
[[walkers]]
name = "hot"
temperature = 2000.0
[hal]
tau_rel = 0.1
f_tol = 0.035                  # the first 2000 K steps reach f_max 0.04: they flag
check_every = 5
wait_timeout = 120.0
[termination]
quiet_steps = 200
max_minutes = 6.0
[holdout]
n_configs = 4
stride = 20
[final]
n_members = 8
[validate]
enabled = false
"""


@pytest.mark.slow
def test_small_campaign_end_to_end(tmp_path):
    (tmp_path / "in.walker").write_text(DECK.read_text())
    config = write_toml(tmp_path / "campaign.toml", CAMPAIGN)
    run = tmp_path / "run"
    env = lammps_env()  # the installed pylal (with the plugin), not the source tree on PYTHONPATH
    proc = subprocess.run([sys.executable, "-m", "pylal.cli", "campaign", str(config), "--run-dir", str(run)],
                          capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    record = json.loads((run / "campaign.json").read_text())
    assert record["status"] == "done" and record["termination"]["reason"] == "converged"
    final = record["final"]
    # every reference call is accounted for: 3 initial + the labelled flags, all in the final data set
    from ase.io import read

    from pylal.model.params import Parameters
    dataset = read(run / "final" / "dataset.xyz", index=":")
    assert final["n_reference_calls"] == 3 + final["n_labels"] + final["n_failed"]
    assert len(dataset) == 3 + final["n_labels"] == final["n_configs"]
    params = Parameters.load(run / "final" / "params.npz")
    assert params.version == final["version"]
    if final["method"] == "ard":
        assert params.hyper["final_fit"] == "ard"
    else:  # the ARD fit was worse on the held-out set or failed: the newest BRR version is final
        assert final["method"].startswith(f"brr (version {params.version}") and "final_fit" not in params.hyper
    # calibration of the final committee on the held-out set is recorded
    assert 0 < final["holdout_force_rms_z"] < 10 and 0 <= final["holdout_force_coverage95"] <= 1
    # the walker swapped every published version in without restarting, and ended quiet on the newest
    trace = read_trace(run / "walkers" / "hot" / "trace.csv")
    versions = [r["version"] for r in trace]
    assert versions == sorted(versions)
    # NVT (in.walker) on the 8-atom diamond cell: the trace's volume per atom is a^3 / 8 throughout
    assert all(r["volume_per_atom"] == pytest.approx(5.431 ** 3 / 8, rel=1e-5) for r in trace)
    end = record["termination"]
    decided = end["walkers"]["hot"]  # the walker may flag again between the decision and its stop
    assert decided["version"] == end["newest_version"] and decided["quiet_steps"] >= 200
    before = [r for r in trace if r["step"] <= decided["step"]]
    assert summarize(before, end["newest_version"]).quiet_steps == decided["quiet_steps"]
    # every label came from a flag of this walker (a flag may also be a duplicate of a labelled one)
    assert 1 <= final["n_labels"] + final["n_failed"] <= sum(r["flagged"] for r in trace)
    assert np.isfinite(final["holdout_force_rmse"]) and final["holdout_force_rmse"] < 0.3
    assert out.strip().splitlines()[-1].startswith("holdout_force_rmse: ")
    walker = record["walkers"][0]  # recoveries: every guard event / rollback of fix pylal (none needed here)
    assert walker["restarts"] == [] and walker["n_rollbacks"] == len(walker["recoveries"])


def test_a_dead_walker_restarts_from_its_checkpoint(tmp_path, monkeypatch):
    """A walker restarts from the last good state fix pylal checkpointed (a copy, with a new seed),
    and only from its start structure when it died before the first checkpoint; every restart is
    recorded with its reason and source."""
    from ase.build import bulk

    from conftest import random_parameters
    from pylal.campaign import walkers as walkers_module
    from pylal.lammps.checkpoint import data_file
    from pylal.model.basis import BasisSpec

    (tmp_path / "in.walker").write_text(DECK.read_text())
    cfg = CampaignConfig.load(write_toml(tmp_path / "c.toml", '[fit]\nspecies = ["Si"]\n[[walkers]]\nname = "a"\n'),
                              run_dir=tmp_path / "run")
    params = tmp_path / "p.npz"
    random_parameters(BasisSpec(species=("Si",), r_cut=3.8, n_max=4, l_max=2)).save(params)
    monkeypatch.setattr(walkers_module.WalkerRun, "start", lambda self: None)
    walker = walkers_module.WalkerRun(cfg.walkers[0], cfg, params, bulk("Si", "diamond", 5.431, cubic=True), 3.8)
    assert "checkpoint checkpoint.data" in " ".join(walker.command())
    first = walker.restart(params, reason="lost_atoms")
    assert (first["source"], first["data"]) == ("start structure", "start.data")
    atoms = bulk("Si", "diamond", 5.431, cubic=True)
    n = len(atoms)
    box = np.array([0, 0, 0, *np.diag(atoms.cell), 0, 0, 0, 1, 1, 1], dtype=float)
    walker.checkpoint.write_text(data_file(120, np.arange(1, n + 1), np.ones(n, int), atoms.positions,
                                           np.zeros((n, 3)), np.zeros((n, 3), int), box, np.array([0.0, 28.0855])))
    second = walker.restart(params, reason="python_error")
    assert second["source"] == "checkpoint (step 120)" and second["seed"] == first["seed"] + 1000
    assert (walker.dir / second["data"]).read_text() == walker.checkpoint.read_text()
    assert f"data {second['data']}" in " ".join(walker.command())
    assert [r["reason"] for r in walker.restart_log] == ["lost_atoms", "python_error"]


def test_holdout_file_is_used_as_it_is(tmp_path):
    """[holdout] file: cached labelled configurations (inputs/dft/holdout.xyz) replace the reference MD;
    a missing file or an unlabelled configuration is a clear error."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from pylal.campaign.run import Campaign

    (tmp_path / "in.walker").write_text(DECK.read_text())
    with pytest.raises(ConfigError, match=r"\[holdout\] file = .*missing.xyz: no such file"):
        CampaignConfig.load(write_toml(tmp_path / "c.toml", '[holdout]\nfile = "missing.xyz"\n'))
    frames = []
    for seed in range(2):
        atoms = bulk("Si", cubic=True)
        atoms.rattle(0.05, seed=seed)
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 - seed, forces=np.full((8, 3), 0.1 * seed))
        frames.append(atoms)
    write(tmp_path / "held.xyz", frames)
    cfg = CampaignConfig.load(write_toml(tmp_path / "c.toml", '[holdout]\nfile = "held.xyz"\n'), run_dir=tmp_path / "run")
    held = Campaign(cfg, log=lambda *a, **k: None).holdout()
    assert [a.get_potential_energy() for a in held] == [-1.0, -2.0]
    np.testing.assert_allclose(held[1].get_forces(), 0.1)
    assert (tmp_path / "run" / "holdout.xyz").exists()
    write(tmp_path / "bare.xyz", [bulk("Si", cubic=True)])
    cfg = CampaignConfig.load(write_toml(tmp_path / "c.toml", '[holdout]\nfile = "bare.xyz"\n'), run_dir=tmp_path / "run2")
    with pytest.raises(ValueError, match=r"bare.xyz: configuration\(s\) \[0\] carry no reference forces"):
        Campaign(cfg, log=lambda *a, **k: None).holdout()


def test_validation_runs_the_mean_potential_without_f_i_checks(monkeypatch, tmp_path):
    """The campaign validates the final potential unbiased and without f_i checks: handed a PylalCalculator with
    its defaults, the validation computed the K member forces at every MD step (`make demo`: 66 s instead of
    about 20)."""
    from types import SimpleNamespace

    import pylal.validate as validate
    from pylal.campaign.run import Campaign
    from pylal.model.basis import BasisSpec
    from pylal.validate.table import _as_calculator
    from conftest import random_parameters

    seen = {}

    def property_table(calculator, reference, **settings):
        seen["model"] = _as_calculator(calculator)  # what compute_properties runs
        return {}

    monkeypatch.setattr(validate, "property_table", property_table)
    monkeypatch.setattr(validate, "write_validation", lambda table, path: None)
    campaign = Campaign.__new__(Campaign)  # only what validate() reads
    campaign.cfg = SimpleNamespace(validate=SimpleNamespace(enabled=True, quick=True, properties=["crystal"]))
    campaign.say, campaign.run, campaign.record = (lambda message: None), tmp_path, {"timings": {}}
    campaign.reference_calculator = lambda: None
    campaign.validate(random_parameters(BasisSpec(species=("Si",), r_cut=3.8, n_max=3, l_max=2)))
    rule = seen["model"].controller.rule
    assert rule.check_every == 0 and rule.tau == 0.0 and rule.tau_rel is None
