"""`pylal report`: a small but real run folder (SW-labelled Si cells, fitted versions, traces, a
server log) gives every figure, one page embedding them, and learning-curve numbers equal to an
independent RMSE computed from the design blocks; a partial run folder still gives a page that
says what is missing."""
import base64
import html
import json

import numpy as np
import pytest
from ase.io import read, write

from pylal.fit.committee import fit_parameters
from pylal.fit.design import Weights, configuration_blocks
from pylal.model.basis import BasisSpec
from pylal.model.params import Parameters
from pylal.report import build_report
from pylal.report.data import load_run
from pylal.report.evaluate import learning_curve
from pylal.report.plot_walkers import timeline, version_changes
from pylal.sampling import diamond_si

SPEC = BasisSpec(species=("Si",), r_cut=3.8, n_max=4, l_max=2)
HEADER = "wall_time,step,version,tau,energy,sigma,f_max,softmax,n_flags,flagged"


def sw_labelled(n, seed0):
    from pylal.reference import label, make_calculator

    sw = make_calculator("lammps")
    out = []
    for i in range(n):
        a = diamond_si(1, rattle=0.12, seed=seed0 + i)
        a.set_cell(a.cell * (1 + 0.02 * (i % 3 - 1)), scale_atoms=True)
        out.append(label(a, sw).atoms)
    return out


def write_trace(path, rng, n_rows, versions, flag_rows, t0, volume=None):
    """volume: volume per atom of the first row (a growing box), or None for a trace from before that column."""
    rows = [HEADER + (",volume_per_atom" if volume else "")]
    n_flags = 0
    for i in range(n_rows):
        flagged = int(i in flag_rows)
        n_flags += flagged
        version = versions[min(i * len(versions) // n_rows, len(versions) - 1)]
        f_max = 0.35 if flagged else 0.05 * np.exp(rng.normal(scale=0.5))
        rows.append(f"{t0 + i:.3f},{10 * i},{version},{0.01 + 1e-4 * i:.6g},{-34.6 + rng.normal(scale=0.01):.6f},"
                    f"{0.002:.4g},{f_max:.5g},{0.2 + 0.1 * rng.random():.4g},{n_flags},{flagged}"
                    + (f",{volume * (1 + 0.01 * i):.6g}" if volume else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train, holdout = sw_labelled(6, 0), sw_labelled(3, 100)
    write(run / "holdout.xyz", holdout)
    holdout = read(run / "holdout.xyz", index=":")  # as the report sees it (extxyz rounds the labels)
    (run / "versions").mkdir()
    log = [{"time": 1000.0, "event": "start"}]
    for version, n in ((1, 2), (2, 4), (3, 6)):
        p = fit_parameters(SPEC, train[:n], Weights(5, 1, 1), n_members=4, seed=version, version=version)
        if version == 3:
            p.hyper["n_configs"] = n  # no refit event for v3: the count comes from the file
        else:
            log.append({"time": 1000.0 + version, "event": "refit", "version": version, "configs": n, "seconds": 0.5})
        p.save(run / "versions" / f"params_v{version:06d}.npz")
        log.append({"time": 1000.5 + version, "event": "labeled", "row": version, "seconds": 2.0})
    log_text = "\n".join(json.dumps(e) for e in log) + "\n{\"time\": 10"  # a half-written last line
    (run / "server.log.jsonl").write_text(log_text)
    (run / "final").mkdir()
    fit_parameters(SPEC, train, Weights(5, 1, 1), method="ard", n_members=4).save(run / "final" / "params.npz")
    rng = np.random.default_rng(0)
    for name, flags in (("T800", {7, 20}), ("T1200", {3})):
        write_trace(run / "walkers" / name / "trace.csv", rng, 30, [1, 2, 3], flags, 1000.0, volume=20.0)
        (run / "walkers" / name / "tolerance.json").write_text(json.dumps({"f_tol": 0.3, "s_tol": None}))
    campaign = {"config": {"name": "test"}, "started": 1000.0, "finished": 1100.0, "status": "done",
                "walkers": [{"name": "T800", "temperature": 800, "pressure": None, "ranks": 1, "deck": "in.walker"},
                            {"name": "T1200", "temperature": 1200, "pressure": 0.0, "ranks": 2, "deck": "in.walker"}],
                "termination": {"quiet_steps": 500},
                "timings": {"wall": 100.0, "md": 80.0, "label": 6.0, "fit": 1.5, "final_fit": 0.4, "validation": 9.0},
                "final": {"params": "final/params.npz", "n_labels": 6, "n_reference_calls": 7,
                          "holdout_force_rmse": 0.1, "holdout_energy_rmse": 0.01}}
    (run / "campaign.json").write_text(json.dumps(campaign))
    (run / "validation.json").write_text(json.dumps({
        "a0": {"model": 5.44, "reference": 5.431, "rel_error": 0.0017, "unit": "A"},
        "C44": {"model": None, "reference": 56.4, "rel_error": None, "unit": "GPa", "error": "relaxation failed"},
        "rdf": {"r": [2.0, 2.5, 3.0], "model": [0.1, 2.0, 0.9], "reference": [0.0, 2.2, 0.8]}}))
    return run, holdout


def independent_rmse(path, holdout):
    """Energy per atom and force-component RMSE from the design blocks: E = E_prior + c_bar . B,
    F = F_prior + (-dB/dx) c_bar (no calculator involved)."""
    params = Parameters.load(path)
    de, df = [], []
    for a in holdout:
        b, f_cols, _, e_prior, f_prior, _ = configuration_blocks(params.spec, a)
        de.append((e_prior + b @ params.mean - a.get_potential_energy()) / len(a))
        df.append(f_prior + f_cols @ params.mean - a.get_forces())
    return float(np.sqrt(np.mean(np.square(de)))), float(np.sqrt(np.mean(np.square(df))))


def test_full_report(run_dir):
    run, holdout = run_dir
    report = build_report(run)
    out = run / "report"
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert names == {"learning_curve.png", "uncertainty_T800.png", "uncertainty_T1200.png", "tau.png", "volume.png",
                     "parity.png", "time_split.png", "rdf.png", "reliability.png"}
    page = (out / "index.html").read_text()
    for p in pngs:  # every PNG is in the one page, byte for byte
        assert base64.b64encode(p.read_bytes()).decode() in page, p.name
    assert "<img" in page and 'src="data:image/png;base64,' in page and "src=\"http" not in page
    # learning curve: configuration counts from refit events (v1, v2) and the file header (v3)
    points = {p["version"]: p for p in report.curve["points"]}
    assert [points[v]["n_configs"] for v in (1, 2, 3)] == [2, 4, 6]
    assert points[3]["n_configs_source"].startswith("parameter file")
    for v in (1, 2, 3):
        e, f = independent_rmse(run / "versions" / f"params_v{v:06d}.npz", holdout)
        assert points[v]["energy_rmse"] == pytest.approx(e, rel=1e-6, abs=1e-9)
        assert points[v]["force_rmse"] == pytest.approx(f, rel=1e-6)
    e, f = independent_rmse(run / "final" / "params.npz", holdout)
    assert report.parity["label"] == "final model"
    assert report.parity["force_rmse"] == pytest.approx(f, rel=1e-6)
    assert report.curve["final"]["energy_rmse"] == pytest.approx(e, rel=1e-6, abs=1e-9)
    # the reliability plot's numbers (pylal.fit.holdout) agree with the independent evaluation
    from pylal.report.plot_calibration import calibration_data

    cal = calibration_data(load_run(run))
    assert cal["errors"]["force_rmse"] == pytest.approx(f, rel=1e-6)
    assert cal["errors"]["energy_rmse"] == pytest.approx(e, rel=1e-6, abs=1e-9)
    assert all(len(b["predicted"]) == len(b["observed"]) > 0 for b in cal["bins"].values())
    # more data, better model on this set (the curve means something)
    assert points[3]["force_rmse"] < points[1]["force_rmse"]
    cached = json.loads((out / "learning_curve.json").read_text())
    assert len(cached["models"]) == 4
    # tables and notes
    assert "relaxation failed" in page and "+0.17 %" in page
    assert "1 malformed line" in page  # the half-written log line is reported, not fatal
    assert report.summary[0][:2] == ("status", "done")
    # re-running reads the cache: nothing is evaluated again, the numbers are the same
    again = learning_curve(load_run(run), out / "learning_curve.json")
    assert again["evaluated"] == 0 and again["cached"] == 4
    assert again["points"][0]["force_rmse"] == points[1]["force_rmse"]


def test_trace_timeline():
    """Version changes where the column changes; a restarted walker (step counter from 0 again in
    the same trace) is drawn after its previous segment, one check interval later."""
    trace = {"version": np.array([1, 1, 2, 2, 2, 4.0]), "step": np.array([0, 10, 20, 30, 40, 50.0])}
    assert version_changes(trace) == [(20.0, 2), (50.0, 4)]
    x, restarts = timeline({"step": np.array([0, 5, 10, 0, 5, 10, 2.0])})
    assert x.tolist() == [0, 5, 10, 15, 20, 25, 30] and restarts.tolist() == [3, 6]


def test_partial_run_says_what_is_missing(tmp_path):
    """A campaign that just started (or failed early): campaign.json and one trace only."""
    (tmp_path / "campaign.json").write_text(json.dumps({
        "started": 1000.0, "status": "running", "finished": None,
        "walkers": [{"name": "a", "temperature": 1000}, {"name": "b", "temperature": 1500}]}))
    write_trace(tmp_path / "walkers" / "a" / "trace.csv", np.random.default_rng(1), 12, [1, 1, 2], {5}, 1010.0)
    with open(tmp_path / "walkers" / "a" / "trace.csv", "a") as f:
        f.write("1022.0,120,2,0.01")  # the row the walker is writing right now
    report = build_report(tmp_path, tmp_path / "out", now=1100.0)
    assert sorted(p.name for p in report.figures) == ["tau.png", "time_split.png", "uncertainty_a.png"]
    page = html.unescape(report.index.read_text())
    for what in ("holdout.xyz: not found", "versions/: no parameter versions", "walkers/b/trace.csv: not found",
                 "walkers/a/tolerance.json: not found", "validation.json: not found", "campaign.json: no 'timings'",
                 "walkers/a/trace.csv: 1 malformed row(s) skipped", "no walker trace has volumes"):
        assert what in page, what
    assert dict((q, v) for q, v, _ in report.summary)["wall time"] == "100.0 s so far"
    assert "MD (trace spans)" in page  # time split from the trace (no timings in campaign.json)
