"""End to end: `pylal serve` + `mpirun -np 2 lmp` with fix pylal on Si, the SW oracle labelling.
New versions are swapped into the running simulation; every flag ends labelled or failed, also
when the server is killed with SIGKILL mid-run and restarted.

f_tol 0 flags at every check step once the cool-down (50 steps) has passed: the loop is exercised
at a known rate whatever the committee's uncertainty (physics of the criterion: test_fix_pylal)."""
import json
import subprocess
import sys
import time
from pathlib import Path

import ase.db
import ase.io
import pytest

from lammps_util import BIN, env, thermo
from pylal.reference import make_calculator
from pylal.sampling import diamond_si, oracle_md

sys.path.insert(0, str(Path(__file__).parent / "server"))
from helpers import free_port, kill_process, start_process, wait_until, write_config  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.mpi]

DECK = """units metal
atom_style atomic
boundary p p p
lattice diamond 5.431
region cell block 0 2 0 2 0 2
create_box 1 cell
create_atoms 1 box
mass 1 28.0855
pair_style zero 3.8
pair_coeff * *
fix ml all pylal {run}/current.npz elements Si tau 0.5 f_tol 0 check_every 10 &
    cooldown 50 server {run} walker {walker} flag_dir flags watch none {extra}
velocity all create 900 {seed} mom yes rot yes
fix nvt all nvt temp 900 900 0.1
timestep 0.001
thermo_style custom step temp pe f_ml[2] f_ml[4] f_ml[6] f_ml[7]
thermo 10
thermo_modify flush yes
run {steps}
"""


@pytest.fixture(scope="module")
def initial_data(tmp_path_factory):
    """Six 64-atom SW configurations (MD at 600 and 1200 K): a start that keeps MD stable."""
    sw = make_calculator("lammps")
    configs = [a for i, t in enumerate((600, 1200)) for a in oracle_md(diamond_si(2), sw, t, 3, stride=40, seed=i)]
    path = tmp_path_factory.mktemp("initial") / "initial.xyz"
    ase.io.write(path, configs)
    return path


def start_server(tmp_path, initial_data):
    run = tmp_path / "run"
    config = write_config(run, bind=f"tcp://127.0.0.1:{free_port()}", initial=0,
                          fit={"n_max": 6, "l_max": 3, "initial_data": [str(initial_data)]},
                          refit={"every_labels": 1}, executor={"workers": 1, "timeout": 120.0})
    server = start_process(config, run)
    wait_until(lambda: (run / "current.npz").exists(), 120, what="the first version")
    return run, config, server


def start_lammps(run, workdir, steps, ranks=2, walker="md900", seed=11, extra=""):
    workdir.mkdir(exist_ok=True)
    (workdir / "in.deck").write_text(DECK.format(run=run, steps=steps, walker=walker, seed=seed, extra=extra))
    with open(workdir / "stdout.txt", "w") as out:  # a file, not a pipe: a long run must not block on a full pipe
        return subprocess.Popen([str(BIN / "mpirun"), "-np", str(ranks), str(BIN / "lmp"), "-in", "in.deck", "-log",
                                 "log.lammps"], cwd=workdir, env=env(), stdout=out, stderr=subprocess.STDOUT, text=True)


def store_counts(run):
    counts = {}
    for row in ase.db.connect(str(run / "store.db")).select():
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts


def finished_labelling(run, n_flags):
    """Every flag reached the server (one log event per (walker, step), resends included) and
    every stored configuration is labelled or failed. Identical configurations share one row
    (both walkers flag the same perfect lattice at step 0), so rows = distinct content keys."""
    events = [json.loads(line) for line in (run / "server.log.jsonl").read_text().splitlines()]
    flags = [e for e in events if e["event"] == "flag"]
    counts = store_counts(run)
    done = counts.get("labeled", 0) + counts.get("failed", 0)
    return (len({(e["walker"], e["step"]) for e in flags}) == n_flags
            and done == sum(counts.values()) == len({e["key"] for e in flags}))


def walker_result(workdir, lmp):
    """Waits for a LAMMPS walker; returns its parameter versions per thermo row, flags, output."""
    lmp.wait(timeout=900)
    output = (workdir / "stdout.txt").read_text()
    assert lmp.returncode == 0, output[-3000:]
    rows = thermo((workdir / "log.lammps").read_text())
    n_flags = int(rows[-1]["f_ml[6]"])
    assert n_flags == len(list((workdir / "flags").glob("flag_*.xyz")))
    return [r["f_ml[7]"] for r in rows], n_flags, output


def check_end_state(run, workdir, lmp):
    versions, n_flags, output = walker_result(workdir, lmp)
    wait_until(lambda: finished_labelling(run, n_flags), 300, interval=0.5, what=lambda: unfinished(run, n_flags))
    return versions, n_flags, output


def unfinished(run, n_flags):
    """What a labelling timeout reports: the store now and the server's last words."""
    log = (run / "server.log.jsonl").read_text().splitlines()[-8:]
    return f"{n_flags} flags labelled or failed; store now {store_counts(run)}; server log ends:\n" + "\n".join(log)


def swaps_so_far(workdir) -> int:
    """Swaps a running walker has logged so far (its log is flushed at every thermo row)."""
    log = workdir / "log.lammps"
    return log.read_text().count("swapped in parameter version") if log.exists() else 0


def test_refits_are_swapped_into_two_running_walkers(tmp_path, initial_data):
    """Walker 1: mpirun -np 2; walker 2: one rank, other seed. Both send flags to one server and
    both swap in its new versions while they run. They run until each has swapped in 3 new versions
    (at most 20000 steps, 600 s), then stop through stop_file: how many refits land within a fixed
    number of steps depends on the machine's load."""
    run, _, server = start_server(tmp_path, initial_data)
    stop = tmp_path / "STOP"
    try:
        walkers = [(tmp_path / "w1", start_lammps(run, tmp_path / "w1", steps=20000, extra=f"stop_file {stop}")),
                   (tmp_path / "w2", start_lammps(run, tmp_path / "w2", steps=20000, ranks=1, walker="md900b", seed=29,
                                                  extra=f"stop_file {stop}"))]
        wait_until(lambda: all(swaps_so_far(w) >= 3 or lmp.poll() is not None for w, lmp in walkers), 600,
                   interval=0.5, what=lambda: f"3 swaps in each walker (now {[swaps_so_far(w) for w, _ in walkers]})")
        stop.touch()
        results = [walker_result(w, lmp) for w, lmp in walkers]
        n_flags = sum(r[1] for r in results)
        wait_until(lambda: finished_labelling(run, n_flags), 300, interval=0.5, what=lambda: unfinished(run, n_flags))
    finally:
        kill_process(server)
    for versions, flags, output in results:
        print(f"walker: flags {flags}, versions {versions[0]:.0f} -> {versions[-1]:.0f}")
        assert versions[-1] - versions[0] >= 3  # at least 3 refits went live during the run
        assert sorted(versions) == versions
        assert output.count("swapped in parameter version") >= 3
    print(f"store {store_counts(run)}")


def test_server_killed_mid_run_loses_nothing(tmp_path, initial_data):
    run, config, server = start_server(tmp_path, initial_data)
    workdir = tmp_path / "w1"
    lmp = start_lammps(run, workdir, steps=3000)
    try:
        def swapped_once():
            rows = thermo((workdir / "log.lammps").read_text()) if (workdir / "log.lammps").exists() else []
            return len(rows) > 1 and rows[-1]["f_ml[7]"] > rows[0]["f_ml[7]"]
        wait_until(swapped_once, 300, interval=0.2, what="a first swap")
        kill_process(server)  # SIGKILL to the server and its label workers
        time.sleep(3.0)  # MD goes on; flags are spooled
        assert lmp.poll() is None
        server = start_process(config, run)  # it restarts beside 2 busy MD ranks on 2 cores (timeout 300 s)
        versions, n_flags, _ = check_end_state(run, workdir, lmp)
    finally:
        kill_process(server)
        if lmp.poll() is None:
            lmp.kill()
    print(f"after kill -9: flags {n_flags}, store {store_counts(run)}, versions {versions[0]:.0f} -> {versions[-1]:.0f}")
    assert n_flags >= 2


def test_on_flag_wait_holds_md_until_the_next_version(tmp_path, initial_data):
    """on_flag wait: each flag is followed, at the same step, by the swap to a newer version."""
    run, _, server = start_server(tmp_path, initial_data)
    workdir = tmp_path / "w1"
    workdir.mkdir()
    deck = DECK.format(run=run, steps=120, walker="waiter", seed=5, extra="").replace(
        "flag_dir flags", "flag_dir flags on_flag wait wait_timeout 120")
    (workdir / "in.deck").write_text(deck)
    try:
        out = subprocess.run([str(BIN / "lmp"), "-in", "in.deck", "-log", "log.lammps"], cwd=workdir, env=env(),
                             capture_output=True, text=True, timeout=600)
    finally:
        kill_process(server)
    assert out.returncode == 0, out.stdout[-3000:]
    flag_steps = [int(line.split("step ")[1].split(":")[0]) for line in out.stdout.splitlines() if ": flag " in line]
    swap_steps = [int(line.split("step ")[1].split(":")[0]) for line in out.stdout.splitlines() if "swapped in" in line]
    assert flag_steps == [0, 50, 100]  # f_tol 0, cooldown 50
    assert all(step in swap_steps for step in flag_steps)
