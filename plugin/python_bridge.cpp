/* The Python bridge of fix pylal (see python_bridge.h). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>    // first, as Python requires

#include "python_bridge.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "pair.h"
#include "update.h"

#include <cstdint>
#include <cstring>

using namespace LAMMPS_NS;

namespace {

// the fields of the engine's stat array the plugin uses (their positions come from the engine)
const char *STAT_FIELDS = "size e_hal virial_xx stop messages natoms step_length skin saved_step rollback vector";
const int N_STAT_FIELDS = 10;

struct GilLock {    // the GIL for one scope (LAMMPS may be driven from Python or from lmp)
  PyGILState_STATE state;
  GilLock() : state(PyGILState_Ensure()) {}
  ~GilLock() { PyGILState_Release(state); }
};

// a number of the engine's describe() dict (a Python error is set when it is missing)
double number(PyObject *dict, const char *key)
{
  PyObject *value = PyDict_GetItemString(dict, key);    // borrowed
  if (!value) {
    PyErr_Format(PyExc_KeyError, "fix pylal: the engine's describe() lacks '%s'", key);
    return 0.0;
  }
  return PyFloat_AsDouble(value);    // also takes int and bool
}

PyObject *view(const void *ptr, Py_ssize_t nbytes, bool writable)
{
  static char empty[8];    // PyMemoryView rejects NULL even for zero bytes
  char *p = (ptr && nbytes) ? const_cast<char *>(static_cast<const char *>(ptr)) : empty;
  return PyMemoryView_FromMemory(p, nbytes, writable ? PyBUF_WRITE : PyBUF_READ);
}

}    // namespace

struct PythonBridge::Pending {
  PyObject *object = nullptr;
  Py_buffer forces{};
};

PythonBridge::PythonBridge(LAMMPS *lmp, const std::string &module_name, const std::string &class_name,
                           const std::vector<std::string> &engine_args) :
    Pointers(lmp), engine(nullptr), at_{}, pending(new Pending)
{
  GilLock gil;
  PyObject *module = PyImport_ImportModule(module_name.c_str());
  if (!module) failure(true);
  PyObject *args = PyList_New(engine_args.size());
  for (std::size_t i = 0; i < engine_args.size(); ++i)
    PyList_SET_ITEM(args, i, PyUnicode_FromString(engine_args[i].c_str()));
  PyObject *mpi = PyImport_ImportModule("mpi4py.MPI");
  if (!mpi) failure(true);
  PyObject *comm_class = PyObject_GetAttrString(mpi, "Comm");
  Py_DECREF(mpi);
  if (!comm_class) failure(true);
  PyObject *comm_py = PyObject_CallMethod(comm_class, "f2py", "i", (int) MPI_Comm_c2f(world));
  Py_DECREF(comm_class);
  if (!comm_py) failure(true);
  engine = PyObject_CallMethod(module, class_name.c_str(), "NNi", args, comm_py, atom->ntypes);
  Py_DECREF(module);
  if (!engine) failure(true);

  read_stat_layout();
  read_constants();
}

PythonBridge::~PythonBridge()
{
  if (engine && Py_IsInitialized()) {
    GilLock gil;
    PyObject *done = PyObject_CallMethod(engine, "close", nullptr);    // flush flags to the server
    if (!done) PyErr_Print();
    Py_XDECREF(done);
    Py_DECREF(engine);
  }
}

/* The stat layout, declared once in pylal/lammps/stat.py: its length and where our fields are. */

void PythonBridge::read_stat_layout()
{
  PyObject *where = PyObject_CallMethod(engine, "stat_indices", "s", STAT_FIELDS);
  if (!where) failure(true);
  std::vector<long> index;
  for (Py_ssize_t i = 0; i < PySequence_Size(where); ++i) {
    PyObject *item = PySequence_GetItem(where, i);
    index.push_back(PyLong_AsLong(item));
    Py_XDECREF(item);
  }
  Py_DECREF(where);
  if ((int) index.size() != N_STAT_FIELDS + N_VECTOR || PyErr_Occurred())
    error->all(FLERR, "fix pylal: the engine's stat layout does not fit this plugin (reinstall pylal)");
  stat_.assign(index[0], 0.0);
  int *fields[] = {&at_.e_hal, &at_.virial, &at_.stop, &at_.messages, &at_.natoms, &at_.step_length,
                   &at_.skin, &at_.saved_step, &at_.rollback};
  for (int k = 0; k < N_STAT_FIELDS - 1; ++k) *fields[k] = (int) index[1 + k];
  for (int k = 0; k < N_VECTOR; ++k) at_.vector[k] = (int) index[N_STAT_FIELDS + k];
}

/* The run's constants: one dict from engine.describe(), read once. */

void PythonBridge::read_constants()
{
  PyObject *d = PyObject_CallMethod(engine, "describe", nullptr);
  if (!d) failure(true);
  if (!PyDict_Check(d)) {
    Py_DECREF(d);
    error->all(FLERR, "fix pylal: the engine's describe() must return a dict (reinstall pylal)");
  }
  auto get = [&](const char *key) {
    const double x = number(d, key);
    if (PyErr_Occurred()) {
      Py_DECREF(d);
      failure(true);
    }
    return x;
  };
  constants_.r_cut = get("r_cut");
  constants_.max_columns = (int) get("max_columns");
  constants_.check_every = (long) get("check_every");
  constants_.checkpoint = get("checkpoint") != 0.0;
  constants_.rollback_every = (int) get("rollback_every");
  constants_.rollback_max = (int) get("rollback_max");
  constants_.rollback_temp = get("rollback_temp");
  constants_.seed = (long) get("seed");
  Py_DECREF(d);
}

PyObject *PythonBridge::stat_view()
{
  return view(stat_.data(), sizeof(double) * stat_.size(), true);
}

// a parameter file with a LAMMPS prior needs that pair style in the deck (docs/prior.md): pass the
// pair style and which of the engine's prior_styles() it contains; the engine decides
void PythonBridge::check_pair_style()
{
  GilLock gil;
  PyObject *styles = PyObject_CallMethod(engine, "prior_styles", nullptr);
  if (!styles) failure(true);
  PyObject *found = PyList_New(0);
  for (Py_ssize_t i = 0; i < PyList_Size(styles); ++i) {
    PyObject *name = PyList_GetItem(styles, i);
    if (force->pair_match(PyUnicode_AsUTF8(name), 1, 1)) PyList_Append(found, name);
  }
  Py_DECREF(styles);
  PyObject *ok = PyObject_CallMethod(engine, "check_pair_style", "sN", force->pair_style, found);
  if (!ok) failure(true);
  Py_DECREF(ok);
}

void PythonBridge::box(double *b)
{
  const double values[12] = {domain->boxlo[0], domain->boxlo[1], domain->boxlo[2], domain->boxhi[0],
                             domain->boxhi[1], domain->boxhi[2], domain->xy, domain->xz, domain->yz,
                             (double) domain->xperiodic, (double) domain->yperiodic, (double) domain->zperiodic};
  std::memcpy(b, values, sizeof(values));
}

double *PythonBridge::evaluate(int nall, const std::vector<int> &pair_i, const std::vector<int> &pair_j,
                               const std::vector<double> &pair_vec, int &ncol)
{
  static_assert(sizeof(tagint) == sizeof(int), "fix pylal expects 32-bit atom IDs (LAMMPS_SMALLBIG)");
  double b[12];
  box(b);
  GilLock gil;
  PyObject *buffer = PyObject_CallMethod(
      engine, "evaluate", "LiiNNNNNNNN", (long long) update->ntimestep, atom->nlocal, nall,
      view(atom->x[0], sizeof(double) * 3 * nall, false), view(atom->type, sizeof(int) * nall, false),
      view(atom->tag, sizeof(tagint) * nall, false), view(pair_i.data(), sizeof(int) * pair_i.size(), false),
      view(pair_j.data(), sizeof(int) * pair_j.size(), false),
      view(pair_vec.data(), sizeof(double) * pair_vec.size(), false), view(b, sizeof(b), false), stat_view());
  if (!buffer) failure(false);
  pending->object = buffer;
  // (nall, ncol) float64, C order, written by the reverse communication
  if (PyObject_GetBuffer(buffer, &pending->forces, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0) failure(false);
  ncol = nall ? (int) (pending->forces.len / ((Py_ssize_t) sizeof(double) * nall)) : 0;
  return static_cast<double *>(pending->forces.buf);
}

void PythonBridge::finish(double *peratom)
{
  const int nlocal = atom->nlocal;
  GilLock gil;
  PyObject *done = PyObject_CallMethod(engine, "finish", "NNN", view(atom->f[0], sizeof(double) * 3 * nlocal, true),
                                       view(peratom, sizeof(double) * 3 * nlocal, true), stat_view());
  if (pending->object) {
    PyBuffer_Release(&pending->forces);
    Py_DECREF(pending->object);
    pending->object = nullptr;
  }
  if (!done) failure(false);
  Py_DECREF(done);
}

void PythonBridge::end_of_step()
{
  GilLock gil;
  PyObject *done = PyObject_CallMethod(engine, "end_of_step", "N", stat_view());
  if (!done) failure(false);
  Py_DECREF(done);
}

void PythonBridge::checkpoint()
{
  if (!atom->mass) error->all(FLERR, "fix pylal: 'checkpoint' needs per-type masses");
  const int n = atom->nlocal;
  std::vector<int> image(3 * (size_t) n);
  for (int i = 0; i < n; ++i) {
    const imageint img = atom->image[i];
    image[3 * i] = (int) ((img & IMGMASK) - IMGMAX);
    image[3 * i + 1] = (int) ((img >> IMGBITS & IMGMASK) - IMGMAX);
    image[3 * i + 2] = (int) ((img >> IMG2BITS) - IMGMAX);
  }
  double b[12];
  box(b);
  GilLock gil;
  PyObject *ok = PyObject_CallMethod(
      engine, "checkpoint", "LiNNNNNNN", (long long) update->ntimestep, n, view(atom->tag, sizeof(tagint) * n, false),
      view(atom->type, sizeof(int) * n, false), view(n ? atom->x[0] : nullptr, sizeof(double) * 3 * n, false),
      view(n ? atom->v[0] : nullptr, sizeof(double) * 3 * n, false),
      view(image.data(), sizeof(int) * image.size(), false), view(b, sizeof(b), false),
      view(atom->mass, sizeof(double) * (atom->ntypes + 1), false));
  if (!ok) failure(false);
  Py_DECREF(ok);
}

/* restart: one blob of JSON from the engine (rank 0 writes; every rank restores) */

void PythonBridge::write_restart(FILE *fp)
{
  GilLock gil;
  PyObject *blob = PyObject_CallMethod(engine, "state", nullptr);
  if (!blob) failure(false);
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

void PythonBridge::restart(char *buf)
{
  int64_t n;
  std::memcpy(&n, buf, sizeof(int64_t));
  {
    GilLock gil;
    PyObject *ok = PyObject_CallMethod(engine, "restore", "y#", buf + sizeof(int64_t), (Py_ssize_t) n);
    if (!ok) failure(true);
    Py_DECREF(ok);
  }
  log_messages();
}

void PythonBridge::log_messages()
{
  GilLock gil;
  PyObject *text = PyObject_CallMethod(engine, "pop_messages", nullptr);
  if (!text) failure(false);
  const char *s = PyUnicode_AsUTF8(text);
  if (comm->me == 0 && s && *s) utils::logmesg(lmp, s);
  Py_DECREF(text);
}

/* A Python exception becomes a LAMMPS error (the GIL is held). Input errors (FixArgumentError,
   raised the same on every rank) are reported with their message only; anything else also prints
   the traceback. */

void PythonBridge::failure(bool all_ranks)
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
