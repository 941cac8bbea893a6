/* fix pylal: the fix itself. It owns everything LAMMPS-specific (arguments, neighbor list, reverse
   communication of ghost forces, energy/virial tally, restart files, stopping the run) and hands
   the step to the per-rank Python engine through the bridge (python_bridge.cpp): post_force
   computes, end_of_step acts (flags, trace, wait, stop); a rejected step is put back by the
   rollback (rollback.cpp). */

#include "fix_pylal.h"

#include "embed_python.h"
#include "python_bridge.h"
#include "rollback.h"

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

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

using namespace LAMMPS_NS;
using namespace FixConst;

FixPylal::FixPylal(LAMMPS *lmp, int narg, char **arg) :
    Fix(lmp, narg, arg), list(nullptr), r_cut(0.0), has_checkpoint(false), fcomm(nullptr), ncol(0), max_columns(0),
    peratom(nullptr), nmax_peratom(0)
{
  if (narg < 4) error->all(FLERR, "Illegal fix pylal command: fix ID group pylal PARAMS elements E1 ... [keyword value ...]");
  if (igroup != 0) error->all(FLERR, "fix pylal must be applied to group all (it is the potential)");
  if (!atom->tag_enable) error->all(FLERR, "fix pylal requires atom IDs");

  scalar_flag = vector_flag = 1;
  size_vector = PythonBridge::N_VECTOR;
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

  std::string failure = pylal::ensure_python();
  if (!failure.empty()) error->all(FLERR, "fix pylal: {}", failure);
  // `engine MODULE:CLASS` (default pylal.lammps.engine:Engine) picks the Python engine class;
  // every other argument is the engine's to parse
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
  engine = std::make_unique<PythonBridge>(lmp, module_name, class_name, engine_args);
  const auto &run = engine->constants();
  r_cut = run.r_cut;
  max_columns = run.max_columns;
  saved = std::make_unique<PylalRollback>(lmp, run.rollback_every, run.rollback_max, run.rollback_temp, run.seed);
  peratom_freq = std::max(1L, run.check_every);    // f_i columns are fresh on check steps
  has_checkpoint = run.checkpoint;
  engine->log_messages();
}

FixPylal::~FixPylal()
{
  engine.reset();    // engine.close(): flush flags to the server
  memory->destroy(peratom);
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
  engine->check_pair_style();
  comm_reverse = max_columns;
}

void FixPylal::init_list(int, NeighList *ptr)
{
  list = ptr;
}

void FixPylal::setup(int vflag)
{
  post_force(vflag);
  after_step();
  double &rollback = engine->stat(engine->at().rollback);
  const bool rejected = rollback != 0.0;
  rollback = 0.0;    // no rollback at set-up; a start that passes the guard is the first saved state
  if (saved->every() > 0 && !rejected) save_state();
}

void FixPylal::min_setup(int vflag)
{
  post_force(vflag);
  after_step();
}

void FixPylal::min_post_force(int vflag)    // minimizers call no end_of_step
{
  post_force(vflag);
  after_step();
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
  const int nall = atom->nlocal + atom->nghost;
  build_pairs();
  if (atom->nmax > nmax_peratom) {
    nmax_peratom = atom->nmax;
    memory->destroy(peratom);
    memory->create(peratom, nmax_peratom, 3, "pylal:peratom");
    array_atom = peratom;
  }
  const auto &at = engine->at();
  engine->stat(at.natoms) = (double) atom->natoms;
  engine->stat(at.step_length) = max_step_length();
  engine->stat(at.skin) = neighbor->skin;
  engine->stat(at.saved_step) = (double) saved->saved_step();

  fcomm = engine->evaluate(nall, pair_i, pair_j, pair_vec, ncol);
  if (ncol > max_columns) error->one(FLERR, "fix pylal: engine returned {} force columns, more than {}", ncol, max_columns);
  if (ncol > 0) comm->reverse_comm(this, ncol);    // ghost rows summed onto their owners
  fcomm = nullptr;
  engine->finish(peratom ? peratom[0] : nullptr);

  if (vflag_global)
    for (int k = 0; k < 6; ++k) virial[k] += engine->stat(at.virial + k);
  if (engine->stat(at.messages) > 0) engine->log_messages();
}

/* The engine acts on the step's decision (flag, trace, on_flag wait, stop file) outside the force
   call; a stop ends the run cleanly, as fix halt does from its end_of_step. */

void FixPylal::after_step()
{
  engine->end_of_step();
  if (engine->stat(engine->at().messages) > 0) engine->log_messages();
  if (engine->stat(engine->at().stop) > 0) timer->force_timeout();
}

/* The guard's input: max_i |v_i| dt. In post_force, v is the half-step velocity that moved x in
   this step's initial_integrate, so this is max_i |x_i(t) - x_i(t - dt)| for velocity-Verlet
   integrators. */

double FixPylal::max_step_length()
{
  double **v = atom->v;
  double v2 = 0.0;
  for (int i = 0; i < atom->nlocal; ++i) v2 = std::max(v2, v[i][0] * v[i][0] + v[i][1] * v[i][1] + v[i][2] * v[i][2]);
  return std::sqrt(v2) * update->dt;
}

/* After final_integrate the state (x, v, f, image, box) is complete: the engine acts on this
   step's decision first (a flag is sent before any rollback), then the guard's verdict of
   post_force (stat rollback: 1 rejected, -1 rejected with nothing to restore) is acted on. A
   rejected step is replaced by the saved state; a good one that is a multiple of rollback_every
   is saved (and checkpointed on check steps). */

void FixPylal::end_of_step()
{
  after_step();
  double &rollback = engine->stat(engine->at().rollback);
  if (rollback > 0) {
    rollback = 0.0;
    if (saved->restore()) next_reneighbor = update->ntimestep + 1;
    return;
  }
  if (rollback < 0 || !saved->due(update->ntimestep)) return;
  saved->save();
  if (has_checkpoint && update->ntimestep % peratom_freq == 0) engine->checkpoint();
}

void FixPylal::save_state()
{
  saved->save();
  if (has_checkpoint) engine->checkpoint();
}

double FixPylal::compute_scalar()
{
  return engine->stat(engine->at().e_hal);
}

double FixPylal::compute_vector(int n)
{
  return engine->stat(engine->at().vector[n]);    // E, sigma, tau, max f_i, softmax, flags, version, rollbacks
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

void FixPylal::write_restart(FILE *fp)
{
  engine->write_restart(fp);
}

void FixPylal::restart(char *buf)
{
  engine->restart(buf);
}

double FixPylal::memory_usage()
{
  return (double) nmax_peratom * 3 * sizeof(double) + (double) pair_vec.capacity() * sizeof(double) +
      2.0 * pair_i.capacity() * sizeof(int) + saved->memory_usage();
}
