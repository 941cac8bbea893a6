/* Rollback for fix pylal (docs/fix_pylal.md "Guard and rollback"): the last good state of this
   rank's owned atoms (x, v, f, image, box), and putting it back when the guard rejects a step:
   gather every rank's saved state, write it into the atoms each rank owns now, restore the box,
   migrate atoms to the ranks that own their positions, redraw velocities. */
#ifndef PYLAL_ROLLBACK_H
#define PYLAL_ROLLBACK_H

#include "pointers.h"

#include <vector>

namespace LAMMPS_NS {

class PylalRollback : protected Pointers {
 public:
  // every: steps between saves (0: nothing is saved); max: rollbacks in a row to one saved state
  // before LAMMPS stops; temperature: K of the redrawn velocities (0: the thermostat's target);
  // seed: of the redrawn velocities
  PylalRollback(class LAMMPS *, int every, int max, double temperature, long seed);

  int every() const { return every_; }
  bigint saved_step() const { return saved_step_; }    // -1: nothing saved yet
  bool due(bigint step) const { return every_ > 0 && step % every_ == 0; }
  void save();       // the current owned atoms and box become the saved state
  bool restore();    // false: nothing saved yet (nothing done); else the next step must reneighbor
  double memory_usage() const;

 private:
  int every_, max_;
  double temperature_;
  long seed_;
  bigint saved_step_;
  int in_a_row, n_rollbacks;
  std::vector<tagint> saved_tag;
  std::vector<double> saved_x, saved_v, saved_f;
  std::vector<imageint> saved_image;
  double saved_box[9];    // boxlo, boxhi, xy, xz, yz

  void restore_box();
  void migrate_atoms(bool box_changed);
  void redraw_velocities(double temperature);
  double target_temperature(const std::vector<double> &v_all, const std::vector<tagint> &tag_all);
};

}    // namespace LAMMPS_NS

#endif
