"""Refit server, shared state (issue 23 item 4): the status is written while walkers join.

The socket thread inserts into `walkers` / `identities` while the scheduler thread (and any in-process
owner, e.g. `pylal campaign`) serialises the status; without the server's state lock the JSON encoder
meets "dictionary changed size during iteration", the scheduler thread dies and the server stops."""
import json
import sys
import threading
import time
import traceback
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).parent / "server"))
from helpers import ThreadServer, write_config  # noqa: E402

import msgpack  # noqa: E402

from pylal.server import auth, protocol  # noqa: E402

N_WALKERS = 200
N_SOCKETS = 10  # walkers share DEALER sockets: `identities` grows too
TIMEOUT = 60.0  # seconds: bound on every wait below (the run takes ~1 s)


def _send(sock, key, msg):
    payload = protocol.encode(dict(msg, ts=time.time()))
    sock.send_multipart([payload, auth.sign(key, payload)])


def test_status_written_while_200_walkers_join(tmp_path):
    run = tmp_path / "run"
    cfg = write_config(run, initial=0, executor={"workers": 1, "timeout": 30.0, "retries": 0})
    names = [f"walker-{i:03d}" for i in range(N_WALKERS)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: a serialisation is interrupted by insertions
    try:
        with ThreadServer(cfg) as ts:
            server = ts.server
            stop, wrote, errors, writes = threading.Event(), threading.Event(), [], [0]

            def writer():  # what the scheduler thread does every 2 s, and a campaign reading status()
                try:
                    while not stop.is_set():
                        if writes[0] % 10 == 0:  # status.json (fsync: the socket thread runs meanwhile)
                            server._write_status()
                        json.dumps(server.status(), indent=1, default=str)  # (pure-Python encoder with indent)
                        writes[0] += 1
                        wrote.set()
                except Exception:
                    errors.append(traceback.format_exc())
                    wrote.set()

            thread = threading.Thread(target=writer, name="status-writer", daemon=True)
            thread.start()
            ctx = zmq.Context.instance()
            socks = [ctx.socket(zmq.DEALER) for _ in range(N_SOCKETS)]
            poller = zmq.Poller()
            replies = []
            try:
                for s in socks:
                    s.setsockopt(zmq.LINGER, 0)
                    s.connect(ts.address)
                    poller.register(s, zmq.POLLIN)
                for first in range(0, N_WALKERS, N_SOCKETS):  # rounds: each one overlaps a status write
                    assert wrote.wait(TIMEOUT), "the status writer is stuck"
                    wrote.clear()
                    for i in range(first, first + N_SOCKETS):  # a burst: the socket thread inserts back to back
                        sock = socks[i % N_SOCKETS]
                        _send(sock, ts.key, {"type": "hello", "walker": names[i], "run_id": f"run-{i}"})
                        _send(sock, ts.key, {"type": "poll", "walker": names[i], "version": -1})
                    assert wrote.wait(TIMEOUT), "the status writer is stuck"  # one more write meanwhile
                    while len(replies) < 2 * (first + N_SOCKETS) and not errors:
                        ready = dict(poller.poll(int(TIMEOUT * 1000)))
                        assert ready, f"no reply within {TIMEOUT} s ({len(replies)} of {2 * N_WALKERS} received)"
                        for s in ready:
                            while s.poll(0):
                                replies.append(msgpack.unpackb(s.recv_multipart()[0], raw=False))
                    if errors:
                        break
            finally:
                stop.set()
                for s in socks:
                    s.close(0)
                thread.join(TIMEOUT)
            assert not thread.is_alive(), "the status writer did not finish"
            assert not errors, errors[0]
            assert writes[0] >= N_WALKERS // N_SOCKETS  # at least one status write per round
            assert not server.stop_event.is_set(), "a server thread crashed: " + (run / "server.log.jsonl").read_text()[-3000:]
            assert sorted(r["type"] for r in replies) == ["none"] * N_WALKERS + ["welcome"] * N_WALKERS, \
                [r for r in replies if r["type"] not in ("none", "welcome")][:3]
            status = server.status()
            assert sorted(status["walkers"]) == names
            assert all(status["walkers"][n]["run_id"] == f"run-{i}" for i, n in enumerate(names))
            assert status["stats"]["protocol_errors"] == 0
            status["walkers"].clear()  # a snapshot: changing it leaves the server's state alone
            status["stats"]["filtered"].append("x")
            assert sorted(server.status()["walkers"]) == names and server.status()["stats"]["filtered"] == []
    finally:
        sys.setswitchinterval(switch)
    saved = json.loads((run / "status.json").read_text())  # written by the server as it stopped
    assert sorted(saved["walkers"]) == names
    events = [json.loads(line)["event"] for line in (run / "server.log.jsonl").read_text().splitlines()]
    assert "thread_crash" not in events
