"""Refit server, wire level: authentication, validation, size limits, acknowledged flags (issue 4).

Real sockets against the real server (in a thread of this process, so 1,000 messages stay fast)."""
import os
import stat
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent / "server"))
from helpers import ThreadServer, si_cell, write_config  # noqa: E402

from pylal.server import auth, protocol  # noqa: E402
from pylal.server.client import Client, request  # noqa: E402
from pylal.server.config import ConfigError, ServerConfig  # noqa: E402

LIMIT = 8192  # a small message limit so "oversized" is cheap to produce


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = tmp_path_factory.mktemp("proto")
    cfg = write_config(run, max_message_bytes=LIMIT, initial=2,
                       executor={"workers": 1, "timeout": 30.0, "retries": 0})
    with ThreadServer(cfg) as ts:
        yield ts


def _dealer(address):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    return sock


def _reply(sock, timeout=5.0):
    assert sock.poll(int(timeout * 1000)), "no reply from the server"
    frames = sock.recv_multipart()
    return msgpack.unpackb(frames[0], raw=False), frames


def _flag_msg(atoms, **prov):
    return {"type": "flag", "walker": "w", "id": "x", "config": protocol.encode_config(atoms),
            "prov": {"step": 1, "f_max": 0.5, **prov}}


def test_token_file_created_private(server):
    mode = stat.S_IMODE(os.stat(server.cfg.token_path).st_mode)
    assert mode == 0o600
    assert auth.ensure_token(server.cfg.token_path) == server.key  # existing token is kept


def test_unauthenticated_client_refused(server, tmp_path):
    before = server.server.store.counts()["flagged"]
    wrong = b"0" * 64
    reply = request(server.address, wrong, _flag_msg(si_cell(1)))
    assert reply["type"] == "error" and reply["code"] == "unauthenticated"
    sock = _dealer(server.address)  # no MAC frame at all
    sock.send_multipart([protocol.encode(_flag_msg(si_cell(2)))])
    msg, _ = _reply(sock)
    assert msg["code"] == "malformed"
    sock.send_multipart([protocol.encode(_flag_msg(si_cell(2))), b"\0" * 32])
    msg, _ = _reply(sock)
    assert msg["code"] == "unauthenticated"
    sock.close(0)
    assert server.server.store.counts()["flagged"] == before  # nothing stored


def test_replayed_old_message_refused(server):
    msg = {"type": "status", "ts": time.time() - 3600}
    payload = msgpack.packb(msg)
    sock = _dealer(server.address)
    sock.send_multipart([payload, auth.sign(server.key, payload)])
    reply, _ = _reply(sock)
    sock.close(0)
    assert reply["code"] == "stale"


def test_flag_stored_then_acked(server):
    atoms = si_cell(7)
    reply = request(server.address, server.key, _flag_msg(atoms, step=77, sigma=0.01, n_ranks=2, params_version=1))
    assert reply["type"] == "ack" and reply["status"] == "queued"
    # the acknowledged row is in the SQLite file: read it with a fresh connection
    import ase.db

    row = ase.db.connect(str(server.cfg.run_dir / "store.db")).get(key=reply["key"])
    assert row.step == 77 and row.n_ranks == 2 and row.params_version == 1 and row.walker == "w"
    assert np.allclose(row.positions, atoms.positions)
    again = request(server.address, server.key, _flag_msg(atoms))
    assert again["status"] == "duplicate" and again["key"] == reply["key"]


def test_carved_flag_keeps_its_core_and_big_flags_are_refused(server):
    """A carved flag's `core` indices reach the store; a core index beyond the cell and an uncarved
    flag above [reference] label_max_atoms are refused, naming the problem."""
    import ase.db

    atoms = si_cell(11)
    reply = request(server.address, server.key, _flag_msg(atoms, core=[0, 3], parent_step=5))
    assert reply["type"] == "ack", reply
    row = ase.db.connect(str(server.cfg.run_dir / "store.db")).get(key=reply["key"])
    assert row.data["provenance"]["core"] == [0, 3] and row.data["provenance"]["parent_step"] == 5
    reply = request(server.address, server.key, _flag_msg(si_cell(12), core=[0, len(atoms)]))
    assert reply["code"] == "bad_field" and "core" in reply["message"], reply
    server.cfg.reference.label_max_atoms = 4
    try:
        reply = request(server.address, server.key, _flag_msg(si_cell(13)))
    finally:
        server.cfg.reference.label_max_atoms = 0
    assert reply["code"] == "bad_config" and "label_max_atoms" in reply["message"], reply


@pytest.mark.parametrize("bad, why", [
    ("nan", "non-finite"), ("inf", "non-finite"), ("element", "unknown element(s) ['C']"),
    ("noelement", "not elements"), ("shape", "positions for"), ("cellnan", "non-finite (NaN/inf) cell")])
def test_bad_configuration_rejected_with_reason(server, bad, why):
    atoms = si_cell(3)
    msg = _flag_msg(atoms)
    cfg = msg["config"]
    pos = atoms.positions.copy()
    if bad in ("nan", "inf"):
        pos[5, 1] = np.nan if bad == "nan" else np.inf
        cfg["positions"] = pos.tobytes()
    elif bad == "element":
        cfg["numbers"] = np.array([14] * 7 + [6], "<i4").tobytes()
    elif bad == "noelement":
        cfg["numbers"] = np.array([14] * 7 + [200], "<i4").tobytes()
    elif bad == "shape":
        cfg["positions"] = pos[:5].tobytes()
    elif bad == "cellnan":
        cfg["cell"] = np.full(9, np.nan).tobytes()
    reply = request(server.address, server.key, msg)
    assert reply["type"] == "error" and reply["code"] == "bad_config", reply
    assert why in reply["message"], reply["message"]


def test_client_records_rejected_flag(server, tmp_path):
    atoms = si_cell(4)
    atoms.positions[0, 0] = np.nan
    client = Client(server.address, token=server.key, walker="rej", spool_dir=tmp_path / "spool")
    try:
        client.send_flag(atoms, {"step": 3})
        assert client.flush(10)
        assert client.rejected and "non-finite" in client.rejected[0]["message"]
        assert list((tmp_path / "spool" / "rejected").glob("*.flag"))
    finally:
        client.close()


def test_flag_refused_in_validation_is_set_aside_not_resent(server, tmp_path):
    """A provenance value of a wrong type fails validation before the request is read; the error still
    names the request id, so the client sets the flag aside (spool/rejected) instead of resending it
    forever. A bool provenance value is valid."""
    reply = request(server.address, server.key, _flag_msg(si_cell(21), carved=True))
    assert reply["type"] == "ack", reply
    client = Client(server.address, token=server.key, walker="badprov", spool_dir=tmp_path / "spool")
    try:
        client.send_flag(si_cell(22), {"step": 4, "core": [0, -1]})
        assert client.flush(10)
        assert client.rejected and "core" in client.rejected[0]["message"]
        assert list((tmp_path / "spool" / "rejected").glob("*.flag"))
    finally:
        client.close()


# ---- 1,000 malformed / truncated / oversized messages ------------------------------------------
_valid = protocol.encode(_flag_msg(si_cell(5)))
_json_like = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats() | st.text(max_size=8)
                          | st.binary(max_size=16),
                          lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                          max_leaves=12)
_fields = st.fixed_dictionaries({"type": st.sampled_from(["flag", "poll", "hello", "status", "nope", ""])},
                                optional={"walker": _json_like, "version": _json_like, "config": _json_like,
                                          "prov": _json_like, "ts": st.floats() | st.text(max_size=3)})
_payloads = st.one_of(
    st.binary(max_size=300),                                                   # random bytes
    st.integers(1, len(_valid) - 1).map(lambda n: _valid[:n]),                 # truncated flags
    st.integers(LIMIT + 1, 2 * LIMIT).map(lambda n: b"\x00" * n),              # oversized
    _json_like.map(lambda v: msgpack.packb(v)),                                # msgpack, wrong shape
    _fields.map(lambda v: msgpack.packb(v)),                                   # wrong/missing fields
)


def test_malformed_messages_each_get_an_error(server):
    sock = _dealer(server.address)
    count = {"n": 0}

    @settings(max_examples=1000, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(payload=_payloads, signed=st.booleans(), extra_frame=st.integers(0, 9))
    def check(payload, signed, extra_frame):
        frames = [payload, auth.sign(server.key, payload) if signed else os.urandom(32)]
        if extra_frame == 0:
            frames = frames[:1]
        elif extra_frame == 1:
            frames.append(b"x")
        sock.send_multipart(frames)
        reply, raw = _reply(sock)
        assert reply["type"] == "error", reply
        assert reply["code"] in {"unauthenticated", "too_large", "malformed", "unknown_type", "missing_field",
                                 "bad_field", "bad_config", "stale"}, reply
        assert auth.verify(server.key, raw[0], raw[1])  # replies are signed too
        count["n"] += 1

    check()
    sock.close(0)
    assert count["n"] == 1000
    assert server.thread.is_alive()
    assert request(server.address, server.key, {"type": "status"})["type"] == "status"


def test_config_errors_name_the_key(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("bind = 'tcp://127.0.0.1:1'\n[executor]\nkind = 'slurm'\n")
    with pytest.raises(ConfigError, match="kind"):
        ServerConfig.load(p)
    p.write_text("[refit]\nevery_label = 3\n")
    with pytest.raises(ConfigError, match="every_label"):
        ServerConfig.load(p)
    p.write_text("max_message_bytes = 'big'\n")
    with pytest.raises(ConfigError, match="max_message_bytes"):
        ServerConfig.load(p)
