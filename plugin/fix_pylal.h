/* fix pylal: committee potential + hyperactive-learning bias, evaluated by pylal's Python engine.
   See docs/fix_pylal.md for the syntax; pylal/lammps/engine.py for what happens each step.
   This file is the fix itself (arguments, LAMMPS callbacks); python_bridge.h calls the engine,
   rollback.h saves and restores states, embed_python.h starts Python (plugin/README.md). */
#ifndef LMP_FIX_PYLAL_H
#define LMP_FIX_PYLAL_H

#include "fix.h"

#include <memory>
#include <vector>

namespace LAMMPS_NS {

class PythonBridge;
class PylalRollback;

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
  std::unique_ptr<PythonBridge> engine;
  std::unique_ptr<PylalRollback> saved;    // rollback (docs/fix_pylal.md "Guard and rollback")
  class NeighList *list;
  double r_cut;
  bool has_checkpoint;    // `checkpoint FILE` given: the engine writes the saved state on check steps
  double *fcomm;          // (nall, ncol) forces being reverse-communicated; memory owned by Python
  int ncol;
  int max_columns;        // 6 + 3K: largest row the engine sends (sizes LAMMPS's comm buffers)
  double **peratom;
  int nmax_peratom;
  std::vector<int> pair_i, pair_j;
  std::vector<double> pair_vec;

  double max_step_length();
  void after_step();    // engine.end_of_step, its messages, and a stop
  void build_pairs();
  void save_state();
};

}    // namespace LAMMPS_NS

#endif
