"""CP2K (density-functional theory, Gaussian and plane waves) as the reference, through ASE's CP2K calculator.

``make_calculator("cp2k", **options)`` gives a ``CP2KReference``: one fresh ``cp2k_shell`` per label, in
its own scratch folder that is removed afterwards, so a label depends on its configuration only (no
wavefunction carried over from the previous label: a label by the server equals a direct ASE call).
Every option and its default is in ``DEFAULTS`` and docs/dft.md. ASE writes the input and talks to
the shell; this module chooses the settings per configuration (k-points from the cell, smearing for
periodic cells, a vacuum box for molecules) and turns CP2K's own failure reports into typed errors:

  SCFNotConverged   CP2K's warning "SCF run NOT converged" (CP2K 2023.1 warns and goes on; the label
                    must not be fitted)
  CP2KError         CP2K stopped: its [ABORT] message (bad input, missing basis set, ...) or, when it
                    died without one (killed, out of memory, segfault), its exit status
A label past the server's timeout is killed by the executor (docs/server.md), CP2K included.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes, kptdensity2monkhorstpack

RY = 13.605693122994  # eV

# every option of the `cp2k` reference ([reference] options = {...}); docs/dft.md says why each default
DEFAULTS = dict(
    xc="PBE",
    basis_set="DZVP-MOLOPT-SR-GTH",
    basis_set_file="BASIS_MOLOPT",
    pseudo_potential="GTH-PBE",
    potential_file="GTH_POTENTIALS",
    cutoff=300.0,  # Ry, finest plane-wave grid (MGRID CUTOFF)
    rel_cutoff=50.0,  # Ry, MGRID REL_CUTOFF
    kpt_density=2.0,  # k-points per 1/A along each periodic reciprocal vector (ASE kptdensity2monkhorstpack)
    kpts=None,  # explicit [n1, n2, n3] Monkhorst-Pack grid instead of kpt_density; [1, 1, 1]: Gamma only
    smearing=1000.0,  # K, Fermi-Dirac electronic temperature for periodic cells (0: none); never for molecules
    added_mos=None,  # extra orbitals with smearing; None: max(8, number of atoms)
    max_scf=100,
    eps_scf=1e-6,
    mixing_alpha=0.3,  # Broyden density mixing
    charge=0,
    uks=False,  # unrestricted (spin-polarised) Kohn-Sham
    multiplicity=None,  # spin multiplicity with uks (None: CP2K's lowest)
    vacuum=6.0,  # A of vacuum on each side of a molecule (pbc all False; Poisson solver MT)
    command="cp2k_shell",  # the CP2K shell command line (Debian: cp2k_shell -> cp2k.psmp; or "cp2k.psmp -s")
    threads=1,  # OMP_NUM_THREADS of CP2K
    scratch="",  # parent of the per-label folders; "": TMPDIR/pylal-cp2k
    keep_files=False,  # keep each label's folder (input, output, wavefunction) for debugging
)


class SCFNotConverged(RuntimeError):
    """The self-consistent field did not converge within max_scf steps (CP2K's own message)."""


class CP2KError(RuntimeError):
    """CP2K stopped without results: its [ABORT] message, or its exit status if it died without one."""


class CP2KReference(Calculator):
    """Energy, forces and (periodic cells) stress from CP2K; options and defaults in ``DEFAULTS``."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, **options):
        unknown = sorted(set(options) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"cp2k reference: unknown option(s) {unknown}; valid: {sorted(DEFAULTS)}")
        super().__init__()
        self.options = {**DEFAULTS, **options}
        o = self.options
        if o["kpts"] is not None and (len(o["kpts"]) != 3 or min(o["kpts"]) < 1):
            raise ValueError(f"cp2k reference: kpts = {o['kpts']!r}: expected three integers >= 1")
        program = (shlex.split(o["command"]) or [""])[0]
        if shutil.which(program) is None:
            raise FileNotFoundError(f"cp2k reference: command {program!r} not found on PATH; install CP2K "
                                    "(Debian, as root: apt-get install cp2k cp2k-data; `make test` does it)")
        self.scratch = Path(o["scratch"] or Path(tempfile.gettempdir()) / "pylal-cp2k")
        self.scratch.mkdir(parents=True, exist_ok=True)
        _remove_stale_folders(self.scratch)

    # ---- settings per configuration ----------------------------------------------------------
    def input_atoms(self, atoms):
        """The configuration CP2K sees: periodic cells as they are; a molecule centred in a vacuum box."""
        if atoms.pbc.all():
            return atoms.copy()
        if atoms.pbc.any():
            raise ValueError(f"cp2k reference: partially periodic cells (pbc = {atoms.pbc.tolist()}) are not "
                             "supported; use pbc all True (bulk) or all False (molecule)")
        work = atoms.copy()
        work.center(vacuum=self.options["vacuum"])
        return work

    def kpoints(self, atoms) -> list[int]:
        """Monkhorst-Pack grid: `kpts`, or ceil(2 pi |b_i| kpt_density) along each reciprocal vector b_i
        (ASE's kptdensity2monkhorstpack): 3x3x3 for the 8-atom Si cube, 2x2x2 for 64 atoms, Gamma from 12.6 A."""
        if not atoms.pbc.all():
            return [1, 1, 1]
        if self.options["kpts"] is not None:
            return [int(n) for n in self.options["kpts"]]
        return [int(n) for n in kptdensity2monkhorstpack(atoms, self.options["kpt_density"], even=False)]

    def ase_parameters(self, atoms) -> dict:
        """Keyword arguments of ase.calculators.cp2k.CP2K for `atoms` (as returned by input_atoms);
        a direct ASE call with them computes the same label."""
        o = self.options
        periodic = bool(atoms.pbc.all())
        scf = [f"EPS_SCF {o['eps_scf']:g}", "&MIXING", "METHOD BROYDEN_MIXING", f"ALPHA {o['mixing_alpha']:g}",
               "&END MIXING"]
        if periodic and o["smearing"] > 0:
            added = o["added_mos"] if o["added_mos"] is not None else max(8, len(atoms))
            scf += [f"ADDED_MOS {int(added)}", "&SMEAR ON", "METHOD FERMI_DIRAC",
                    f"ELECTRONIC_TEMPERATURE [K] {o['smearing']:g}", "&END SMEAR"]
        dft = ["&MGRID", f"REL_CUTOFF [Ry] {o['rel_cutoff']:g}", "&END MGRID", "&SCF", *scf, "&END SCF"]
        kpts = self.kpoints(atoms)
        if kpts != [1, 1, 1]:
            dft += ["&KPOINTS", "SCHEME MONKHORST-PACK {} {} {}".format(*kpts), "&END KPOINTS"]
        inp = "\n".join(["&FORCE_EVAL", "&DFT", *dft, "&END DFT", "&END FORCE_EVAL"])
        return dict(xc=o["xc"], basis_set=o["basis_set"], basis_set_file=o["basis_set_file"],
                    pseudo_potential=o["pseudo_potential"], potential_file=o["potential_file"],
                    cutoff=o["cutoff"] * RY, max_scf=o["max_scf"], charge=o["charge"], uks=o["uks"],
                    multiplicity=o["multiplicity"], stress_tensor=periodic, print_level="LOW", inp=inp)

    def shell_command(self, folder) -> str:
        """The shell started in `folder` with `threads` OpenMP threads: CP2K's files are then named
        relative to it (CP2K rejects long paths in its input, e.g. PROJECT of a deep scratch folder)."""
        return (f"cd {shlex.quote(str(folder))} && exec env OMP_NUM_THREADS={int(self.options['threads'])} "
                f"{self.options['command']}")

    # ---- one label -------------------------------------------------------------------------------
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from ase.calculators.cp2k import CP2K

        super().calculate(atoms, properties, system_changes)
        work = self.input_atoms(self.atoms)
        folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.scratch))
        try:
            calc = None
            try:
                calc = CP2K(command=self.shell_command(folder), label="cp2k", **self.ase_parameters(work))
                calc.calculate(work, ["energy", "forces"], all_changes)  # one EVAL_EF: energy, forces, stress
                results = dict(calc.results)
            except Exception as err:
                raise CP2KError(_failure_message(folder / "cp2k.out", calc, err)) from None
            finally:
                _close(calc)
            _check_scf(folder / "cp2k.out", self.options["max_scf"])
        finally:
            if not self.options["keep_files"]:
                shutil.rmtree(folder, ignore_errors=True)
        energy = float(results["energy"])
        self.results = {"energy": energy, "free_energy": energy, "forces": np.array(results["forces"])}
        if work.pbc.all():
            self.results["stress"] = np.array(results["stress"])


def make(**options) -> CP2KReference:
    return CP2KReference(**options)


# ---- CP2K's own messages --------------------------------------------------------------------------
_ART = re.compile(r"^[\s/\\_|O]*")


def abort_message(out_text: str) -> str | None:
    """The text of CP2K's [ABORT] box (message and source location), or None."""
    lines = out_text.splitlines()
    for i, line in enumerate(lines):
        if "[ABORT]" in line:
            words = []
            for box in lines[i + 1:]:
                if box.strip().startswith("****"):
                    break
                words.append(_ART.sub("", box.strip().strip("*")).strip())
            return " ".join(w for w in words if w)
    return None


def _failure_message(out: Path, calc, err: Exception) -> str:
    text = out.read_text(errors="replace") if out.exists() else ""
    message = abort_message(text)
    code = None
    shell = getattr(calc, "_shell", None)
    child = getattr(shell, "_child", None)
    if child is not None:
        try:
            code = child.wait(10)
        except Exception:
            code = child.poll()
    if message:
        return f"CP2K aborted: {message}"
    status = f"exit status {code}" if code is not None else "no exit status"
    if code is not None and code < 0:
        status = f"killed by signal {-code}" + (" (out of memory?)" if -code == 9 else "")
    tail = " | ".join(line.strip() for line in text.splitlines()[-3:] if line.strip())
    detail = f"{type(err).__name__}: {err}" if str(err) else f"{type(err).__name__} in ASE's CP2K shell"
    return f"CP2K stopped without results ({status}; {detail})" + (f"; output ends: {tail}" if tail else "")


def _check_scf(out: Path, max_scf: int):
    text = out.read_text(errors="replace") if out.exists() else ""
    for line in text.splitlines():
        if "SCF run NOT converged" in line:
            steps = re.findall(r"^\s+(\d+)\s+\S+\s+\S+\s+\S+\s+(\S+)\s+(-?\d+\.\d+)\s+\S+\s*$", text, re.M)
            last = f"; last step {steps[-1][0]}: convergence {steps[-1][1]}, energy {steps[-1][2]} Ha" if steps else ""
            raise SCFNotConverged(f"CP2K: {line.strip().strip('*').strip()} (max_scf {max_scf}{last})")


def _close(calc):
    """Stop the shell (EXIT, or SIGTERM when it is not ready); never raises."""
    if calc is None:
        return
    try:
        calc.close()
    except Exception:
        shell = getattr(calc, "_shell", None)
        child = getattr(shell, "_child", None)
        if child is not None and child.poll() is None:
            child.kill()


def _remove_stale_folders(scratch: Path):
    """Per-label folders of processes that no longer exist (a label killed at its timeout)."""
    for folder in scratch.glob("*-*"):
        pid = folder.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
