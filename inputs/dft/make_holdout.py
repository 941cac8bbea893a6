"""Held-out set of inputs/dft/campaign.toml: Langevin MD of 8-atom diamond Si at 1000 K on CP2K, with the
campaign's [reference] settings; snapshots written to inputs/dft/holdout.xyz (cached in the repository, so
a campaign never runs DFT MD).

The MD (2 fs, friction 0.02/fs, `--equilibrate` steps, then `--snapshots` snapshots `--stride` steps apart;
the same Langevin set-up as a campaign's own held-out MD, pylal.sampling.oracle_md) uses one persistent
CP2K shell through ASE's CP2K calculator with the reference's input (CP2KReference.ase_parameters), not a
new process per step. The first snapshot is then labelled again by the `cp2k` reference itself (fresh
shell) and the difference printed (0 in the committed run: the same computation).
The committed holdout.xyz: 170 steps in 935 s (5.5 s per step on 2 shared cores).

Command: .venv/bin/python inputs/dft/make_holdout.py [--equilibrate 50 --snapshots 12 --stride 10]
"""
import argparse
import os
import tempfile
import time
import tomllib
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402
from ase.calculators.cp2k import CP2K  # noqa: E402
from ase.io import write  # noqa: E402

from pylal.campaign.cells import campaign_cell  # noqa: E402
from pylal.reference import label  # noqa: E402
from pylal.reference.cp2k import CP2KReference  # noqa: E402
from pylal.sampling import oracle_md  # noqa: E402

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--temperature", type=float, default=1000.0)
    ap.add_argument("--equilibrate", type=int, default=50)
    ap.add_argument("--snapshots", type=int, default=12)
    ap.add_argument("--stride", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", default=str(HERE / "holdout.xyz"))
    args = ap.parse_args()
    cfg = tomllib.loads((HERE / "campaign.toml").read_text())
    init = cfg["initial"]
    ref = CP2KReference(**cfg["reference"].get("options", {}))
    cell = campaign_cell(init["bulk"], init["repeat"])
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="pylal-holdout-") as folder:
        calc = CP2K(command=ref.shell_command(folder), label="cp2k", **ref.ase_parameters(cell))
        try:
            frames = oracle_md(cell, calc, args.temperature, args.snapshots, stride=args.stride,
                               equilibrate=args.equilibrate, seed=args.seed)
        finally:
            calc.close()
    steps = args.equilibrate + args.snapshots * args.stride
    md = time.time() - t0
    print(f"{steps} MD steps on CP2K in {md:.0f} s ({md / steps:.1f} s per step, one persistent shell)")
    check = label(frames[0], ref)
    df = np.abs(check.results["forces"] - frames[0].get_forces()).max()
    de = abs(check.results["energy"] - frames[0].get_potential_energy())
    print(f"first snapshot labelled again by the cp2k reference in {check.wall_time:.1f} s: |dE| {de:.2e} eV, "
          f"max |dF| {df:.2e} eV/A")
    for atoms in frames:
        atoms.info["holdout_temperature"] = args.temperature
    write(args.out, frames)
    forces = np.concatenate([a.get_forces().ravel() for a in frames])
    print(f"{len(frames)} snapshots -> {args.out}; force RMS {np.sqrt(np.mean(forces ** 2)):.3f} eV/A")


if __name__ == "__main__":
    main()
