"""Refit server, labelling: local worker pool and Dask LocalCluster; injected reference failures
(exception, NaN forces, a hang past the timeout) are recorded as failed and never enter the fit."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

sys.path.insert(0, str(Path(__file__).parent / "server"))
from helpers import HERE, ROOT, ThreadServer, si_cell, wait_until, write_config  # noqa: E402

from pylal.fit.committee import fit_parameters  # noqa: E402
from pylal.fit.design import Weights  # noqa: E402
from pylal.model.params import Parameters  # noqa: E402
from pylal.server.client import Client  # noqa: E402

# worker processes (ours and Dask's) must import this checkout's pylal and the test helpers
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])


def _finished(ts, n):
    c = ts.server.store.counts()
    return c["flagged"] == n and c["queued"] == 0 and c["labeling"] == 0


def _run_flags(ts, tmp_path, cells, timeout=90):
    client = Client(ts.address, token=ts.key, walker="w0", spool_dir=tmp_path / "spool")
    try:
        for i, atoms in enumerate(cells):
            client.send_flag(atoms, {"step": 10 * i, "f_max": 0.2 + i})
        assert client.flush(20)
        wait_until(lambda: _finished(ts, len(cells)), timeout, what="all labels finished")
        # the refit thread catches up with the last label
        last = max([r.id for r in ts.server.store.rows("labeled")], default=0)
        wait_until(lambda: ts.server.versions.current().get("last_row") == last, 30, what="final refit")
    finally:
        client.close()


def _refit_equals_direct_fit(ts, n_initial):
    """The server's newest version equals a direct fit of the initial set plus the labelled rows."""
    store, spec = ts.server.store, ts.server.spec
    labelled = [a for _, a in store.labeled_atoms()]
    cur = ts.server.versions.current()
    params = Parameters.load(ts.cfg.run_dir / cur["file"])
    fc = ts.cfg.fit
    initial = read(ts.cfg.run_dir / "initial.xyz", index=":")  # as the server read it (extxyz precision)
    assert len(initial) == n_initial
    direct = fit_parameters(spec, initial + labelled, Weights(*fc.weights), fc.method, fc.n_members,
                            seed=fc.seed + cur["version"], version=cur["version"])
    assert params.hyper["n_configs"] == n_initial + len(labelled)
    # The server adds rows in the order labels finish, the direct fit in store order: the same least-squares
    # problem with permuted rows agrees to round-off (1e-10 relative seen); n_configs above catches a
    # missing or extra label.
    np.testing.assert_allclose(params.mean, direct.mean, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(params.committee, direct.committee, rtol=1e-7, atol=1e-9)


def test_local_pool_labels_and_failures_recorded(tmp_path):
    """Two workers; 7 atoms: the reference raises, 9: NaN forces, 10: hangs past the 3 s timeout."""
    cfg = write_config(tmp_path / "run", initial=3,
                       reference={"calculator": "faulty:make", "options": {}},
                       executor={"workers": 2, "timeout": 3.0, "retries": 1})
    cells = [si_cell(1), si_cell(2, n_atoms=7), si_cell(3), si_cell(4, n_atoms=9), si_cell(5, n_atoms=10),
             si_cell(6)]
    with ThreadServer(cfg) as ts:
        _run_flags(ts, tmp_path, cells)
        counts = ts.server.store.counts()
        assert counts["labeled"] == 3 and counts["failed"] == 3, counts
        errors = {r.natoms: r.error for r in ts.server.store.rows("failed")}
        assert "injected failure" in errors[7]
        assert "NonFiniteResult" in errors[9]
        assert "Timeout" in errors[10]
        assert all(r.attempts == 2 for r in ts.server.store.rows("failed"))  # 1 retry each
        for r in ts.server.store.rows("labeled"):
            assert np.isfinite(r.forces).all() and r.natoms == 8 and r.attempts == 1
        _refit_equals_direct_fit(ts, 3)
        # a hung worker was replaced: the pool still labels
        client = Client(ts.address, token=ts.key, walker="w1", spool_dir=tmp_path / "spool1")
        client.send_flag(si_cell(99), {"step": 1})
        assert client.flush(10)
        client.close()
        wait_until(lambda: ts.server.store.counts()["labeled"] == 4, 60, what="label after a timeout")
        log = (ts.cfg.run_dir / "server.log.jsonl").read_text()
        assert log.count('"event": "label_failed"') == 3 and '"event": "retry"' in log


@pytest.mark.slow
def test_dask_local_cluster_labels(tmp_path):
    """A real distributed.LocalCluster (processes, 1 worker, 1 thread); an injected exception and NaN
    forces are failures, the rest labelled and fitted."""
    cfg = write_config(tmp_path / "run", initial=3,
                       reference={"calculator": "faulty:make", "options": {}},
                       executor={"kind": "dask", "workers": 1, "timeout": 60.0, "retries": 0})
    cells = [si_cell(11), si_cell(12, n_atoms=7), si_cell(13), si_cell(14, n_atoms=9)]
    with ThreadServer(cfg) as ts:
        assert ts.server.executor.kind == "dask"
        _run_flags(ts, tmp_path, cells, timeout=120)
        counts = ts.server.store.counts()
        assert counts["labeled"] == 2 and counts["failed"] == 2, counts
        _refit_equals_direct_fit(ts, 3)
