"""Untuned new systems (issue 24, "Must show"): one campaign template, filled in per system, run as full campaigns.

The ONE template (`campaign_config`) takes only what defines a system: species, structure (ASE bulk kwargs +
repeat (+ a random `substitute` for an alloy), or a molecule), the model cutoff, the reference (a calculator and
its options) and a melting temperature T_m, from which the two walkers follow: a solid at SOLID_FRACTION x T_m
and a hot/liquid one at HOT_FRACTION x T_m. Everything else is what every system shares identically: the run
folder, the walker deck inputs/si/in.walker, `[termination] max_minutes = 20`, held-out temperatures = the
walkers'. No [fit], [hal], [refit], [final] or [validate] key: the basis grows from (n_max 4, l_max 3) with
chem_channels 2 within refit_budget 60 s, the label filter and the campaign-derived validation are the defaults.

SYSTEMS (none has a setting of its own):
  WBe         W-Be SNAP (Wood et al. PRB 2019, DFT-fitted, + ZBL), bcc W with 5 % Be, 54 atoms
  CdTe        CdTe Stillinger-Weber (Wang, Stroud, Markworth 1989), zincblende, 64 atoms
  NiAlH       Ni-Al-H EAM (Angelo, Moody, Baskes 1995, NiAlH_jea.eam.alloy), fcc Ni with 20 % Al, 5 % H, 32 atoms
  AlSiMgCuFe  five-species MEAM (Jelinek et al. PRB 2012, AlSiMgCuFe.meam + library.meam), fcc Al with 5 % each
              of Si, Mg, Cu, Fe, 32 atoms
  CH3NH2      methylamine with GFN2-xTB (tblite), one molecule in a periodic vacuum box (6 A each side)

A molecule and the campaign: `[initial] file` alone is not enough. The campaign's walkers start from, and its
held-out reference MD runs on, the `[initial] bulk` cell (default: diamond Si) whatever `[initial] file` says
(pylal/campaign/run.py: Campaign.bulk_cell in start_walkers and holdout). With existing keys the template
therefore gives a molecule `[[walkers]] structure` (the relaxed molecule) and a `[holdout] file` that this
script makes with the campaign's own held-out MD function (pylal.campaign.cells.reference_md, [holdout]
defaults, at the walkers' temperatures) before the campaign starts; the output says so for that row.

Full run (default): `pylal campaign` in a subprocess per system, one after another, with a timeout of
max_minutes + TIMEOUT_EXTRA minutes (final ARD fit <= 10 min, validation, report); a campaign that runs out of
it is interrupted (SIGINT: it kills its walkers and saves campaign.json), reported as not converged, and the
last lines of its console are printed. Results are parsed from the run folder (runs/new_systems/NAME/):
campaign.json (status, termination, reference calls, held-out RMSEs and rms z of the final potential, wall
time), server.log.jsonl ("refit" events: seconds; "basis_growth") and versions/ (the basis size D of each
published version). One row per system; benchmarks/results/new_systems.json (rows of earlier runs of other
systems are kept, so `--systems` runs add up); last line `untuned_systems_converged: <n> of <N>` (n: campaigns
that ended `converged`; `saturated` and the caps do not count).

--quick (about a minute, no campaign): per system, the config is built, its [initial] configurations are
labelled by the reference (Campaign.initial_data: 5 rattled cells) and the server's first refit is done
exactly as the server does it (pylal.server.refit.Refitter on spec_from_config([fit]), Refitter.refit: label
filter, fit, sanity checks, publish, growth decision); prints D, refit seconds, cross-validation force RMSE and
whether the reference and structure are sane (finite labels below [fit] max_label_force, no close contact, the
unrattled start cell near equilibrium); benchmarks/results/new_systems_quick.json; last line
`untuned_systems_refit_within_budget: <n> of <N>` (the refit published and took <= [fit] refit_budget).

Command: .venv/bin/python benchmarks/new_systems.py [--quick] [--systems CdTe,WBe] [--timeout-extra MIN]
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

for _name, _value in (("OMP_NUM_THREADS", "1"), ("OPENBLAS_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"),
                      ("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")):
    os.environ.setdefault(_name, _value)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from prior_campaign import to_toml  # noqa: E402  (the benchmarks' small TOML writer)

RUNS = Path(ROOT) / "runs" / "new_systems"
RESULTS = Path(ROOT) / "benchmarks" / "results"
DECK = Path(ROOT) / "inputs" / "si" / "in.walker"
PYLAL = Path(sys.executable).parent / "pylal"

# what every system shares (the template's only fixed keys)
SOLID_FRACTION = 0.6  # solid walker at 0.6 T_m
HOT_FRACTION = 1.5  # hot/liquid walker at 1.5 T_m (the Si demo: 1200 / 2500 K with SW T_m ~ 1700 K)
MAX_MINUTES = 20.0  # [termination] max_minutes
TIMEOUT_EXTRA = 15.0  # minutes after max_minutes before the subprocess is interrupted (final fit, validation, report)
MOLECULE_VACUUM = 6.0  # A of vacuum on each side of a molecule in its periodic box

LAMMPS = "lammps"
SYSTEMS = {
    "WBe": dict(
        species=["W", "Be"], cutoff=5.0, t_melt=3695.0,  # T_m of W
        structure=dict(bulk=dict(name="W", crystalstructure="bcc", a=3.165, cubic=True), repeat=[3, 3, 3],
                       substitute={"Be": 0.05}),
        reference=dict(calculator=LAMMPS, options=dict(
            pair_style="hybrid/overlay zbl 4.0 4.8 snap",  # as WBe_Wood_PRB2019.snap
            pair_coeff=["1 1 zbl 74 74", "1 2 zbl 74 4", "2 2 zbl 4 4",
                        "* * snap {potdir}/WBe_Wood_PRB2019.snapcoeff {potdir}/WBe_Wood_PRB2019.snapparam W Be"],
            species=["W", "Be"]))),
    "CdTe": dict(
        species=["Cd", "Te"], cutoff=5.0, t_melt=1365.0,
        structure=dict(bulk=dict(name="CdTe", crystalstructure="zincblende", a=6.48, cubic=True), repeat=[2, 2, 2]),
        reference=dict(calculator=LAMMPS, options=dict(pair_style="sw", pair_coeff=["* * {potdir}/CdTe.sw Cd Te"],
                                                       species=["Cd", "Te"]))),
    "NiAlH": dict(
        species=["Ni", "Al", "H"], cutoff=5.5, t_melt=1728.0,  # T_m of Ni
        structure=dict(bulk=dict(name="Ni", crystalstructure="fcc", a=3.52, cubic=True), repeat=[2, 2, 2],
                       substitute={"Al": 0.2, "H": 0.05}),
        reference=dict(calculator=LAMMPS, options=dict(
            pair_style="eam/alloy", pair_coeff=["* * {potdir}/NiAlH_jea.eam.alloy Ni Al H"],
            species=["Ni", "Al", "H"]))),
    "AlSiMgCuFe": dict(
        species=["Al", "Si", "Mg", "Cu", "Fe"], cutoff=5.0, t_melt=933.0,  # T_m of Al
        structure=dict(bulk=dict(name="Al", crystalstructure="fcc", a=4.05, cubic=True), repeat=[2, 2, 2],
                       substitute={"Si": 0.05, "Mg": 0.05, "Cu": 0.05, "Fe": 0.05}),
        reference=dict(calculator=LAMMPS, options=dict(
            pair_style="meam",
            pair_coeff=["* * {potdir}/library.meam Al Si Mg Cu Fe {potdir}/AlSiMgCuFe.meam Al Si Mg Cu Fe"],
            species=["Al", "Si", "Mg", "Cu", "Fe"]))),
    "CH3NH2": dict(
        species=["C", "N", "H"], cutoff=5.0, t_melt=800.0,  # no melting point: a nominal scale, 480 / 1200 K
        structure=dict(molecule="H3CNH2"),  # ase.build.molecule name
        reference=dict(calculator="tblite", options=dict(method="GFN2-xTB"))),
}


# ---- the template -----------------------------------------------------------------------------------------
def walker_temperatures(t_melt: float) -> tuple[float, float]:
    return round(SOLID_FRACTION * t_melt), round(HOT_FRACTION * t_melt)


def campaign_config(name: str, species: list, structure: dict, cutoff: float, reference: dict, t_melt: float,
                    molecule_files: dict | None = None) -> dict:
    """The campaign TOML (as a dict) of one system: these arguments and the shared keys, nothing else.
    structure: {bulk: ase.build.bulk kwargs, repeat: [...], substitute: {...}} or {molecule: NAME}; a molecule
    needs molecule_files = {initial, start, holdout} (made by molecule_inputs: a campaign has no key that
    starts walkers and held-out MD from [initial] file, see the module docstring)."""
    t_solid, t_hot = walker_temperatures(t_melt)
    raw = {
        "run_dir": name,
        "reference": {"calculator": reference["calculator"], "options": dict(reference.get("options", {}))},
        "fit": {"species": list(species), "r_cut": float(cutoff)},
        "initial": {},
        "walkers": [dict(name=f"solid{t_solid}", deck=str(DECK), temperature=float(t_solid)),
                    dict(name=f"hot{t_hot}", deck=str(DECK), temperature=float(t_hot), seed=2)],
        "termination": {"max_minutes": MAX_MINUTES},
        "holdout": {"temperatures": [float(t_solid), float(t_hot)]},
    }
    if "molecule" in structure:
        if molecule_files is None:
            raise ValueError(f"{name}: a molecule needs its files (molecule_inputs)")
        raw["initial"]["file"] = str(molecule_files["initial"])
        for w in raw["walkers"]:
            w["structure"] = str(molecule_files["start"])
        if molecule_files.get("holdout"):
            raw["holdout"]["file"] = str(molecule_files["holdout"])
    else:
        raw["initial"]["bulk"] = dict(structure["bulk"])
        raw["initial"]["repeat"] = list(structure.get("repeat", [2, 2, 2]))
        if structure.get("substitute"):
            raw["initial"]["substitute"] = dict(structure["substitute"])
    return raw


def system_config(name: str, folder: Path, holdout: bool = True) -> dict:
    s = SYSTEMS[name]
    files = molecule_inputs(name, folder, holdout=holdout) if "molecule" in s["structure"] else None
    return campaign_config(name, s["species"], s["structure"], s["cutoff"], s["reference"], s["t_melt"], files)


def molecule_inputs(name: str, folder: Path, holdout: bool = True) -> dict:
    """A molecule's files: the GFN2-xTB-relaxed molecule centred in a periodic vacuum box (the walkers' start),
    [initial] n_configs rattled copies of it as [initial] n_configs/rattle/seed would make of a bulk cell, and
    (holdout) the held-out set by the campaign's own reference MD (reference_md, [holdout] defaults) at the
    walkers' temperatures, as the campaign would run it on a bulk cell."""
    from ase.build import molecule
    from ase.io import read, write
    from ase.optimize import BFGS

    from pylal.campaign.cells import reference_md
    from pylal.campaign.config import HoldoutConfig, InitialConfig
    from pylal.reference import make_calculator

    s = SYSTEMS[name]
    folder.mkdir(parents=True, exist_ok=True)
    out = dict(start=folder / "start.xyz", initial=folder / "initial_configs.xyz",
               holdout=folder / "holdout_reference_md.xyz" if holdout else None)
    calc = make_calculator(s["reference"]["calculator"], **s["reference"].get("options", {}))
    if not out["start"].exists():
        atoms = molecule(s["structure"]["molecule"])
        atoms.calc = calc
        BFGS(atoms, logfile=None).run(fmax=0.01, steps=200)
        atoms.calc = None
        atoms.center(vacuum=MOLECULE_VACUUM)
        atoms.pbc = True  # LAMMPS walkers run it with periodic boundaries: labels see the same box
        write(out["start"], atoms)
    start = read(out["start"])
    if not out["initial"].exists():
        init = InitialConfig()
        configs = []
        for i in range(init.n_configs):
            atoms = start.copy()
            atoms.rattle(init.rattle, seed=init.seed + i)
            configs.append(atoms)
        write(out["initial"], configs)
    if holdout and not out["holdout"].exists():
        h = HoldoutConfig()
        frames = []
        for k, t in enumerate(walker_temperatures(s["t_melt"])):
            try:
                run = reference_md(start, calc, float(t), h.n_configs, stride=h.stride, seed=h.seed + k,
                                   equilibrate=h.equilibrate, pressure=h.pressure)
            except Exception as err:
                raise RuntimeError(f"held-out reference MD at {t:g} K ([holdout] defaults: 2 fs, "
                                   f"{h.equilibrate} + {h.n_configs} x {h.stride} steps) failed: {err}") from err
            for atoms in run:
                atoms.info["holdout_temperature"] = float(t)
                frames.append(atoms)
        write(out["holdout"], frames)
    return out


# ---- --quick: labels and the server's first refit -----------------------------------------------------------
def quick_system(name: str) -> dict:
    from pylal.campaign.config import CampaignConfig
    from pylal.campaign.run import Campaign
    from pylal.fit.checks import label_problem
    from pylal.fit.growth import cv_force_rmse
    from pylal.model.params import Parameters
    from pylal.server.refit import Refitter, spec_from_config
    from pylal.server.store import Store
    from pylal.server.versions import VersionStore

    folder = RUNS.parent / "new_systems_quick"
    run = folder / name
    shutil.rmtree(run, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    raw = system_config(name, folder / f"{name}_inputs", holdout=False)
    (folder / f"{name}.toml").write_text(to_toml(raw))
    cfg = CampaignConfig.from_dict(raw, base=folder, run_dir=run, name=name)
    fit = cfg.server.fit
    t0 = time.perf_counter()
    campaign = Campaign(cfg, log=lambda *a, **k: None)
    labelled = campaign.initial_data()
    t_label = time.perf_counter() - t0
    problems = [p for p in (label_problem(a, fit.max_label_force, fit.min_contact) for a in labelled) if p]
    f_max = max(float(np.linalg.norm(a.get_forces(), axis=1).max()) for a in labelled)
    # the unrattled start cell (the walkers' start): near equilibrium?
    if cfg.initial.file:
        from ase.io import read
        start = read(cfg.walkers[0].structure)
    else:
        start = campaign.bulk_cell(cfg.initial.seed)
    start.calc = campaign.reference_calculator()
    start_f = float(np.linalg.norm(start.get_forces(), axis=1).max())
    start_e = float(start.get_potential_energy() / len(start))
    pressure = float(-np.mean(start.get_stress()[:3]) * 160.2177) if start.pbc.all() else None  # GPa
    sane = bool(not problems and np.isfinite(f_max) and f_max < fit.max_label_force and np.isfinite(start_e))
    # the basis the campaign derives (r_min from the structure when unset), then the server's first refit, as
    # Server._refit_loop does it at start
    if hasattr(campaign, "choose_basis"):
        campaign.choose_basis()
    refitter = Refitter(spec_from_config(fit), fit, Store(run / "store.db"), VersionStore(run), labelled)
    t1 = time.perf_counter()
    pointer = refitter.refit()
    seconds = time.perf_counter() - t1
    rejected = pointer.get("rejected")
    params = Parameters.load(pointer["file"]) if rejected else Parameters.load(refitter.versions.current_npz)
    within = bool(not rejected and seconds <= refitter.budget)
    row = dict(system=name, atoms=len(start), formula=start.get_chemical_formula(), species=len(fit.species),
               n_configs=len(labelled), label_seconds=round(t_label, 2), label_max_force=round(f_max, 3),
               label_problems=problems, start_max_force=round(start_f, 4), start_energy_per_atom=round(start_e, 4),
               start_pressure_gpa=None if pressure is None else round(pressure, 2), sane=sane,
               D=refitter.spec.size, basis=f"n_max {refitter.spec.n_max}, l_max {refitter.spec.l_max}", r_min=refitter.spec.r_min,
               refit_seconds=round(seconds, 2), fit_seconds=round(float(params.hyper.get("seconds", seconds)), 2),
               cv_force_rmse=round(cv_force_rmse(params), 4),
               cv_energy_rmse=params.hyper.get("calibration", {}).get("energies", {}).get("rmse"),
               rejected=rejected, within_budget=within, budget=refitter.budget,
               growth=pointer.get("growth"),
               # a fit whose cross-validation force error exceeds the prior's is shrunk toward the prior (factor s)
               shrink=params.hyper.get("shrink"),
               molecule_note=MOLECULE_NOTE if cfg.initial.file else None)
    return row


MOLECULE_NOTE = ("a campaign cannot run a molecule from [initial] file alone: walkers and held-out MD use "
                 "[initial] bulk; the template adds [[walkers]] structure and a [holdout] file made by "
                 "reference_md before the campaign")


def run_quick(names: list) -> list:
    rows = []
    print("| system | atoms | species | labels: max |F| (eV/A) | start cell: max |F|, P (GPa) | sane | D | refit (s) "
          "| CV force RMSE (eV/A) | shrunk to prior: s (CV RMSE before) | published |\n|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in names:
        try:
            r = quick_system(name)
        except Exception as err:  # one system's failure must not hide the others
            r = dict(system=name, error=f"{type(err).__name__}: {err}", within_budget=False, sane=False)
            print(f"| {name} | failed: {r['error']} |", flush=True)
            rows.append(r)
            continue
        p = "-" if r["start_pressure_gpa"] is None else f"{r['start_pressure_gpa']:.2f}"
        print(f"| {name} | {r['atoms']} {r['formula']} | {r['species']} | {r['label_max_force']:.2f} | "
              f"{r['start_max_force']:.3f}, {p} | {'yes' if r['sane'] else 'NO: ' + '; '.join(r['label_problems'])} | "
              f"{r['D']} ({r['basis']}, r_min {r['r_min']:g}) | {r['refit_seconds']:.1f} | {r['cv_force_rmse']:.4f} | "
              f"{'no' if not r['shrink'] else format(r['shrink']['factor'], '.2g') + ' (' + format(r['shrink']['cv_force_rmse'], '.3g') + ')'} | "
              f"{'no: ' + '; '.join(r['rejected']) if r['rejected'] else 'yes'} |", flush=True)
        if r.get("molecule_note"):
            print(f"  {name}: {r['molecule_note']}", flush=True)
        rows.append(r)
    return rows


# ---- full campaigns -----------------------------------------------------------------------------------------
def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def run_campaign(name: str, timeout_extra: float) -> dict:
    folder = RUNS
    run = folder / name
    shutil.rmtree(run, ignore_errors=True)  # a fresh run folder: nothing reused from an earlier campaign
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        raw = system_config(name, folder / f"{name}_inputs")
    except Exception as err:  # e.g. a molecule's held-out reference MD: the campaign never starts
        why = f"preparation failed: {type(err).__name__}: {err}"
        print(f"{name}: not run: {why}", flush=True)
        return dict(system=name, converged=False, status="not run", reason=why, error=why,
                    wall_seconds=round(time.time() - t0, 1), preparation_seconds=round(time.time() - t0, 1),
                    molecule_note=MOLECULE_NOTE if "molecule" in SYSTEMS[name]["structure"] else None)
    prep = time.time() - t0
    config = folder / f"{name}.toml"
    config.write_text(to_toml(raw))
    console = folder / f"{name}.console.txt"
    timeout = 60 * (MAX_MINUTES + timeout_extra)
    print(f"\n== {name}: {PYLAL.name} campaign {config.relative_to(ROOT)} (timeout {timeout / 60:.0f} min)", flush=True)
    t1 = time.time()
    timed_out = False
    with open(console, "w") as out:
        proc = subprocess.Popen([str(PYLAL), "campaign", str(config)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kids = descendants(proc.pid)  # walkers run in sessions of their own: found now, killed below
            proc.send_signal(signal.SIGINT)  # KeyboardInterrupt: the campaign kills its walkers, saves campaign.json
            try:
                code = proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
            for pid in kids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    wall = time.time() - t1
    row = parse_run(name, run)
    row.update(exit_code=code, timed_out=timed_out, wall_seconds=round(wall, 1), preparation_seconds=round(prep, 1))
    if "molecule" in SYSTEMS[name]["structure"]:
        row["molecule_note"] = MOLECULE_NOTE
    lines = console.read_text(errors="replace").splitlines()
    row["console_tail"] = lines[-15:]
    if not row["converged"]:
        print(f"{name}: not converged ({'timed out after ' + str(round(wall)) + ' s; ' if timed_out else ''}"
              f"status {row.get('status')}, reason {row.get('reason')}); last lines of {console.relative_to(ROOT)}:")
        for line in lines[-15:]:
            print("   " + line[:300])
    return row


def parse_run(name: str, run: Path) -> dict:
    """Results of a campaign from its run folder."""
    from pylal.model.params import Parameters

    row = dict(system=name, run_dir=str(run.relative_to(ROOT)), converged=False)
    try:
        rec = json.loads((run / "campaign.json").read_text())
    except (OSError, ValueError) as err:
        row["error"] = f"no campaign.json: {err}"
        return row
    term, fin, tim = rec.get("termination", {}), rec.get("final", {}), rec.get("timings", {})
    row.update(status=rec.get("status"), reason=term.get("reason"), error=rec.get("error"),
               converged=term.get("reason") == "converged",
               reference_calls=fin.get("n_reference_calls"), labels=fin.get("n_labels"),
               initial_calls=fin.get("initial_reference_calls"), versions=fin.get("versions"),
               final_method=fin.get("method"),
               holdout_force_rmse=fin.get("holdout_force_rmse"), holdout_energy_rmse=fin.get("holdout_energy_rmse"),
               rms_z=fin.get("holdout_force_rms_z"),
               campaign_minutes=round((term["at"] - rec["started"]) / 60, 2) if term.get("at") else None,
               campaign_wall_seconds=tim.get("wall"), timings={k: round(v, 1) for k, v in tim.items()
                                                                if isinstance(v, (int, float))},
               warnings=rec.get("warnings", []))
    refits, growth, filtered, rejected, over = [], [], 0, 0, []
    last_holdout, last_version, labelled, failed, n_initial = None, None, 0, 0, 0
    try:
        for line in (run / "server.log.jsonl").read_text().splitlines():
            e = json.loads(line)
            kind = e.get("event")
            if kind == "refit":
                refits.append(e.get("seconds", 0.0))
                if e.get("holdout"):
                    last_holdout, last_version = e["holdout"], e.get("version")
            elif kind == "labeled":
                labelled += 1
            elif kind == "label_failed":
                failed += 1
            elif kind == "start" and e.get("initial_configs") is not None:
                n_initial = e["initial_configs"]
            elif kind == "basis_growth":
                growth.append(dict(version=e.get("version"), tried=e.get("tried"), accepted=e.get("accepted"),
                                   cv_force_rmse=e.get("cv_force_rmse"), seconds=e.get("seconds")))
            elif kind == "filtered":
                filtered += 1
            elif kind == "refit_rejected":
                rejected += 1
            elif kind == "refit_over_budget":
                over.append(e.get("message"))
    except (OSError, ValueError):
        pass
    if row.get("holdout_force_rmse") is None and last_holdout:  # no final fit (the campaign failed in it)
        row.update(holdout_force_rmse=last_holdout.get("force_rmse"), holdout_energy_rmse=last_holdout.get(
            "energy_rmse"), rms_z=last_holdout.get("force_rms_z"), final_method=f"none: newest BRR version v{last_version}")
    if row.get("reference_calls") is None:
        row.update(labels=labelled, reference_calls=(row.get("initial_calls") or n_initial) + labelled + failed)
    sizes = []
    for p in sorted((run / "versions").glob("params_v*.npz")):
        try:
            sizes.append(Parameters.load(p).spec.size)
        except Exception:
            pass
    row.update(refits=len(refits), max_refit_seconds=round(max(refits), 2) if refits else None,
               max_D=max(sizes) if sizes else None, first_D=sizes[0] if sizes else None, growth=growth,
               filtered_labels=filtered, rejected_refits=rejected, over_budget=over)
    try:
        v = json.loads((run / "validation.json").read_text())
        row["validation"] = v if len(json.dumps(v)) < 4000 else "RUN/validation.json"
    except (OSError, ValueError):
        pass
    return row


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def print_full_table(rows: list):
    print("\n| system | converged (reason) | reference calls | held-out F RMSE (eV/A) | E RMSE (eV/atom) | rms z "
          "| max refit (s) | max D | campaign (min) | wall (min) |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("status") == "not run":
            print(f"| {r['system']} | no ({r['reason'][:90]}) | | | | | | | | {r['wall_seconds'] / 60:.1f} |")
            continue
        if "status" not in r:
            print(f"| {r['system']} | no ({r.get('error')}) | | | | | | | | |")
            continue
        print(f"| {r['system']} | {'yes' if r['converged'] else 'no'} ({r.get('reason') or r.get('status')}{'; campaign failed: ' + str(r.get('error'))[:60] if r.get('status') == 'failed' else ''}"
              f"{', timed out' if r.get('timed_out') else ''}) | {fmt(r.get('reference_calls'), 'd')} | "
              f"{fmt(r.get('holdout_force_rmse'), '.4f')} | {fmt(r.get('holdout_energy_rmse'), '.4f')} | "
              f"{fmt(r.get('rms_z'), '.2f')} | {fmt(r.get('max_refit_seconds'), '.1f')} | {fmt(r.get('max_D'), 'd')} | "
              f"{fmt(r.get('campaign_minutes'), '.1f')} | {r['wall_seconds'] / 60:.1f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="no campaigns: label the initial set, one server refit")
    ap.add_argument("--systems", default="", help=f"comma-separated subset of {','.join(SYSTEMS)}")
    ap.add_argument("--timeout-extra", type=float, default=TIMEOUT_EXTRA,
                    help="minutes after [termination] max_minutes before a campaign is interrupted")
    ap.add_argument("--reparse", action="store_true", help="no campaigns: parse the run folders of --systems again")
    args = ap.parse_args()
    names = [n.strip() for n in args.systems.split(",") if n.strip()] or list(SYSTEMS)
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        ap.error(f"unknown system(s) {unknown}; valid: {list(SYSTEMS)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.quick:
        t0 = time.time()
        rows = run_quick(names)
        n = sum(bool(r.get("within_budget")) for r in rows)
        (RESULTS / "new_systems_quick.json").write_text(json.dumps(dict(
            command="python benchmarks/new_systems.py --quick" + (f" --systems {args.systems}" if args.systems else ""),
            seconds=round(time.time() - t0, 1), systems=rows), indent=2, default=str))
        print(f"quick: {time.time() - t0:.0f} s")
        print(f"untuned_systems_refit_within_budget: {n} of {len(rows)}")
        return 0
    path = RESULTS / "new_systems.json"
    try:
        kept = {r["system"]: r for r in json.loads(path.read_text()).get("systems", [])}
    except (OSError, ValueError):
        kept = {}
    rows = []
    for name in names:
        if args.reparse:  # the run folder again (keeps the subprocess's exit code, timeout and console tail)
            row = {**kept.get(name, {}), **parse_run(name, RUNS / name)}
        else:
            row = run_campaign(name, args.timeout_extra)
        rows.append(row)
        kept[name] = row
        print_full_table([row])
        path.write_text(json.dumps(dict(shared=dict(solid=SOLID_FRACTION, hot=HOT_FRACTION, max_minutes=MAX_MINUTES,
                                                    deck=str(DECK.relative_to(ROOT))),
                                        systems=[kept[n] for n in SYSTEMS if n in kept]), indent=2, default=str))
    all_rows = [kept[n] for n in SYSTEMS if n in kept]
    print_full_table(all_rows)
    missing = [n for n in SYSTEMS if n not in kept]
    if missing:
        print(f"not run yet: {', '.join(missing)}")
    n = sum(bool(r.get("converged")) for r in all_rows)
    print(f"untuned_systems_converged: {n} of {len(all_rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
