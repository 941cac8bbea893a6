/* fix pylal: committee potential + hyperactive-learning bias, evaluated by pylal's Python engine.
   See docs/fix_pylal.md for the syntax; pylal/lammps/engine.py for what happens each step. */
#ifndef LMP_FIX_PYLAL_H
#define LMP_FIX_PYLAL_H

#include "fix.h"

#include <string>
#include <vector>

typedef struct _object PyObject;    // Python.h stays in the .cpp

namespace LAMMPS_NS {

class FixPylal : public Fix {
 public:
  FixPylal(class LAMMPS *, int, char **);
  ~FixPylal() override;
  int setmask() override;
  void init() override;
  void init_list(int, class NeighList *) override;
  void setup(int) override;
  void min_setup(int) override;
  void post_force(int) override;
  void min_post_force(int) override;
  void end_of_step() override;
  double compute_scalar() override;
  double compute_vector(int) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;
  void write_restart(FILE *) override;
  void restart(char *) override;
  double memory_usage() override;

 private:
  PyObject *engine;
  class NeighList *list;
  std::vector<double> stat;    // per-step scalars; layout declared in pylal/lammps/stat.py
  int i_e_hal, i_virial, i_stop, i_messages, i_r_cut, i_natoms;    // positions in stat, from Python
  int i_step_length, i_skin, i_saved_step, i_rollback, i_rollback_every, i_rollback_max, i_rollback_temp, i_seed;
  int i_vector[8];    // the global vector's entries (E, sigma, tau, max f_i, softmax, flags, version, rollbacks)
  double r_cut;
  double *fcomm;    // (nall, ncol) forces being reverse-communicated; memory owned by Python
  int ncol;
  int max_columns;    // 6 + 3K: largest row the engine sends (sizes LAMMPS's comm buffers)
  double **peratom;
  int nmax_peratom;
  std::vector<int> pair_i, pair_j;
  std::vector<double> pair_vec;

  // rollback (docs/fix_pylal.md "Guard and rollback"): the last good state of this rank's owned atoms
  int rollback_every;    // steps between saves; 0: nothing is saved (guard or rollback off)
  int rollback_max;      // rollbacks in a row to one saved state before LAMMPS stops
  double rollback_temp;  // K of the redrawn velocities; 0: the thermostat's target
  long seed;
  bool has_checkpoint;   // `checkpoint FILE` given: the engine writes the saved state on check steps
  bigint saved_step;     // -1: nothing saved yet
  int rollbacks_in_a_row, n_rollbacks;
  std::vector<tagint> saved_tag;
  std::vector<double> saved_x, saved_v, saved_f;
  std::vector<imageint> saved_image;
  double saved_box[9];    // boxlo, boxhi, xy, xz, yz

  double max_step_length();
  void save_state();
  void rollback();
  void restore_box();
  void migrate_atoms(bool box_changed);
  void redraw_velocities(double temperature);
  double target_temperature(const std::vector<double> &v_all, const std::vector<tagint> &tag_all);
  void write_checkpoint();

  void build_pairs();
  void read_stat_layout();
  PyObject *stat_view();
  void python_failure(bool all_ranks);
  void log_messages();
};

}    // namespace LAMMPS_NS

#endif
