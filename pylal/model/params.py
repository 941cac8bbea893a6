"""The one parameter file: basis spec + posterior mean + committee, read by LAMMPS, ASE and the server.

Format `pylal-params/2`: an .npz holding arrays `mean` (D,), `committee` (K, D) and `header`, a JSON
string with the basis spec, species, cutoff, fit hyperparameters, noise precision lambda, version,
optionally `lammps_prior` (a physics prior as a LAMMPS pair style, pylal.prior: the coefficients
describe the residual to it), and a sha256 content hash over the arrays and the rest of the header.
A file without a prior has no `lammps_prior` key, so its hash is what it was before priors
existed. The basis dict carries its `kind`: "power" (pylal.model.basis.BasisSpec) or "ace"
(pylal.model.ace.AceSpec, ace-jax's ACE basis). A `pylal-params/1` file (power basis only, no kind)
is read as format 2 with kind "power"; its stored hash is checked against the v1 header it was
written with. Writes are atomic (temporary file + rename) so a reader never sees half a file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from pylal.files import atomic_write
from pylal.model.basis import BasisSpec
from pylal.model.registry import spec_from_dict
from pylal.prior.spec import LammpsPrior, PriorError

FORMAT = "pylal-params/2"
READABLE = ("pylal-params/1", FORMAT)  # v1: the power basis before the basis dict carried its kind


class ParameterFileError(ValueError):
    """A parameter file is missing, corrupt, of another format, or fails its hash check."""


@dataclasses.dataclass
class Parameters:
    spec: BasisSpec  # or pylal.model.ace.AceSpec: the same basis interface
    mean: np.ndarray  # posterior mean c_bar, (D,)
    committee: np.ndarray  # posterior samples c^k, (K, D)
    noise_precision: float  # lambda of HAL eq. 5 (precision of the weighted fit residuals)
    version: int = 0
    hyper: dict = dataclasses.field(default_factory=dict)  # fit settings and evidence hyperparameters
    lammps_prior: LammpsPrior | None = None  # E = E_prior + c . B (Shuaibi eq. 4); None: no LAMMPS prior

    def __post_init__(self):
        if isinstance(self.lammps_prior, dict):
            self.lammps_prior = LammpsPrior.from_dict(self.lammps_prior)
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.committee = np.atleast_2d(np.asarray(self.committee, dtype=np.float64))
        d = self.spec.size
        if self.mean.shape != (d,) or self.committee.shape[1] != d:
            raise ParameterFileError(
                f"coefficient shapes {self.mean.shape}, {self.committee.shape} do not match basis size {d}"
            )

    @property
    def n_members(self) -> int:
        return self.committee.shape[0]

    def _header(self) -> dict:
        header = {
            "format": FORMAT,
            "basis": self.spec.to_dict(),
            "species": list(self.spec.species),
            "r_cut": self.spec.r_cut,
            "noise_precision": float(self.noise_precision),
            "version": int(self.version),
            "n_members": self.n_members,
            "hyper": self.hyper,
        }
        if self.lammps_prior is not None:
            header["lammps_prior"] = self.lammps_prior.to_dict()
        return header

    @property
    def content_hash(self) -> str:
        return _hash(self._header(), self.mean, self.committee)

    def save(self, path) -> str:
        """Write atomically; returns the content hash."""
        path = Path(path)
        header = self._header()
        header["hash"] = _hash(header, self.mean, self.committee)
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean, committee=self.committee,
                 header=np.array(json.dumps(header, sort_keys=True)))
        atomic_write(path, buffer.getvalue())
        return header["hash"]

    @classmethod
    def load(cls, path) -> "Parameters":
        path = Path(path)
        if not path.is_file():
            raise ParameterFileError(f"parameter file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                mean, committee = z["mean"], z["committee"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise ParameterFileError(f"parameter file {path} is corrupt or not a pylal file: {e}") from e
        if header.get("format") not in READABLE:
            raise ParameterFileError(f"parameter file {path}: format {header.get('format')!r}, "
                                     f"this pylal reads {' and '.join(READABLE)}")
        stored = header.pop("hash", None)
        if stored != _hash(header, mean, committee):
            raise ParameterFileError(f"parameter file {path}: content hash mismatch (file damaged?)")
        try:
            prior = LammpsPrior.from_dict(header["lammps_prior"]) if "lammps_prior" in header else None
        except PriorError as err:
            raise ParameterFileError(f"parameter file {path}: bad lammps_prior: {err}") from err
        try:
            spec = spec_from_dict(header["basis"])
        except (TypeError, ValueError) as err:
            raise ParameterFileError(f"parameter file {path}: bad basis {header['basis']}: {err}") from err
        return cls(spec=spec, mean=mean, committee=committee,
                   noise_precision=header["noise_precision"], version=header["version"],
                   hyper=header.get("hyper", {}), lammps_prior=prior)


def _hash(header: dict, mean: np.ndarray, committee: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in header.items() if k != "hash"}, sort_keys=True).encode())
    h.update(np.ascontiguousarray(mean, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(committee, dtype=np.float64).tobytes())
    return h.hexdigest()
