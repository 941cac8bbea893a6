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
  double compute_scalar() override;
  double compute_vector(int) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;
  void write_restart(FILE *) override;
  void restart(char *) override;
  double memory_usage() override;

  static constexpr int NSTAT = 24;    // layout: STAT_* in pylal/lammps/engine.py

 private:
  PyObject *engine;
  class NeighList *list;
  double stat[NSTAT];
  double r_cut;
  double *fcomm;    // (nall, ncol) forces being reverse-communicated; memory owned by Python
  int ncol;
  int max_columns;    // 6 + 3K: largest row the engine sends (sizes LAMMPS's comm buffers)
  double **peratom;
  int nmax_peratom;
  std::vector<int> pair_i, pair_j;
  std::vector<double> pair_vec;

  void build_pairs();
  void python_failure(bool all_ranks);
  void log_messages();
};

}    // namespace LAMMPS_NS

#endif
