"""Refit server, versions: a refit writes version N+1 and the client's poll returns it; two walkers both
receive every version; rollback; near-duplicates dropped under a labelling budget; `pylal status`."""
import os
import sys
import threading
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent / "server"))
from helpers import HERE, ROOT, ThreadServer, returns_without_waiting, si_cell, wait_until, write_config  # noqa: E402

from pylal.cli import main as cli  # noqa: E402
from pylal.model.basis import BasisSpec  # noqa: E402
from pylal.model.params import Parameters  # noqa: E402
from pylal.server.client import Client  # noqa: E402
from pylal.select.duplicates import descriptor, near_duplicate, select_batch  # noqa: E402
from pylal.server.versions import VersionStore  # noqa: E402

SMALL_SPEC = BasisSpec(species=("Si",), r_cut=3.5, n_max=3, l_max=1)
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])


class CountingEvent(threading.Event):
    """Server.wake_refit that counts the refit loop's passes (one wait() at the top of each)."""

    def __init__(self):
        super().__init__()
        self.waits = 0

    def wait(self, timeout=None):
        self.waits += 1
        return super().wait(timeout)


def test_two_walkers_get_every_version_and_rollback(tmp_path, capsys):
    cfg = write_config(tmp_path / "run", initial=3, executor={"workers": 1, "timeout": 30.0})
    with ThreadServer(cfg) as ts:
        wait_until(ts.server.versions.current, 30, what="version 1")
        walkers = [Client(ts.address, token_file=ts.cfg.token_path, walker=f"T{t}", run_id=f"run{t}",
                          spool_dir=tmp_path / f"spool{t}", version=0, poll_interval=0.5) for t in (800, 1200)]
        try:
            seen = {w.walker: [] for w in walkers}

            def collect():
                for w in walkers:
                    p = w.poll()  # non-blocking
                    if p is not None:
                        seen[w.walker].append(p.version)

            first = [w.wait_for_version(1, 30) for w in walkers]
            assert all(p is not None and p.version == 1 for p in first)
            # nothing newer yet (no flag sent, so no version 2 can come): poll() returns None, not waiting for one
            assert returns_without_waiting(walkers[0].poll, what="poll() with no newer version") is None
            for k in range(3):  # each flag -> one label -> version k + 2
                walkers[k % 2].send_flag(si_cell(50 + k), {"step": 100 * k, "f_max": 0.4, "n_ranks": 2})
                for w in walkers:
                    p = w.wait_for_version(k + 2, 60)
                    assert p is not None and p.version == k + 2
                    seen[w.walker].append(p.version)
                collect()
            assert all(v == [2, 3, 4] for v in seen.values()), seen
            # the file each walker received is the published version, byte for byte
            for w in walkers:
                assert Path(w.params_path).read_bytes() == (ts.cfg.run_dir / "versions" / "params_v000004.npz").read_bytes()
            assert sorted(VersionStore(ts.cfg.run_dir).versions()) == [1, 2, 3, 4]
            assert (ts.cfg.run_dir / "current.npz").read_bytes() == Path(walkers[0].params_path).read_bytes()

            # rollback to version 2: published as version 5 with version 2's coefficients, refits held
            assert cli(["rollback", "2", "--config", str(cfg), "--hold"]) == 0
            assert "as version 5" in capsys.readouterr().out
            for w in walkers:
                p = w.wait_for_version(5, 30)
                assert p is not None and p.version == 5
                v2 = Parameters.load(ts.cfg.run_dir / "versions" / "params_v000002.npz")
                np.testing.assert_array_equal(p.mean, v2.mean)
                np.testing.assert_array_equal(p.committee, v2.committee)
                assert p.hyper["rollback_of"] == 2
            loop = ts.server.wake_refit = CountingEvent()  # the refit loop reads it at every pass
            walkers[0].send_flag(si_cell(60), {"step": 999})
            wait_until(lambda: ts.server.store.counts()["labeled"] == 4, 30, what="label while held")
            passes = loop.waits
            # two more waits: one whole pass of the refit loop ran with the label in (unheld, it refits
            # there, synchronously, before waiting again)
            wait_until(lambda: loop.waits >= passes + 2, 30, what="a pass of the refit loop after the label")
            assert VersionStore(ts.cfg.run_dir).latest() == 5  # HOLD: no refit
            assert ts.server.status()["stats"]["refit_pending"]  # a campaign must not call this converged
            (ts.cfg.run_dir / "HOLD").unlink()
            assert walkers[1].wait_for_version(6, 30).version == 6  # resumed
            wait_until(lambda: not ts.server.status()["stats"]["refit_pending"], 10, what="refit_pending cleared")

            # pylal status: queue, labels, versions, walkers, errors; status.json is rewritten every 2 s
            from pylal.server.status import collect_status, format_status

            expected = ("4 flagged", "4 labeled", "current 6", "T800", "T1200", "server: running")
            wait_until(lambda: all(e in format_status(collect_status(ts.cfg.run_dir)) for e in expected), 30,
                       what=lambda: f"{expected} in pylal status:\n{format_status(collect_status(ts.cfg.run_dir))}")
            assert cli(["status", str(cfg)]) == 0
            out = capsys.readouterr().out
            assert all(e in out for e in expected), out
        finally:
            for w in walkers:
                w.close()


def test_labels_finishing_out_of_row_order_all_enter_the_design(tmp_path):
    """Row 2 is labelled before row 1 (two workers, a slow reference): both enter the next refit's design."""
    from pylal.server.config import FitConfig
    from pylal.server.refit import Refitter
    from pylal.server.store import Store

    store = Store(tmp_path / "store.db")
    cells = [si_cell(80 + i) for i in range(3)]
    ids = [store.add_flag(a, {"step": i})[0] for i, a in enumerate(cells)]
    rng = np.random.default_rng(0)

    def label(row_id, atoms):
        store.mark_labeled(row_id, dict(energy=-4.0 * len(atoms), forces=rng.normal(size=(len(atoms), 3))), 0.1, 1)

    refitter = Refitter(SMALL_SPEC, FitConfig(species=["Si"], n_members=4), store, VersionStore(tmp_path))
    label(ids[1], cells[1])
    assert refitter.new_labels() == 1 and refitter.update_design() == 1 and refitter.rows == {ids[1]}
    label(ids[0], cells[0])  # an older row finishes later
    assert refitter.new_labels() == 1 and refitter.update_design() == 1
    assert refitter.rows == {ids[0], ids[1]} and len(refitter.design) == 2 and refitter.new_labels() == 0


def test_a_walker_waiting_on_a_flag_learns_its_refit_was_rejected(tmp_path):
    """A refit that fails its checks publishes nothing; the walker holding at the flag (on_flag wait) is told
    at its next poll instead of waiting out wait_timeout."""
    from pylal.fit.checks import FitLimits

    cfg = write_config(tmp_path / "run", initial=3, executor={"workers": 1, "timeout": 30.0})
    with ThreadServer(cfg) as ts:
        wait_until(ts.server.versions.current, 30, what="version 1")
        ts.server.refitter.limits = FitLimits(max_cv_force_rmse=1e-12)  # every further refit is rejected
        walker = Client(ts.address, token_file=ts.cfg.token_path, walker="w", spool_dir=tmp_path / "spool",
                        version=1, poll_interval=0.2)
        try:
            fid = walker.send_flag(si_cell(70), {"step": 10, "f_max": 0.4})
            wait_until(lambda: walker.ack_status.get(fid) == "refit_rejected", 60, what="the rejection")
            assert walker.wait_for_version(2, 0.5) is None and VersionStore(ts.cfg.run_dir).latest() == 1
            assert ts.server.stats["rejected_refits"] == 1
        finally:
            walker.close()


def test_near_duplicates_dropped_under_budget(tmp_path):
    base = si_cell(70)
    twin = base.copy()
    twin.positions += 1e-4 * np.random.default_rng(0).normal(size=twin.positions.shape)
    other = si_cell(71, rattle=0.3)
    r_cut = 3.8
    d = {k: descriptor(a, r_cut) for k, a in dict(base=base, twin=twin, other=other).items()}
    assert near_duplicate(d["base"], d["twin"], 0.02)
    assert not near_duplicate(d["base"], d["other"], 0.02)
    # rotated and permuted: the same configuration for the descriptor
    rot = base.copy()
    rot.rotate(37, "z", rotate_cell=True)
    assert near_duplicate(d["base"], descriptor(rot[::-1], r_cut), 1e-9)
    chosen, dropped = select_batch([(1, d["base"]), (2, d["twin"]), (3, d["other"])], [], budget=2, tol=0.02)
    assert chosen == [1, 3] and dropped == [(2, 1)]
    chosen, dropped = select_batch([(3, d["other"])], [d["other"]], budget=2, tol=0.02)
    assert chosen == [] and dropped == [(3, None)]

    cfg = write_config(tmp_path / "run", initial=3, executor={"workers": 1, "timeout": 30.0},
                       refit={"budget_per_round": 2, "every_labels": 2})
    with ThreadServer(cfg) as ts:
        client = Client(ts.address, token=ts.key, walker="w", spool_dir=tmp_path / "spool")
        for i, a in enumerate([base, twin, other]):
            client.send_flag(a, {"step": i, "f_max": 1.0 - 0.1 * i})
        assert client.flush(10)
        client.close()
        wait_until(lambda: ts.server.store.counts()["labeled"] == 2, 60, what="labels")
        counts = ts.server.store.counts()
        assert counts["dropped"] == 1 and counts["flagged"] == 3, counts
        assert "near-duplicate" in ts.server.store.rows("dropped")[0].error


def test_batch_policy_picks_the_novel_flag_under_budget(tmp_path):
    """[refit] selection: with a budget of 1, greedy_fi labels the flag with the largest max f_i (a cell
    like the training data), maxdet the one the posterior knows least (a strongly compressed cell)."""
    familiar = [si_cell(80 + i) for i in range(2)]
    novel = si_cell(82)
    novel.set_cell(novel.cell * 0.9, scale_atoms=True)
    flags = [(familiar[0], 0.9), (novel, 0.2), (familiar[1], 0.8)]
    picked = {}
    for policy in ("greedy_fi", "maxdet"):
        cfg = write_config(tmp_path / policy, initial=3, executor={"workers": 1, "timeout": 30.0},
                           refit={"budget_per_round": 1, "every_labels": 1, "selection": policy})
        with ThreadServer(cfg) as ts:
            ts.server.stop_event.wait(0)
            client = Client(ts.address, token=ts.key, walker="w", spool_dir=tmp_path / f"spool_{policy}")
            for i, (a, f_max) in enumerate(flags):
                client.send_flag(a, {"step": i, "f_max": f_max})
            assert client.flush(10)
            client.close()
            wait_until(lambda: ts.server.store.counts()["labeled"] >= 1, 60, what="first label")
            first = min(ts.server.store.rows("labeled"), key=lambda r: r.labeled_at)
            picked[policy] = int(round(first.get("step")))
    assert picked == {"greedy_fi": 0, "maxdet": 1}


def test_status_and_console_show_a_rejection_and_a_running_refit(tmp_path, capsys):
    """A rejected refit is printed on the server's console and in `pylal status` with its reason, the
    worst configurations and what to change; a refit in progress is shown as running (version,
    configurations, D, seconds so far); the campaign's console gets both from the server's stats."""
    import threading
    from types import SimpleNamespace

    from pylal.campaign.run import Campaign
    from pylal.fit.checks import FitLimits
    from pylal.server.status import collect_status, format_status

    cfg = write_config(tmp_path / "run", initial=3, executor={"workers": 1, "timeout": 30.0})
    with ThreadServer(cfg) as ts:
        wait_until(ts.server.versions.current, 60, what="version 1")
        ts.server.console = True  # as `pylal serve`
        refitter = ts.server.refitter
        refitter.limits = FitLimits(max_cv_force_rmse=1e-12)  # every further refit is rejected
        release, entered = threading.Event(), threading.Event()
        real_refit = refitter.refit

        def held_refit():
            entered.set()
            release.wait(60)  # bounded: the test releases it once it has seen the running refit
            return real_refit()

        refitter.refit = held_refit
        walker = Client(ts.address, token_file=ts.cfg.token_path, walker="w", spool_dir=tmp_path / "spool",
                        version=1, poll_interval=0.2)
        try:
            walker.send_flag(si_cell(70), {"step": 10, "f_max": 0.4})
            assert entered.wait(60), "the refit did not start"
            running = ts.server.status()["stats"]["refit_running"]
            assert running["version"] == 2 and running["configs"] == 4 and running["size"] == refitter.spec.size
            text = wait_until(lambda: (lambda t: "refit v2 running: 4 configurations" in t and t)(
                format_status(collect_status(ts.cfg.run_dir))), 20, what="the running refit in pylal status")
            assert f"D {refitter.spec.size}" in text and "s so far" in text
            lines = []
            campaign = SimpleNamespace(say=lines.append)
            news: dict = {}
            release.set()
            wait_until(lambda: ts.server.stats["rejected_refits"] == 1, 60, what="the rejection")
            assert ts.server.stats["refit_running"] is None
            rejection = ts.server.stats["last_rejection"]
            assert rejection["version"] == 2 and rejection["current"] == 1
            worst = rejection["worst"]
            assert worst and {w["name"] for w in worst} <= {"row 1", *(f"{ts.cfg.run_dir}/initial.xyz:{k}"
                                                                       for k in range(3))}
            err = capsys.readouterr().err
            assert "pylal serve: refit v2 of 4 configurations REJECTED" in err and worst[0]["name"] in err
            assert "raise [fit] max_cv_force_rmse" in err
            text = wait_until(lambda: (lambda t: "worst configurations:" in t and t)(
                format_status(collect_status(ts.cfg.run_dir))), 20, what="the rejection in pylal status")
            assert "REJECTED refits: 1" in text and "to change it: raise [fit] max_cv_force_rmse" in text
            Campaign.server_news(campaign, ts.server.status()["stats"], news)
            Campaign.server_news(campaign, ts.server.status()["stats"], news)  # told once
            assert len(lines) == 1 and "REJECTED" in lines[0] and worst[0]["name"] in lines[0]
        finally:
            walker.close()
