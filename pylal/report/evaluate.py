"""Held-out errors of every parameter version (learning curve) and of the final model (parity).

Each model is the committee mean (tau = 0, HAL eq. 1 without bias) through one
`pylal.calculator.PylalCalculator` whose parameters are swapped with `set_parameters`; f_i is
never computed (check_every = 0). Errors against the reference labels of holdout.xyz:
    energy RMSE  sqrt(mean_R ((E_model(R) - E_ref(R)) / N_R)^2)          eV/atom
    force RMSE   sqrt(mean over all atoms and Cartesian components of (F_model - F_ref)^2)   eV/A
Results are cached in `learning_curve.json` (in the report folder) per version file, keyed by the
file's content hash and the sha256 of holdout.xyz, so re-running the report evaluates only new
versions.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pylal.files import atomic_write
from pylal.model.params import ParameterFileError, Parameters

CACHE_FORMAT = "pylal-report-learning-curve/1"


def reference_values(holdout) -> tuple[np.ndarray, list]:
    """Reference energy per atom (NaN where a configuration has no energy) and forces per configuration."""
    energies, forces = [], []
    for a in holdout:
        res = a.calc.results
        energies.append(float(res["energy"]) / len(a) if "energy" in res else np.nan)
        forces.append(np.asarray(res["forces"], dtype=float))
    return np.array(energies), forces


def predict(calc, holdout) -> tuple[np.ndarray, list]:
    """Model energy per atom and forces on every held-out configuration (calc at tau = 0)."""
    energies, forces = [], []
    for ref in holdout:
        a = ref.copy()
        a.calc = calc
        energies.append(a.get_potential_energy() / len(a))
        forces.append(np.array(a.get_forces()))
    return np.array(energies), forces


def rmse(pred_e, pred_f, ref_e, ref_f) -> dict:
    has_e = np.isfinite(ref_e)
    de = pred_e[has_e] - ref_e[has_e]
    df = np.concatenate([(p - r).reshape(-1) for p, r in zip(pred_f, ref_f)])
    return {"energy_rmse": float(np.sqrt(np.mean(de**2))) if has_e.any() else None,
            "force_rmse": float(np.sqrt(np.mean(df**2)))}


class Evaluator:
    """One calculator for all models; `set_parameters` between them."""

    def __init__(self, holdout):
        self.holdout = holdout
        self.ref_e, self.ref_f = reference_values(holdout)
        self.calc = None

    def predictions(self, params: Parameters):
        from pylal.calculator import PylalCalculator

        if self.calc is None:
            self.calc = PylalCalculator(params, tau=0.0, check_every=0)
        else:
            self.calc.set_parameters(params)
        return predict(self.calc, self.holdout)

    def errors(self, params: Parameters) -> dict:
        return rmse(*self.predictions(params), self.ref_e, self.ref_f)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _load_cache(path: Path, holdout_hash: str) -> dict:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if cache.get("format") != CACHE_FORMAT or cache.get("holdout_sha256") != holdout_hash:
        return {}  # another holdout set: every number is stale
    return {(e["file"], e["hash"]): e for e in cache.get("models", []) if "file" in e and "hash" in e}


def _entry(evaluator, path: Path, label, cached: dict, notes: list, counter: list):
    try:
        params = Parameters.load(path)
    except ParameterFileError as e:
        notes.append(f"{path.name}: {e} (not evaluated)")
        return None
    key = (path.name, params.content_hash)
    if key in cached:
        return cached[key]
    try:
        errors = evaluator.errors(params)
    except Exception as e:  # noqa: BLE001  (e.g. a species of holdout.xyz the model does not know)
        notes.append(f"{path.name}: evaluation on holdout.xyz failed ({type(e).__name__}: {e})")
        return None
    counter[0] += 1
    n_configs = params.hyper.get("n_configs")
    return {"file": path.name, "hash": params.content_hash, "label": label, "version": params.version,
            "hyper_n_configs": n_configs if isinstance(n_configs, int) else None, **errors}


def learning_curve(run, cache_path: Path, evaluator: Evaluator | None = None) -> dict:
    """{"points": [{version, n_configs, n_configs_source, energy_rmse, force_rmse, ...}],
    "final": {...} or None, "evaluated": models evaluated now, "cached": taken from the cache,
    "notes": [...]}. Needs run.holdout (else empty)."""
    out = {"points": [], "final": None, "evaluated": 0, "cached": 0, "notes": []}
    if run.holdout is None or (not run.versions and run.final_params is None):
        return out
    holdout_hash = file_sha256(run.holdout_path)
    cached = _load_cache(cache_path, holdout_hash)
    evaluator = evaluator or Evaluator(run.holdout)
    counter = [0]
    refit_configs = run.refit_configs()
    models = []
    for version, path in run.versions.items():
        e = _entry(evaluator, path, f"v{version}", cached, out["notes"], counter)
        if e is None:
            continue
        models.append(e)
        point = dict(e, version=version)
        if version in refit_configs:
            point.update(n_configs=refit_configs[version], n_configs_source="server.log.jsonl refit event")
        elif e.get("hyper_n_configs") is not None:
            point.update(n_configs=e["hyper_n_configs"], n_configs_source="parameter file hyper.n_configs")
        else:
            point.update(n_configs=None, n_configs_source=None)
            out["notes"].append(f"version {version}: number of configurations unknown (no refit event, no "
                                f"n_configs in the file): not on the learning curve")
        out["points"].append(point)
    if run.final_params is not None:
        e = _entry(evaluator, run.final_params, "final", cached, out["notes"], counter)
        if e is not None:
            models.append(e)
            out["final"] = dict(e, **_final_configs(run, e))
    out["evaluated"] = counter[0]
    out["cached"] = len(models) - counter[0]
    cache = {"format": CACHE_FORMAT, "holdout_sha256": holdout_hash, "n_holdout": len(run.holdout),
             "units": {"energy_rmse": "eV/atom", "force_rmse": "eV/A"}, "models": models,
             "points": out["points"], "final": out["final"]}
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cache_path, json.dumps(cache, indent=1).encode())
    return out


def _final_configs(run, entry: dict) -> dict:
    if entry.get("hyper_n_configs") is not None:
        return {"n_configs": entry["hyper_n_configs"], "n_configs_source": "parameter file hyper.n_configs"}
    dataset = run.final_params.parent / "dataset.xyz"
    if dataset.is_file():
        from ase.io import read

        try:
            return {"n_configs": len(read(dataset, index=":")), "n_configs_source": "final/dataset.xyz"}
        except Exception:  # noqa: BLE001
            pass
    n = ((run.campaign or {}).get("final") or {}).get("n_labels")
    if isinstance(n, int):
        return {"n_configs": n, "n_configs_source": "campaign.json final.n_labels"}
    return {"n_configs": None, "n_configs_source": None}


def parity_data(run, evaluator: Evaluator | None = None) -> dict | None:
    """Model against reference on holdout.xyz for the final model, else the newest version."""
    if run.holdout is None:
        return None
    candidates = ([("final model", run.final_params)] if run.final_params is not None else []) + \
        [(f"version {v}", p) for v, p in reversed(list(run.versions.items()))]
    for label, path in candidates:
        try:
            params = Parameters.load(path)
        except ParameterFileError:
            continue
        evaluator = evaluator or Evaluator(run.holdout)
        try:
            pred_e, pred_f = evaluator.predictions(params)
        except Exception:  # noqa: BLE001  (reported by the learning curve already)
            continue
        return {"label": label, "file": _relative(path, run.run_dir), "pred_e": pred_e, "ref_e": evaluator.ref_e,
                "pred_f": np.concatenate([f.reshape(-1) for f in pred_f]),
                "ref_f": np.concatenate([f.reshape(-1) for f in evaluator.ref_f]),
                **rmse(pred_e, pred_f, evaluator.ref_e, evaluator.ref_f)}
    return None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
