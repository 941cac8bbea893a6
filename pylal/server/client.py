"""Client for LAMMPS rank 0 (or any walker): flags out, new parameters in, never blocking MD.

    client = Client("tcp://127.0.0.1:5555", token_file="RUN/token", walker="T1000-seed1",
                    spool_dir="spool/T1000-seed1", version=params.version)
    client.send_flag(atoms, {"step": 1200, "f_max": 0.31, "sigma": 0.02, "n_ranks": 2})  # returns at once
    new = client.poll()                 # Parameters newer than anything returned before, or None; at once
    new = client.wait_for_version(v, timeout=600)   # blocks (on_flag wait); Parameters or None
    client.close()

Threading: one background thread owns the ZeroMQ DEALER socket (sockets are not thread-safe); the
public methods only touch a queue and a condition variable, so they are safe from the MD thread and
cost microseconds. Each flag is first written to the spool folder (by the background thread, as a
msgpack file), sent, and deleted when the server acknowledges it (the server acks after its store
committed the row). If the server is unreachable, flags stay spooled and are resent when it is back
(also across client restarts: the spool is read at start); a resent flag the server already has is
acknowledged as a duplicate. The server announces new versions; the client then fetches the file
(at most every `poll_interval` seconds it also asks on its own) and keeps a copy in
spool_dir/params/params_vN.npz, whose content hash Parameters.load checks.
"""
from __future__ import annotations

import itertools
import os
import queue
import threading
import time
import uuid
from pathlib import Path

import msgpack
import zmq

from pylal.model.params import ParameterFileError, Parameters
from pylal.server import auth, protocol
from pylal.files import atomic_write


class Client:
    def __init__(self, address: str, token: bytes | None = None, token_file=None, walker: str = "walker",
                 run_id: str = "", spool_dir=None, version: int = -1, poll_interval: float = 1.0,
                 ack_timeout: float = 5.0, max_in_flight: int = 8):
        if token is None:
            if token_file is None:
                raise ValueError("Client needs token or token_file (the server's RUN/token)")
            token = auth.read_token(token_file)
        self.address, self.key, self.walker, self.run_id = address, token, walker, run_id
        self.spool = Path(spool_dir if spool_dir is not None else Path("pylal_spool") / walker)
        (self.spool / "params").mkdir(parents=True, exist_ok=True)
        self.poll_interval, self.ack_timeout, self.max_in_flight = poll_interval, ack_timeout, max_in_flight
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._latest: tuple[int, Parameters | None, str | None] = (version, None, None)
        self._returned = version
        self._poll_now = threading.Event()
        self._stop = threading.Event()
        self.connected = False
        self.last_error: str | None = None
        self.rejected: list[dict] = []  # flags the server refused (bad configuration): never resent
        self.acked = 0
        self.ack_status: dict[str, str] = {}  # flag id -> "queued" | "duplicate" | "rejected" | "filtered"
        self._pending: dict[str, Path] = {}  # flag id -> spool file (insertion = flag order)
        for path in sorted(self.spool.glob("*.flag")):
            self._pending[path.stem.split("_", 1)[1]] = path
        self._seq = itertools.count(int(time.time() * 1e6))
        self._thread = threading.Thread(target=self._run, name=f"pylal-client-{walker}", daemon=True)
        self._thread.start()

    # ---- API for the MD side (non-blocking) -------------------------------------------------
    def send_flag(self, atoms, provenance: dict | None = None) -> str:
        """Queue a configuration for the server; returns its flag id at once."""
        flag_id = uuid.uuid4().hex
        prov = {k: (v.item() if hasattr(v, "item") else v) for k, v in (provenance or {}).items()}
        prov.setdefault("run_id", self.run_id)
        self._outbox.put((flag_id, {"type": "flag", "walker": self.walker, "id": flag_id,
                                    "config": protocol.encode_config(atoms), "prov": prov}))
        return flag_id

    def poll(self) -> Parameters | None:
        """Parameters newer than the last ones returned (or than `version`), else None. Never waits;
        also asks the background thread to check with the server now."""
        self._poll_now.set()
        with self._cond:
            version, params, _ = self._latest
            if params is not None and version > self._returned:
                self._returned = version
                return params
        return None

    def wait_for_version(self, version: int, timeout: float, flag_id: str | None = None) -> Parameters | None:
        """Block until parameters with version >= `version` arrived (returned) or timeout (None).
        With `flag_id`: also None as soon as the server acknowledged that flag as a duplicate,
        refused it, or filtered its label (no refit will follow it)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._latest[0] < version or self._latest[1] is None:
                left = end - time.monotonic()
                if left <= 0 or self.ack_status.get(flag_id) in ("duplicate", "rejected", "filtered"):
                    return None
                self._poll_now.set()
                self._cond.wait(min(left, 0.25))
            self._returned = max(self._returned, self._latest[0])
            return self._latest[1]

    @property
    def params_path(self) -> str | None:
        """File of the newest parameters received (for the engine's restart state)."""
        return self._latest[2]

    @property
    def pending(self) -> int:
        """Flags not yet acknowledged (spooled on disk or in the outbox)."""
        return len(self._pending) + self._outbox.qsize()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every flag is acknowledged (tests, end of run). True if none is pending."""
        end = time.monotonic() + timeout
        while self.pending and time.monotonic() < end:
            time.sleep(0.01)
        return not self.pending

    def close(self, timeout: float = 2.0):
        """Stop the background thread; unacknowledged flags stay in the spool for the next start."""
        self._stop.set()
        self._thread.join(timeout)

    # ---- request helper for tools (blocking; not for the MD thread) ---------------------------
    def request(self, msg: dict, timeout: float = 5.0) -> dict:
        return request(self.address, self.key, msg, timeout)

    # ---- background thread ----------------------------------------------------------------
    def _connect(self, ctx):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing towards a server that is not connected
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 5000)
        sock.connect(self.address)
        return sock

    def _send(self, sock, msg: dict) -> bool:
        payload = protocol.encode(dict(msg, ts=time.time()))
        try:
            sock.send_multipart([payload, auth.sign(self.key, payload)], zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def _run(self):
        ctx = zmq.Context()
        sock = self._connect(ctx)
        in_flight: dict[str, float] = {}  # flag id -> sent at
        last_poll = last_hello = 0.0
        poll_sent = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                self._spool_outbox()
                if not self.connected:
                    if now - last_hello > 0.5 and self._send(sock, {"type": "hello", "walker": self.walker,
                                                                      "run_id": self.run_id}):
                        last_hello = now
                else:
                    # flags: resend those unacknowledged for too long (server died with them in flight)
                    for fid, sent in list(in_flight.items()):
                        if now - sent > self.ack_timeout:
                            del in_flight[fid]
                            self.connected = False
                            self.last_error = f"no ack within {self.ack_timeout:g} s; will resend"
                    for fid, path in list(self._pending.items()):
                        if len(in_flight) >= self.max_in_flight or not self.connected:
                            break
                        if fid in in_flight:
                            continue
                        try:
                            msg = msgpack.unpackb(path.read_bytes(), raw=False)
                        except (OSError, ValueError) as err:
                            self.last_error = f"unreadable spool file {path}: {err}"
                            self._pending.pop(fid, None)
                            continue
                        if self._send(sock, dict(msg, rid=fid)):
                            in_flight[fid] = now
                    want_poll = self._poll_now.is_set() or now - last_poll > self.poll_interval
                    if want_poll and now - poll_sent > 0.05:
                        self._poll_now.clear()
                        if self._send(sock, {"type": "poll", "walker": self.walker, "version": self._latest[0]}):
                            last_poll = poll_sent = now
                if sock.poll(20):
                    while True:
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._on_reply(frames, in_flight)
                if not self.connected and in_flight:
                    in_flight.clear()
        finally:
            sock.close(0)
            ctx.term()

    def _spool_outbox(self):
        while True:
            try:
                fid, msg = self._outbox.get_nowait()
            except queue.Empty:
                return
            path = self.spool / f"{next(self._seq):020d}_{fid}.flag"
            self._pending[fid] = path  # before writing, so `pending` never reads 0 in between
            atomic_write(path, msgpack.packb(msg, use_bin_type=True))

    def _on_reply(self, frames, in_flight):
        if len(frames) != 2 or not auth.verify(self.key, frames[0], frames[1]):
            self.last_error = "reply with a bad signature ignored (another server on this address?)"
            return
        try:
            msg = msgpack.unpackb(frames[0], raw=False)
            kind = msg["type"]
        except Exception as err:
            self.last_error = f"undecodable reply: {err}"
            return
        self.connected = True
        if kind == "ack":
            fid = msg.get("id")
            with self._cond:
                self.ack_status[fid] = msg.get("status", "queued")
                self._cond.notify_all()
            in_flight.pop(fid, None)
            path = self._pending.pop(fid, None)
            if path is not None:
                path.unlink(missing_ok=True)
                self.acked += 1
        elif kind == "params":
            self._store_params(msg)
        elif kind == "none" and (msg.get("filtered") or msg.get("refit_rejected")):
            with self._cond:  # no version will answer these flags: labels kept out of fits, or a rejected refit
                for status in ("filtered", "refit_rejected"):
                    for fid in msg.get(status, ()):
                        self.ack_status[fid] = status
                self._cond.notify_all()
        elif kind == "announce":
            self._poll_now.set()
        elif kind == "error":
            self.last_error = f"{msg.get('code')}: {msg.get('message')}"
            if msg.get("re") == "flag" and msg.get("code") in (protocol.BAD_CONFIG, protocol.BAD_FIELD,
                                                                 protocol.TOO_LARGE):
                self._reject(msg, in_flight)
            elif msg.get("code") == protocol.UNAUTHENTICATED:
                self.connected = False

    def _reject(self, msg, in_flight):
        """The server will never take this flag: keep it aside (spool/rejected/), do not resend."""
        fid = msg.get("rid")
        with self._cond:
            self.ack_status[fid] = "rejected"
            self._cond.notify_all()
        path = self._pending.get(fid) if fid else None
        in_flight.pop(fid, None)
        self.rejected.append({"id": fid, "code": msg.get("code"), "message": msg.get("message")})
        if path is not None:
            (self.spool / "rejected").mkdir(exist_ok=True)
            os.replace(path, self.spool / "rejected" / path.name)
            self._pending.pop(fid, None)

    def _store_params(self, msg):
        version = msg.get("version")
        if not isinstance(version, int) or version <= self._latest[0]:
            return
        path = self.spool / "params" / f"params_v{version:06d}.npz"
        try:
            atomic_write(path, msg["data"])
            params = Parameters.load(path)
        except (OSError, KeyError, ParameterFileError) as err:
            self.last_error = f"received parameters unusable: {err}"
            return
        with self._cond:
            self._latest = (version, params, str(path))
            self._cond.notify_all()


def request(address: str, key: bytes, msg: dict, timeout: float = 5.0) -> dict:
    """One signed request and its reply on a fresh socket (status queries, tests). Raises TimeoutError."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        payload = protocol.encode(dict(msg, ts=time.time()))
        sock.send_multipart([payload, auth.sign(key, payload)])
        if not sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"no reply from {address} within {timeout:g} s")
        frames = sock.recv_multipart()
        return msgpack.unpackb(frames[0], raw=False)
    finally:
        sock.close(0)
