"""Refit latency: from a flag leaving the client to the new parameters returned by the client's poll(),
reference time excluded, with 200 labelled 64-atom Si configurations already in the store.

A `pylal serve` process (SW oracle, one local worker) is started on a run folder whose store holds
200 SW-labelled rattled 64-atom diamond cells; it fits version 1 at start. Then, `--repeats` times, the
client sends one flagged 64-atom configuration and calls poll() every millisecond (as an MD loop
would) until a newer version comes back. latency = (poll time - send time) - the label's wall time
recorded by the worker. Headline: the median. Goal (issue 4): <= 5 s.

    python benchmarks/refit_latency.py [--quick] [--configs 200] [--repeats 5] [--basis small|demo]
--quick: 3 repeats with the small basis (n_max 4, l_max 2: 35 functions), K = 32.
Default: 5 repeats with the demo basis (n_max 8, l_max 4: 189 functions), K = 32.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WAIT = 900.0  # seconds: longest wait for the server's first version (a 200-configuration fit takes ~1 min)
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


def server_log(run: Path) -> list:
    try:
        return [json.loads(line) for line in (run / "server.log.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def server_failure(run: Path, waited_for: str, since: float = 0.0) -> str:
    """What we waited for, and the server's last rejection (after `since`) or last log record."""
    log = server_log(run)
    rejected = [e for e in log if e["event"] == "refit_rejected" and e["time"] >= since]
    tail = (run / "serve.out").read_text()[-1500:] if (run / "serve.out").exists() else ""
    if rejected:
        e = rejected[-1]
        what = (f"the server rejected the refit: {'; '.join(e['problems'])}; worst configurations: "
                f"{e.get('worst')}; {e.get('advice', '')}")
    else:
        what = f"the server's last log record: {json.dumps(log[-1]) if log else '(none)'}"
    return f"refit_latency: FAILED waiting for {waited_for}: {what}\nserver console (tail):\n{tail}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--basis", choices=["small", "demo"], default=None)
    ap.add_argument("--keep", help="run folder to keep (default: a temporary folder, removed)")
    ap.add_argument("--timeout", type=float, default=WAIT, help=f"seconds to wait for version 1 ({WAIT:g})")
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    basis = args.basis or ("small" if args.quick else "demo")
    n_max, l_max = (4, 2) if basis == "small" else (8, 4)

    from pylal.reference import label, make_calculator
    from pylal.sampling import diamond_si
    from pylal.server.auth import ensure_token
    from pylal.server.client import Client
    from pylal.server.store import Store

    run = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pylal_refit_latency_"))
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sw = make_calculator("lammps")
    store = Store(run / "store.db")
    for i in range(args.configs):
        lab = label(diamond_si(2, rattle=0.05 + 0.1 * (i % 3), seed=i), sw)
        row, _, _ = store.add_flag(lab.atoms, {"walker": "seed", "step": i})
        store.mark_labeled(row, lab.results, lab.wall_time, 1)
    print(f"store: {args.configs} labelled 64-atom configurations ({time.perf_counter() - t0:.1f} s)", flush=True)
    (run / "config.toml").write_text(f"""run_dir = "."
bind = "tcp://127.0.0.1:*"
[reference]
calculator = "lammps"
[executor]
workers = 1
timeout = 120.0
[fit]
species = ["Si"]
n_max = {n_max}
l_max = {l_max}
n_members = 32
[refit]
every_labels = 1
""")
    key = ensure_token(run / "token")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = open(run / "serve.out", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pylal.cli", "serve", str(run / "config.toml")], stdout=out,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    client = None
    try:
        t0 = time.perf_counter()
        while not (run / "current.json").exists():
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {(run / 'serve.out').read_text()[-2000:]}")
            if any(e["event"] == "refit_rejected" for e in server_log(run)):
                raise SystemExit(server_failure(run, "version 1"))
            if time.perf_counter() - t0 > args.timeout:
                raise SystemExit(server_failure(run, f"version 1 (timeout {args.timeout:g} s)"))
            time.sleep(0.1)
        address = json.loads((run / "server.json").read_text())["address"]
        pointer = json.loads((run / "current.json").read_text())
        version = pointer["version"]
        filtered = sum(1 for e in server_log(run) if e["event"] == "filtered")
        print(f"server up, version {version} fitted on {pointer.get('n_configs')} of {args.configs} configurations "
              f"({filtered} filtered by the label check, see server.log.jsonl) "
              f"({time.perf_counter() - t0:.1f} s, basis n_max {n_max} l_max {l_max})", flush=True)
        client = Client(address, token=key, walker="bench", spool_dir=run / "spool", version=version)
        end = time.time() + 30
        while not client.connected and time.time() < end:  # the hello round trip
            time.sleep(0.01)
        latencies = []
        for k in range(repeats):
            atoms = diamond_si(2, rattle=0.12, seed=10_000 + k)
            start, sent = time.perf_counter(), time.time()
            checked = start
            client.send_flag(atoms, {"step": k, "f_max": 0.5})
            while True:
                params = client.poll()
                if params is not None:
                    break
                if time.perf_counter() - start > 120:
                    raise SystemExit(server_failure(run, f"the version after flag {k} (timeout 120 s)", sent))
                if proc.poll() is not None:
                    raise SystemExit(server_failure(run, f"the version after flag {k} (server exited)", sent))
                if time.perf_counter() - checked > 1.0:  # a rejected refit: no version follows this flag
                    checked = time.perf_counter()
                    if any(e["event"] == "refit_rejected" and e["time"] >= sent for e in server_log(run)):
                        raise SystemExit(server_failure(run, f"the version after flag {k}", sent))
                time.sleep(0.001)
            total = time.perf_counter() - start
            label_time = Store(run / "store.db").rows("labeled", order="-id", limit=1)[0].label_time
            latencies.append(total - label_time)
            print(f"flag {k}: version {params.version}, total {total:.3f} s, reference {label_time:.3f} s, "
                  f"latency {total - label_time:.3f} s", flush=True)
        refits = [json.loads(line) for line in (run / "server.log.jsonl").read_text().splitlines()]
        fit_s = [e["seconds"] for e in refits if e["event"] == "refit" and e["reason"] == "policy"]
        print(f"refit (design update + fit + publish) in the server: median {statistics.median(fit_s):.3f} s")
        print(f"refit_latency: {statistics.median(latencies):.2f} s")
    finally:
        if client is not None:
            client.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        if not args.keep:
            shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
