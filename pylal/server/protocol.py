"""Wire protocol: msgpack maps (no pickle), a schema per message type, clear error replies.

Every message is two ZeroMQ frames [payload, mac] (auth.py). The payload is a msgpack map with
`type` (str), `ts` (sender's time.time()) and optionally `rid` (request id, echoed in the reply).

Requests (client -> server) and their replies:
  hello   {walker, run_id?}                    -> welcome {server, version, species, max_message_bytes}
  flag    {walker, id?, config, prov}          -> ack {key, status: "queued"|"duplicate"}
  poll    {walker, version}                    -> params {version, hash, data: npz bytes} | none {version, filtered}
  status  {}                                   -> status {...counts, versions, walkers, errors}
Any request may get instead:                      error {code, message, re: request type or None}

A configuration (`config`) is: numbers (int32 little-endian bytes, N), positions (float64 LE bytes,
N x 3, Angstrom), cell (float64 LE bytes, 3 x 3 rows), pbc (3 bools). Binary arrays keep a 64-atom
flag near 2 KB and avoid float-to-text round trips. Provenance (`prov`) holds scalars: run_id, walker,
n_ranks, step, sigma, f_max, softmax, tau, params_version, params_hash, seed, plus free extra keys;
one list: `core`, the indices of a carved cell's core atoms (only their forces are labels).
"""
from __future__ import annotations

import math
import time

import msgpack
import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

PROTOCOL = "pylal-server/1"

# error codes
UNAUTHENTICATED = "unauthenticated"
TOO_LARGE = "too_large"
MALFORMED = "malformed"
UNKNOWN_TYPE = "unknown_type"
MISSING_FIELD = "missing_field"
BAD_FIELD = "bad_field"
BAD_CONFIG = "bad_config"
STALE = "stale"
INTERNAL = "internal"


class ProtocolError(ValueError):
    def __init__(self, code: str, message: str, re: str | None = None):
        super().__init__(message)
        self.code, self.message, self.re = code, message, re
        self.rid = None  # the refused request's id, when it could be read: the client matches the error to it


# ---- schema ---------------------------------------------------------------------------------
_STR, _INT, _NUM, _BYTES, _MAP, _LIST = (str,), (int,), (int, float), (bytes,), (dict,), (list,)
_COMMON = {"type": (_STR, True), "ts": (_NUM, True), "rid": ((int, str), False)}
SCHEMA = {
    "hello": {"walker": (_STR, True), "run_id": (_STR, False)},
    "flag": {"walker": (_STR, True), "id": (_STR, False), "config": (_MAP, True), "prov": (_MAP, True)},
    "poll": {"walker": (_STR, True), "version": (_INT, True)},
    "status": {"walker": (_STR, False)},
}
CONFIG_FIELDS = {"numbers": _BYTES, "positions": _BYTES, "cell": _BYTES, "pbc": _LIST}
PROV_TYPES = {"run_id": _STR, "walker": _STR, "n_ranks": _INT, "step": _INT, "sigma": _NUM, "f_max": _NUM,
              "softmax": _NUM, "tau": _NUM, "params_version": _INT, "params_hash": _STR, "seed": _INT,
              "core": _LIST}  # core: indices of the atoms whose forces are labels (a carved cell)
MAX_PROV_KEYS, MAX_STR = 32, 256


def _type_name(types) -> str:
    return "/".join(sorted({"number" if t in (int, float) and len(types) > 1 else t.__name__ for t in types}))


def _check_field(msg: dict, name: str, types, required: bool, re):
    if name not in msg:
        if required:
            raise ProtocolError(MISSING_FIELD, f"{re or 'message'}: missing field {name!r}", re)
        return
    value = msg[name]
    # bool is an int subclass in Python: never accept it where a number is expected
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        raise ProtocolError(BAD_FIELD, f"{re or 'message'}: field {name!r} must be {_type_name(types)}, "
                                       f"got {type(value).__name__}", re)
    if isinstance(value, str) and len(value) > MAX_STR:
        raise ProtocolError(BAD_FIELD, f"{re}: field {name!r} longer than {MAX_STR} characters", re)
    if isinstance(value, float) and not math.isfinite(value):
        raise ProtocolError(BAD_FIELD, f"{re}: field {name!r} is not finite", re)


def decode(payload: bytes, max_bytes: int) -> dict:
    """Bytes -> validated request map. Raises ProtocolError with a code and a readable message."""
    if len(payload) > max_bytes:
        raise ProtocolError(TOO_LARGE, f"message of {len(payload)} bytes exceeds the limit of {max_bytes}")
    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
    except Exception as err:  # msgpack raises several types (ExtraData, ValueError, FormatError, ...)
        raise ProtocolError(MALFORMED, f"not a msgpack message ({type(err).__name__}: {err})") from None
    if not isinstance(msg, dict):
        raise ProtocolError(MALFORMED, f"message must be a msgpack map, got {type(msg).__name__}")
    try:
        return _validate(msg)
    except ProtocolError as err:
        rid = msg.get("rid")
        err.rid = rid if isinstance(rid, (int, str)) and not isinstance(rid, bool) else None
        raise


def _validate(msg: dict) -> dict:
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(MISSING_FIELD if kind is None else BAD_FIELD, "message needs a string field 'type'")
    if kind not in SCHEMA:
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}; valid: {sorted(SCHEMA)}", None)
    fields = {**_COMMON, **SCHEMA[kind]}
    for name, (types, required) in fields.items():
        _check_field(msg, name, types, required, kind)
    extra = sorted(set(msg) - set(fields))
    if extra:
        raise ProtocolError(BAD_FIELD, f"{kind}: unexpected field(s) {[str(e)[:40] for e in extra][:5]}", kind)
    if kind == "flag":
        _check_prov(msg["prov"])
    return msg


def _check_prov(prov: dict):
    if len(prov) > MAX_PROV_KEYS:
        raise ProtocolError(BAD_FIELD, f"flag: provenance has more than {MAX_PROV_KEYS} entries", "flag")
    for key, value in prov.items():
        if not isinstance(key, str) or not key.isidentifier() or len(key) > 64:
            raise ProtocolError(BAD_FIELD, f"flag: provenance key {str(key)[:40]!r} is not an identifier", "flag")
        types = PROV_TYPES.get(key, (str, int, float, bool))
        _check_field(prov, key, types, False, "flag")
    core = prov.get("core", [])
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in core):
        raise ProtocolError(BAD_FIELD, "flag: provenance 'core' must list atom indices (integers >= 0)", "flag")


def encode(msg: dict) -> bytes:
    msg.setdefault("ts", time.time())
    return msgpack.packb(msg, use_bin_type=True)


def error_reply(err: ProtocolError, rid=None) -> dict:
    out = {"type": "error", "code": err.code, "message": err.message, "re": err.re}
    if rid is not None:
        out["rid"] = rid
    return out


# ---- configurations -------------------------------------------------------------------------
def encode_config(atoms: Atoms) -> dict:
    return {"numbers": np.ascontiguousarray(atoms.numbers, dtype="<i4").tobytes(),
            "positions": np.ascontiguousarray(atoms.positions, dtype="<f8").tobytes(),
            "cell": np.ascontiguousarray(atoms.cell.array, dtype="<f8").tobytes(),
            "pbc": [bool(p) for p in atoms.pbc]}


def decode_config(config: dict, species, max_atoms: int) -> Atoms:
    """Validated configuration -> Atoms. Rejects NaN/inf, unknown elements, bad shapes, naming why."""
    def bad(text):
        return ProtocolError(BAD_CONFIG, f"flag: configuration rejected: {text}", "flag")

    for name, types in CONFIG_FIELDS.items():
        _check_field(config, name, types, True, "flag")
    extra = sorted(set(config) - set(CONFIG_FIELDS))
    if extra:
        raise bad(f"unexpected field(s) {[str(e)[:40] for e in extra][:5]}")
    raw_numbers, raw_pos, raw_cell = config["numbers"], config["positions"], config["cell"]
    if len(raw_numbers) % 4 or len(raw_pos) % 24 or len(raw_cell) != 72:
        raise bad(f"array byte lengths {len(raw_numbers)}, {len(raw_pos)}, {len(raw_cell)} are not "
                  "N int32 numbers, N x 3 float64 positions and a 3 x 3 float64 cell")
    numbers = np.frombuffer(raw_numbers, dtype="<i4")
    n = len(numbers)
    if n == 0 or n > max_atoms:
        raise bad(f"{n} atoms (allowed: 1 to {max_atoms})")
    if len(raw_pos) != 24 * n:
        raise bad(f"{len(raw_pos) // 24} positions for {n} atoms")
    positions = np.frombuffer(raw_pos, dtype="<f8").reshape(n, 3)
    cell = np.frombuffer(raw_cell, dtype="<f8").reshape(3, 3)
    pbc = config["pbc"]
    if len(pbc) != 3 or not all(isinstance(p, bool) for p in pbc):
        raise bad("pbc must be a list of 3 booleans")
    bad_rows = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if len(bad_rows):
        raise bad(f"non-finite (NaN/inf) positions for {len(bad_rows)} atom(s), first at index {bad_rows[0]}")
    if not np.isfinite(cell).all():
        raise bad("non-finite (NaN/inf) cell")
    if any(p for p in pbc) and abs(np.linalg.det(cell[np.array(pbc)] @ cell[np.array(pbc)].T)) < 1e-12:
        raise bad("periodic cell vectors are degenerate")
    valid = {int(z) for z in np.unique(numbers) if 0 < z < len(chemical_symbols)}
    unknown = sorted(set(np.unique(numbers).tolist()) - valid)
    if unknown:
        raise bad(f"atomic numbers {unknown[:5]} are not elements")
    symbols = {chemical_symbols[z] for z in valid}
    outside = sorted(symbols - set(species))
    if outside:
        raise bad(f"unknown element(s) {outside}: the model's species are {list(species)}")
    return Atoms(numbers=numbers.astype(int), positions=positions.copy(), cell=cell.copy(), pbc=pbc)
