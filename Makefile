# `make demo` and `make test` each create .venv and install everything they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# One thread per process: BLAS/OpenMP/XLA threads oversubscribe small machines under mpirun.
export OMP_NUM_THREADS := 1
export OPENBLAS_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export XLA_FLAGS := --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1

.PHONY: demo test install dft clean

$(STAMP): pyproject.toml CMakeLists.txt $(shell find pylal plugin -type f -not -path '*/__pycache__/*' 2>/dev/null)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet ".[test,xtb]"
	touch $(STAMP)

install: $(STAMP)

# Debian's LAMMPS (PYTHON package, no PLUGIN) runs tests/test_python_invoke.py (docs/python_invoke.md)
DEBIAN_LMP := /usr/bin/lmp
$(DEBIAN_LMP):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    lammps python3-lammps python3-mpi4py; \
	else echo "note: $@ missing; tests/test_python_invoke.py needs (as root): apt-get install lammps python3-lammps python3-mpi4py"; fi

# Debian's CP2K (DFT reference `cp2k`, docs/dft.md) and its basis sets/pseudopotentials: tests/test_dft.py,
# inputs/dft, benchmarks/dft_campaign.py. `make dft` installs it alone.
CP2K_SHELL := /usr/bin/cp2k_shell
$(CP2K_SHELL):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    cp2k cp2k-data; \
	else echo "note: $@ missing; tests/test_dft.py needs (as root): apt-get install cp2k cp2k-data"; fi

dft: $(STAMP) $(CP2K_SHELL)

demo: $(STAMP)
	$(VENV)/bin/pylal campaign inputs/si/campaign.toml

test: $(STAMP) $(DEBIAN_LMP) $(CP2K_SHELL)
	$(PY) -m pytest -q --durations=25 tests

clean:
	rm -rf $(VENV) build
