"""Shared-secret authentication: a token file and an HMAC-SHA256 on every message.

Security model (docs/server.md): the server binds 127.0.0.1 by default; whoever can read the token
file (mode 0600, created by the server when missing) can talk to it. Every request and every reply
is two ZeroMQ frames [payload, mac] with mac = HMAC-SHA256(token, payload) (RFC 2104), checked in
constant time (hmac.compare_digest) before the payload is decoded, so an unauthenticated peer never
reaches the msgpack decoder. Signed payloads carry a timestamp; the server rejects those further
than `max_clock_skew` from its clock, which bounds replays (a replayed flag is also deduplicated by
its content key). The token is not encrypted on the wire: across hosts, tunnel (ssh -L) or use a
private network.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

MAC_SIZE = hashlib.sha256().digest_size  # 32 bytes


class AuthError(PermissionError):
    pass


def ensure_token(path) -> bytes:
    """Read the token file, creating it (32 random bytes, hex, mode 0600) if it does not exist."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two servers racing do not overwrite each other's token; 0600 from the start
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return read_token(path)


def read_token(path) -> bytes:
    path = Path(path)
    try:
        text = path.read_text().strip()
    except OSError as err:
        raise AuthError(f"cannot read token file {path}: {err}") from err
    if len(text) < 32:
        raise AuthError(f"token file {path} holds fewer than 32 characters")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise AuthError(f"token file {path} is readable by others (mode {mode:o}); chmod 600 it")
    return text.encode()


def sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def verify(key: bytes, payload: bytes, mac: bytes) -> bool:
    return len(mac) == MAC_SIZE and hmac.compare_digest(sign(key, payload), mac)
