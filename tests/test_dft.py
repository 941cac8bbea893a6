"""DFT in the loop with the real code: the `cp2k` reference (pylal/reference/cp2k.py, docs/dft.md) and
Debian's CP2K, which `make test` installs. Minimal settings (8-atom Si at the Gamma point, SZV basis,
60 Ry): a label by the refit server equals a direct call of ASE's CP2K calculator; an SCF that cannot
converge, a CP2K abort and a label past its timeout are recorded as failed with CP2K's own message and
never fitted. If CP2K is missing these tests fail (they do not skip): `make test` installs it."""
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.cp2k import CP2K

sys.path.insert(0, str(Path(__file__).parent / "server"))
from cp2k_cases import TINY  # noqa: E402
from helpers import HERE, ROOT, ThreadServer, si_cell, wait_until, write_config  # noqa: E402

from pylal.model.params import Parameters  # noqa: E402
from pylal.reference import label, make_calculator  # noqa: E402
from pylal.reference.cp2k import CP2KReference, abort_message  # noqa: E402
from pylal.server.client import Client  # noqa: E402

os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])


def require_cp2k():
    assert shutil.which("cp2k_shell"), ("CP2K is not installed (cp2k_shell not on PATH): `make test` installs it "
                                        "as root (apt-get install cp2k cp2k-data); see docs/dft.md")


def direct_ase(atoms, ref: CP2KReference, folder: Path):
    """The same label computed by ASE's CP2K calculator directly, with the reference's documented input."""
    work = ref.input_atoms(atoms)
    folder.mkdir()
    calc = CP2K(command=ref.shell_command(folder), label="cp2k", **ref.ase_parameters(work))
    try:
        work.calc = calc
        return work.get_potential_energy(), work.get_forces(), work.get_stress() if work.pbc.all() else None
    finally:
        calc.close()


def session_members(sid: int) -> list[str]:
    """Names of live processes in session `sid` (a label worker runs in its own session)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(stat.parent.name)
    return out


@pytest.mark.slow
def test_server_labels_with_cp2k_as_ase_does_and_records_its_failures(tmp_path):
    """One server, one worker, the `module:factory` reference tests/server/cp2k_cases.py: 8 atoms label
    normally; 3: SCF not converged; 4: CP2K aborts; 5: runs past the 20 s timeout (killed with CP2K)."""
    require_cp2k()
    scratch = tmp_path / "scratch"
    ref = CP2KReference(**TINY, scratch=str(scratch))
    initial = [label(si_cell(100 + s), ref) for s in range(3)]
    assert all(r.ok for r in initial), [r.message for r in initial if not r.ok]
    run = tmp_path / "run"
    run.mkdir()
    from ase.io import write
    write(run / "initial.xyz", [r.atoms for r in initial])
    cfg = write_config(run, initial=0, fit={"initial_data": ["initial.xyz"]},
                       reference={"calculator": "cp2k_cases:make", "options": {"scratch": str(scratch)}},
                       executor={"workers": 1, "timeout": 20.0, "retries": 0})
    cells = [si_cell(1), si_cell(2, n_atoms=3), si_cell(3, n_atoms=4), si_cell(4, n_atoms=5), si_cell(5)]
    with ThreadServer(cfg) as ts:
        wait_until(lambda: ts.server.versions.current() is not None, 120, what="version 1")
        workers = [w.proc.pid for w in ts.server.executor.workers]
        client = Client(ts.address, token=ts.key, walker="dft", spool_dir=tmp_path / "spool")
        try:
            for i, atoms in enumerate(cells):
                client.send_flag(atoms, {"step": i, "f_max": 0.5})
            assert client.flush(20)
        finally:
            client.close()
        store = ts.server.store
        wait_until(lambda: store.counts()["labeled"] + store.counts()["failed"] == len(cells), 150,
                   what="every flag labelled or failed")
        last = max(r.id for r in store.rows("labeled"))
        wait_until(lambda: ts.server.versions.current().get("last_row") == last, 60, what="refit of the labels")
        counts = store.counts()
        assert counts["labeled"] == 2 and counts["failed"] == 3, counts
        errors = {r.natoms: r.error for r in store.rows("failed")}
        assert errors[3].startswith("SCFNotConverged: CP2K:") and "SCF run NOT converged" in errors[3], errors[3]
        assert "max_scf 2" in errors[3]
        assert errors[4].startswith("CP2KError: CP2K aborted:") and "NO-SUCH-BASIS" in errors[4], errors[4]
        assert errors[5].startswith("Timeout: no result after 20 s"), errors[5]
        # the timed-out worker's CP2K died with it; every label's scratch folder is gone
        assert [session_members(pid) for pid in workers] == [[]]
        assert list(scratch.iterdir()) == []
        # the server's label is what ASE's CP2K calculator gives directly (same input, fresh shell)
        for row in store.rows("labeled"):
            atoms = store.get_atoms(row.id)
            e, f, s = direct_ase(atoms, ref, tmp_path / f"direct{row.id}")
            assert abs(atoms.get_potential_energy() - e) < 1e-8
            np.testing.assert_allclose(atoms.get_forces(), f, rtol=0, atol=1e-8)
            np.testing.assert_allclose(atoms.get_stress(), s, rtol=0, atol=1e-8)
            assert np.abs(f).max() > 0.1  # rattled: real forces
        # failures are never fitted: the newest version has the initial set and the two labels only
        params = Parameters.load(ts.cfg.run_dir / ts.server.versions.current()["file"])
        assert params.hyper["n_configs"] == 3 + 2


@pytest.mark.slow
def test_cp2k_killed_mid_label(tmp_path):
    """CP2K killed by SIGKILL during its SCF (what the kernel's out-of-memory killer does): a CP2KError
    with the signal, not numbers; the label's folder is removed."""
    require_cp2k()
    killer = "sh -c '(sleep 1.5; kill -9 $$) & exec cp2k_shell'"  # exec: cp2k_shell gets the shell's pid
    ref = make_calculator("cp2k", **dict(TINY, kpts=[3, 3, 3], cutoff=150.0), command=killer,
                          scratch=str(tmp_path / "scratch"))
    failure = label(si_cell(7), ref)
    assert not failure.ok and failure.error_type == "CP2KError", failure
    assert "CP2K stopped without results (killed by signal 9" in failure.message, failure.message
    assert list((tmp_path / "scratch").iterdir()) == []


@pytest.mark.slow
def test_molecule_in_vacuum_box_matches_ase(tmp_path):
    """A molecule (pbc False): centred in `vacuum`, Gamma only, no smearing, no stress; translating it
    changes nothing; the label is ASE's CP2K result."""
    require_cp2k()
    ref = make_calculator("cp2k", **TINY, vacuum=3.0, scratch=str(tmp_path / "scratch"))
    h2 = molecule("H2")
    h2.positions[1, 2] += 0.1  # off equilibrium (at 60 Ry, H is far from converged: the sign is not tested)
    result = label(h2, ref)
    assert result.ok, result.message
    assert "stress" not in result.results
    forces = result.results["forces"]
    assert abs(forces[1, 2]) > 0.1 and abs(forces.sum(axis=0)).max() < 0.05 * abs(forces[1, 2])  # along the bond
    e, f, _ = direct_ase(h2, ref, tmp_path / "direct")
    assert abs(result.results["energy"] - e) < 1e-8
    np.testing.assert_allclose(forces, f, rtol=0, atol=1e-8)
    moved = h2.copy()
    moved.translate([7.0, -3.0, 11.0])
    assert label(moved, ref).results["energy"] == pytest.approx(e, abs=1e-8)  # same centred box


def test_settings_per_configuration(tmp_path):
    """k-points from the cell (ASE kptdensity2monkhorstpack), smearing only for periodic
    cells, clear errors for bad options and partially periodic cells."""
    require_cp2k()
    ref = CP2KReference(scratch=str(tmp_path))
    si8 = bulk("Si", cubic=True)
    assert ref.kpoints(si8) == [3, 3, 3]
    assert ref.kpoints(si8.repeat((2, 2, 2))) == [2, 2, 2]
    assert ref.kpoints(si8.repeat((4, 4, 1))) == [1, 1, 3]
    assert CP2KReference(kpts=[2, 2, 2], scratch=str(tmp_path)).kpoints(si8) == [2, 2, 2]
    inp = ref.ase_parameters(si8)["inp"]
    assert "MONKHORST-PACK 3 3 3" in inp and "FERMI_DIRAC" in inp and "ADDED_MOS 8" in inp
    water = ref.input_atoms(molecule("H2O"))
    params = ref.ase_parameters(water)
    assert "KPOINTS" not in params["inp"] and "SMEAR" not in params["inp"] and not params["stress_tensor"]
    assert water.cell.lengths().min() >= 12.0  # 6 A vacuum each side (flat H2O: 0 + 12 A along x)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['cutof'\].*cutoff"):
        CP2KReference(cutof=100)
    with pytest.raises(ValueError, match="kpts"):
        CP2KReference(kpts=[2, 2])
    with pytest.raises(FileNotFoundError, match="no-such-cp2k.*apt-get install cp2k"):
        CP2KReference(command="no-such-cp2k")
    slab = si8.copy()
    slab.pbc = (True, True, False)
    with pytest.raises(ValueError, match="partially periodic"):
        ref.input_atoms(slab)


def test_abort_message():
    """CP2K's [ABORT] box becomes one line (the message and where CP2K stopped)."""
    out = """
 *******************************************************************************
 *   ___                                                                       *
 *  /   \\                                                                      *
 * [ABORT]                                                                     *
 *  \\___/     The requested basis set <NOSUCH> for element <Si> was not found  *
 *    |                 in the basis set files <BASIS_MOLOPT>                  *
 *  O/|                                                                        *
 * /| |                                                                        *
 * / \\                                          aobasis/basis_set_types.F:1509 *
 *******************************************************************************
"""
    assert abort_message(out) == ("The requested basis set <NOSUCH> for element <Si> was not found in the basis "
                                  "set files <BASIS_MOLOPT> aobasis/basis_set_types.F:1509")
    assert abort_message("no abort here") is None
