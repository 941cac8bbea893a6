"""Refit server, durability: `pylal serve` killed with SIGKILL mid-queue and restarted: every flag is
labelled or failed exactly once; the client spools while the server is away and resends."""
import os
import signal
import sys
import time
from pathlib import Path

import ase.db
from ase.db.core import T2000, YEAR
import pytest

sys.path.insert(0, str(Path(__file__).parent / "server"))
from helpers import (HERE, ROOT, free_port, kill_process, returns_without_waiting, si_cell, start_process,  # noqa: E402
                     wait_until, write_config)

from pylal.server.client import Client, request  # noqa: E402
from pylal.server.auth import read_token  # noqa: E402

os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])


def _counts(run):
    db = ase.db.connect(str(run / "store.db"))
    rows = list(db.select())
    out = {}
    for r in rows:
        out[r.status] = out.get(r.status, 0) + 1
    return out, [r.key for r in rows], rows


@pytest.mark.slow
def test_kill_9_mid_queue_then_restart(tmp_path):
    run = tmp_path / "run"
    address = f"tcp://127.0.0.1:{free_port()}"
    # a slow reference (0.4 s a label) so that the kill lands mid-queue; 7-atom cells fail; while the
    # file `hold` exists labels do not finish, so the kill surely lands with one in flight
    hold = tmp_path / "hold"
    cfg = write_config(run, bind=address, initial=3,
                       reference={"calculator": "faulty:make", "options": {"delay": 0.4, "hold": str(hold)}},
                       executor={"workers": 1, "timeout": 30.0, "retries": 0})
    cells = [si_cell(200 + i, n_atoms=7 if i in (3, 11) else None) for i in range(16)]
    client = None
    proc = start_process(cfg, run)
    try:
        client = Client(address, token_file=run / "token", walker="w", spool_dir=tmp_path / "spool",
                        ack_timeout=2.0)
        for i, atoms in enumerate(cells[:10]):
            client.send_flag(atoms, {"step": i, "f_max": 0.5})
        assert client.flush(20)
        wait_until(lambda: _counts(run)[0].get("labeled", 0) >= 2, 60, what="some labels")
        hold.touch()
        t_hold = time.time()

        def held(row):
            # handed to the executor (marked labeling, then submitted) so late that its reference, which
            # sleeps `delay` before looking for `hold`, finds it: that label cannot finish before the kill
            return row.status == "labeling" and row.mtime * YEAR + T2000 + 0.4 > t_hold

        wait_until(lambda: any(held(r) for r in _counts(run)[2]), 30, what="a label in flight held by `hold`")
        os.kill(proc.pid, signal.SIGKILL)  # the server process only; its workers see EOF and exit
        proc.wait(10)
        before, _, _ = _counts(run)
        assert before.get("labeling", 0) >= 1 and before.get("queued", 0) > 0, before  # really mid-queue
        hold.unlink()
        # MD goes on while the server is down: flags are spooled, nothing blocks (with no server, a send
        # that waited for its ack would never return)
        def send_more():
            for i, atoms in enumerate(cells[10:], start=10):
                client.send_flag(atoms, {"step": i, "f_max": 0.5})
            return client.send_flag(cells[0], {"step": 0})  # a resend of an already stored flag: deduplicated

        returns_without_waiting(send_more, what="send_flag with the server down")
        spool = tmp_path / "spool"
        wait_until(lambda: len(list(spool.glob("*.flag"))) == 7, 30,
                   what=lambda: f"7 spooled flags (have {len(list(spool.glob('*.flag')))}, pending {client.pending})")
        assert client.pending == 7

        proc = start_process(cfg, run)  # same run folder and address
        assert client.flush(30), client.last_error
        wait_until(lambda: not {"queued", "labeling"} & set(_counts(run)[0]), 90, what="queue drained")
        counts, keys, rows = _counts(run)
        assert len(keys) == len(set(keys)) == len(cells)  # nothing lost, nothing duplicated
        assert counts == {"labeled": 14, "failed": 2}, counts
        assert all(r.attempts == 1 or r.status == "failed" or r.attempts == 2 for r in rows)
        status = request(address, read_token(run / "token"), {"type": "status"})
        assert status["stats"]["requeued_at_start"] == before["labeling"]
        p = client.wait_for_version(2, 30)
        assert p is not None
    finally:
        if client is not None:
            client.close()
        kill_process(proc, signal.SIGTERM)


def test_client_spools_until_server_starts(tmp_path):
    run = tmp_path / "run"
    address = f"tcp://127.0.0.1:{free_port()}"
    cfg = write_config(run, bind=address, initial=2, executor={"workers": 1, "timeout": 30.0})
    from pylal.server.auth import ensure_token

    key = ensure_token(run / "token")
    client = Client(address, token=key, walker="early", spool_dir=tmp_path / "spool")
    proc = None
    try:
        # no server: a send that waited for its ack, or a poll that waited for a version, never returns
        returns_without_waiting(lambda: [client.send_flag(si_cell(300 + i), {"step": i}) for i in range(3)],
                                what="send_flag with no server")
        assert returns_without_waiting(client.poll, what="poll() with no server") is None
        spool = tmp_path / "spool"
        wait_until(lambda: len(list(spool.glob("*.flag"))) == 3, 30, what="3 spooled flags")
        assert client.pending == 3 and not client.connected
        proc = start_process(cfg, run)
        assert client.flush(30)
        wait_until(lambda: _counts(run)[0].get("labeled", 0) == 3, 60, what="labels")
    finally:
        client.close()
        if proc is not None:
            kill_process(proc, signal.SIGTERM)


def test_store_writes_after_a_writer_was_killed_mid_write(tmp_path):
    """A server killed (SIGKILL) inside a store write leaves ASE's `store.db.lock` and a hot SQLite
    journal behind; the restarted server's first write must not wait for either (it waited forever
    on the lock file: CI, stop 20)."""
    import subprocess
    import threading

    from pylal.server.store import Store

    path = tmp_path / "store.db"
    Store(path).add_flag(si_cell(1), {"step": 0})
    (tmp_path / "store.db.lock").touch()  # what ase.db's lock file looks like after its writer died
    killer = ("import os, signal, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('BEGIN IMMEDIATE'); "
              "c.execute('DELETE FROM systems'); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", killer, str(path)])
    assert proc.returncode == -signal.SIGKILL and (tmp_path / "store.db-journal").exists()  # hot journal left
    done = []
    writer = threading.Thread(target=lambda: done.append(Store(path).add_flag(si_cell(2), {"step": 1})), daemon=True)
    writer.start()
    writer.join(20)
    assert done, "the store's first write after a killed writer hangs"
    rows = list(ase.db.connect(str(path)).select())
    assert len(rows) == 2 and done[0][2]  # the killed transaction was rolled back, the new row added
