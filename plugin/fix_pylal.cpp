/* fix pylal: the C++ half. It owns everything LAMMPS-specific (neighbor list, reverse
   communication of ghost forces, energy/virial tally, restart files, stopping the run) and hands
   arrays to the per-rank Python engine (pylal/lammps/engine.py) without copies. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>    // first, as Python requires

#include "fix_pylal.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "pair.h"
#include "timer.h"
#include "update.h"

#include <dlfcn.h>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

using namespace LAMMPS_NS;
using namespace FixConst;

namespace {

// the fields of the engine's stat array this fix uses (their positions come from the engine)
const char *STAT_FIELDS = "size e_hal virial_xx stop messages r_cut natoms vector";

struct GilLock {    // the GIL for one scope (LAMMPS may be driven from Python or from lmp)
  PyGILState_STATE state;
  GilLock() : state(PyGILState_Ensure()) {}
  ~GilLock() { PyGILState_Release(state); }
};

bool exists(const std::string &path) { return access(path.c_str(), X_OK) == 0; }

// Python interpreter for embedding: $PYLAL_PYTHON, else the venv this plugin is installed in
// (<venv>/lib/pythonX.Y/site-packages/pylal/lammps/pylalplugin.so), else $VIRTUAL_ENV, else
// the interpreter the plugin was built with.
std::string python_executable()
{
  if (const char *env = std::getenv("PYLAL_PYTHON")) return env;
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&python_executable), &info) && info.dli_fname) {
    std::string path = info.dli_fname;
    for (int up = 0; up < 6 && !path.empty(); ++up) path = path.substr(0, path.find_last_of('/'));
    if (exists(path + "/bin/python")) return path + "/bin/python";
  }
  if (const char *venv = std::getenv("VIRTUAL_ENV"))
    if (exists(std::string(venv) + "/bin/python")) return std::string(venv) + "/bin/python";
  return PYLAL_BUILD_PYTHON;
}

// Start Python when LAMMPS runs from `lmp`; when driven from Python it is already running.
// Never finalized: numpy cannot be initialised twice in one process.
std::string ensure_python()
{
  if (Py_IsInitialized()) return "";
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 0;    // leave LAMMPS's signal handling alone
  std::string exe = python_executable();
  PyStatus status = PyConfig_SetBytesString(&config, &config.executable, exe.c_str());
  if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(status))
    return std::string("cannot start Python (") + exe + "): " + (status.err_msg ? status.err_msg : "");
  PyEval_SaveThread();    // release the GIL; every call below takes it with PyGILState_Ensure
  return "";
}

PyObject *view(const void *ptr, Py_ssize_t nbytes, bool writable)
{
  static char empty[8];    // PyMemoryView rejects NULL even for zero bytes
  char *p = (ptr && nbytes) ? const_cast<char *>(static_cast<const char *>(ptr)) : empty;
  return PyMemoryView_FromMemory(p, nbytes, writable ? PyBUF_WRITE : PyBUF_READ);
}

}    // namespace

/* ---------------------------------------------------------------------- */

FixPylal::FixPylal(LAMMPS *lmp, int narg, char **arg) :
    Fix(lmp, narg, arg), engine(nullptr), list(nullptr), r_cut(0.0), fcomm(nullptr), ncol(0),
    max_columns(0), peratom(nullptr), nmax_peratom(0)
{
  if (narg < 4) error->all(FLERR, "Illegal fix pylal command: fix ID group pylal PARAMS elements E1 ... [keyword value ...]");
  if (igroup != 0) error->all(FLERR, "fix pylal must be applied to group all (it is the potential)");
  if (!atom->tag_enable) error->all(FLERR, "fix pylal requires atom IDs");

  scalar_flag = vector_flag = 1;
  size_vector = 7;
  global_freq = 1;
  extscalar = 1;
  extvector = -1;
  extlist = new int[size_vector]{1, 1, 0, 0, 0, 0, 0};    // E, sigma extensive; tau, f, s, counts not
  peratom_flag = 1;
  size_peratom_cols = 3;
  energy_global_flag = virial_global_flag = 1;
  thermo_energy = thermo_virial = 1;    // the fix is the potential: on unless fix_modify says no
  restart_global = 1;

  std::string failure = ensure_python();
  if (!failure.empty()) error->all(FLERR, "fix pylal: {}", failure);
  // `engine MODULE:CLASS` (default pylal.lammps.engine:Engine) picks the Python engine class
  std::string module_name = "pylal.lammps.engine", class_name = "Engine";
  std::vector<std::string> engine_args;
  for (int i = 3; i < narg; ++i) {
    if (std::strcmp(arg[i], "engine") == 0 && i + 1 < narg) {
      std::string spec = arg[++i];
      auto colon = spec.find(':');
      if (colon == std::string::npos) error->all(FLERR, "fix pylal: keyword 'engine' expects MODULE:CLASS, got '{}'", spec);
      module_name = spec.substr(0, colon);
      class_name = spec.substr(colon + 1);
    } else
      engine_args.emplace_back(arg[i]);
  }
  GilLock gil;
  PyObject *module = PyImport_ImportModule(module_name.c_str());
  if (!module) python_failure(true);
  PyObject *args = PyList_New(engine_args.size());
  for (std::size_t i = 0; i < engine_args.size(); ++i)
    PyList_SET_ITEM(args, i, PyUnicode_FromString(engine_args[i].c_str()));
  PyObject *mpi = PyImport_ImportModule("mpi4py.MPI");
  if (!mpi) python_failure(true);
  PyObject *comm_class = PyObject_GetAttrString(mpi, "Comm");
  Py_DECREF(mpi);
  if (!comm_class) python_failure(true);
  PyObject *comm_py = PyObject_CallMethod(comm_class, "f2py", "i", (int) MPI_Comm_c2f(world));
  Py_DECREF(comm_class);
  if (!comm_py) python_failure(true);
  engine = PyObject_CallMethod(module, class_name.c_str(), "NNi", args, comm_py, atom->ntypes);
  Py_DECREF(module);
  if (!engine) python_failure(true);

  read_stat_layout();
  PyObject *ok = PyObject_CallMethod(engine, "describe", "N", stat_view());
  if (!ok) python_failure(true);
  Py_DECREF(ok);
  r_cut = stat[i_r_cut];
  PyObject *settings = PyObject_GetAttrString(engine, "settings");
  PyObject *every = PyObject_GetAttrString(settings, "check_every");
  peratom_freq = std::max(1L, PyLong_AsLong(every));    // f_i columns are fresh on check steps
  Py_DECREF(every);
  Py_DECREF(settings);
  log_messages();
}

FixPylal::~FixPylal()
{
  if (engine && Py_IsInitialized()) {
    GilLock gil;
    PyObject *done = PyObject_CallMethod(engine, "close", nullptr);    // flush flags to the server
    if (!done) PyErr_Print();
    Py_XDECREF(done);
    Py_DECREF(engine);
  }
  memory->destroy(peratom);
}

/* The stat layout, declared once in pylal/lammps/stat.py: its length and where our fields are. */

void FixPylal::read_stat_layout()
{
  PyObject *where = PyObject_CallMethod(engine, "stat_indices", "s", STAT_FIELDS);
  if (!where) python_failure(true);
  std::vector<long> index;
  for (Py_ssize_t i = 0; i < PySequence_Size(where); ++i) {
    PyObject *item = PySequence_GetItem(where, i);
    index.push_back(PyLong_AsLong(item));
    Py_XDECREF(item);
  }
  Py_DECREF(where);
  if (index.size() != 7 + 7 || PyErr_Occurred()) error->all(FLERR, "fix pylal: the engine's stat layout does not fit this plugin");
  stat.assign(index[0], 0.0);
  i_e_hal = index[1];
  i_virial = index[2];
  i_stop = index[3];
  i_messages = index[4];
  i_r_cut = index[5];
  i_natoms = index[6];
  for (int k = 0; k < 7; ++k) i_vector[k] = index[7 + k];
}

PyObject *FixPylal::stat_view()
{
  return view(stat.data(), sizeof(double) * stat.size(), true);
}

int FixPylal::setmask()
{
  return POST_FORCE | MIN_POST_FORCE;
}

void FixPylal::init()
{
  if (!force->pair)
    error->all(FLERR, "fix pylal needs a pair style whose cutoff covers the model ({} A), e.g. "
               "'pair_style zero {}' and 'pair_coeff * *'", r_cut, r_cut);
  if (force->pair->cutforce < r_cut)
    error->all(FLERR, "fix pylal: pair cutoff {} A is smaller than the model cutoff {} A; use e.g. "
               "'pair_style zero {}' (or hybrid/overlay with zero)", force->pair->cutforce, r_cut, r_cut);
  neighbor->add_request(this, NeighConst::REQ_FULL);
  {
    GilLock gil;    // members may change with the model: size the reverse-comm rows now
    PyObject *k = PyObject_CallMethod(engine, "max_columns", nullptr);
    if (!k) python_failure(true);
    max_columns = (int) PyLong_AsLong(k);
    Py_DECREF(k);
    // a parameter file with a LAMMPS prior needs that pair style in the deck (docs/prior.md):
    // pass the pair style and which of the engine's prior_styles() it contains; the engine decides
    PyObject *styles = PyObject_CallMethod(engine, "prior_styles", nullptr);
    if (!styles) python_failure(true);
    PyObject *found = PyList_New(0);
    for (Py_ssize_t i = 0; i < PyList_Size(styles); ++i) {
      PyObject *name = PyList_GetItem(styles, i);
      if (force->pair_match(PyUnicode_AsUTF8(name), 1, 1)) PyList_Append(found, name);
    }
    Py_DECREF(styles);
    PyObject *ok = PyObject_CallMethod(engine, "check_pair_style", "sN", force->pair_style, found);
    if (!ok) python_failure(true);
    Py_DECREF(ok);
  }
  comm_reverse = max_columns;
}

void FixPylal::init_list(int, NeighList *ptr)
{
  list = ptr;
}

void FixPylal::setup(int vflag)
{
  post_force(vflag);
}

void FixPylal::min_setup(int vflag)
{
  post_force(vflag);
}

void FixPylal::min_post_force(int vflag)
{
  post_force(vflag);
}

/* pairs (i owned, j owned or ghost) of the full list within the model cutoff; r_ij = x_j - x_i */

void FixPylal::build_pairs()
{
  double **x = atom->x;
  const int inum = list->inum;
  const double rc2 = r_cut * r_cut;
  pair_i.clear();
  pair_j.clear();
  pair_vec.clear();
  for (int ii = 0; ii < inum; ++ii) {
    const int i = list->ilist[ii];
    const int *jlist = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; ++jj) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz < rc2) {
        pair_i.push_back(i);
        pair_j.push_back(j);
        pair_vec.push_back(dx);
        pair_vec.push_back(dy);
        pair_vec.push_back(dz);
      }
    }
  }
}

void FixPylal::post_force(int vflag)
{
  v_init(vflag);
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  build_pairs();
  if (atom->nmax > nmax_peratom) {
    nmax_peratom = atom->nmax;
    memory->destroy(peratom);
    memory->create(peratom, nmax_peratom, 3, "pylal:peratom");
    array_atom = peratom;
  }
  double box[12] = {domain->boxlo[0], domain->boxlo[1], domain->boxlo[2], domain->boxhi[0],
                    domain->boxhi[1], domain->boxhi[2], domain->xy, domain->xz, domain->yz,
                    (double) domain->xperiodic, (double) domain->yperiodic, (double) domain->zperiodic};

  stat[i_natoms] = (double) atom->natoms;
  GilLock gil;
  static_assert(sizeof(tagint) == sizeof(int), "fix pylal expects 32-bit atom IDs (LAMMPS_SMALLBIG)");
  PyObject *buffer = PyObject_CallMethod(
      engine, "evaluate", "LiiNNNNNNNN", (long long) update->ntimestep, nlocal, nall,
      view(atom->x[0], sizeof(double) * 3 * nall, false), view(atom->type, sizeof(int) * nall, false),
      view(atom->tag, sizeof(tagint) * nall, false),
      view(pair_i.data(), sizeof(int) * pair_i.size(), false),
      view(pair_j.data(), sizeof(int) * pair_j.size(), false),
      view(pair_vec.data(), sizeof(double) * pair_vec.size(), false), view(box, sizeof(box), false),
      stat_view());
  if (!buffer) python_failure(false);

  Py_buffer forces;    // (nall, ncol) float64, C order, written by the reverse communication
  if (PyObject_GetBuffer(buffer, &forces, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0) python_failure(false);
  fcomm = static_cast<double *>(forces.buf);
  ncol = nall ? (int) (forces.len / ((Py_ssize_t) sizeof(double) * nall)) : 0;
  if (ncol > max_columns) error->one(FLERR, "fix pylal: engine returned {} force columns, more than {}", ncol, max_columns);
  if (ncol > 0) comm->reverse_comm(this, ncol);    // ghost rows summed onto their owners
  fcomm = nullptr;

  PyObject *stop = PyObject_CallMethod(engine, "finish", "NNN",
                                       view(atom->f[0], sizeof(double) * 3 * nlocal, true),
                                       view(peratom ? peratom[0] : nullptr, sizeof(double) * 3 * nlocal, true),
                                       stat_view());
  PyBuffer_Release(&forces);
  Py_DECREF(buffer);
  if (!stop) python_failure(false);
  Py_DECREF(stop);

  if (vflag_global)
    for (int k = 0; k < 6; ++k) virial[k] += stat[i_virial + k];
  if (stat[i_messages] > 0) log_messages();
  if (stat[i_stop] > 0) timer->force_timeout();    // ends the run cleanly, as fix halt does
}

double FixPylal::compute_scalar()
{
  return stat[i_e_hal];
}

double FixPylal::compute_vector(int n)
{
  return stat[i_vector[n]];    // E, sigma, tau, max f_i, softmax, flags, version
}

int FixPylal::pack_reverse_comm(int n, int first, double *buf)
{
  int m = 0;
  for (int i = first; i < first + n; ++i)
    for (int c = 0; c < ncol; ++c) buf[m++] = fcomm[(std::size_t) i * ncol + c];
  return m;
}

void FixPylal::unpack_reverse_comm(int n, int *list_, double *buf)
{
  int m = 0;
  for (int i = 0; i < n; ++i) {
    double *row = fcomm + (std::size_t) list_[i] * ncol;
    for (int c = 0; c < ncol; ++c) row[c] += buf[m++];
  }
}

/* restart: one blob of JSON from the engine (rank 0 writes; every rank restores) */

void FixPylal::write_restart(FILE *fp)
{
  GilLock gil;
  PyObject *blob = PyObject_CallMethod(engine, "state", nullptr);
  if (!blob) python_failure(false);
  if (comm->me == 0) {
    char *data;
    Py_ssize_t len;
    PyBytes_AsStringAndSize(blob, &data, &len);
    int64_t n = len;
    int size = (int) (sizeof(int64_t) + len);
    fwrite(&size, sizeof(int), 1, fp);
    fwrite(&n, sizeof(int64_t), 1, fp);
    fwrite(data, 1, len, fp);
  }
  Py_DECREF(blob);
}

void FixPylal::restart(char *buf)
{
  int64_t n;
  std::memcpy(&n, buf, sizeof(int64_t));
  GilLock gil;
  PyObject *ok = PyObject_CallMethod(engine, "restore", "y#", buf + sizeof(int64_t), (Py_ssize_t) n);
  if (!ok) python_failure(true);
  Py_DECREF(ok);
  log_messages();
}

double FixPylal::memory_usage()
{
  return (double) nmax_peratom * 3 * sizeof(double) +
      (double) pair_vec.capacity() * sizeof(double) + 2.0 * pair_i.capacity() * sizeof(int);
}

/* Messages the engine queued on rank 0 go to screen and log file. */

void FixPylal::log_messages()
{
  PyObject *text = PyObject_CallMethod(engine, "pop_messages", nullptr);
  if (!text) python_failure(false);
  const char *s = PyUnicode_AsUTF8(text);
  if (comm->me == 0 && s && *s) utils::logmesg(lmp, s);
  Py_DECREF(text);
}

/* A Python exception becomes a LAMMPS error. Input errors (FixArgumentError, raised the same on
   every rank) are reported with their message only; anything else also prints the traceback. */

void FixPylal::python_failure(bool all_ranks)
{
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  PyErr_NormalizeException(&type, &value, &traceback);
  std::string message = "unknown Python error";
  bool input_error = false;
  if (value) {
    PyObject *str = PyObject_Str(value);
    if (str && PyUnicode_AsUTF8(str)) message = PyUnicode_AsUTF8(str);
    Py_XDECREF(str);
    const char *name = type ? ((PyTypeObject *) type)->tp_name : "";
    input_error = std::strcmp(name, "FixArgumentError") == 0;
    if (!input_error) message = std::string(name) + ": " + message;
  }
  if (!input_error) {
    PyErr_Restore(type, value, traceback);
    PyErr_Print();
  } else {
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
  }
  if (engine) {    // the walker's exit record says why the run ended
    PyObject *done = PyObject_CallMethod(engine, "record_exit", "ss", input_error ? "input_error" : "python_error",
                                         message.c_str());
    if (!done) PyErr_Clear();
    Py_XDECREF(done);
  }
  if (all_ranks) error->all(FLERR, message);
  error->one(FLERR, message);
}
