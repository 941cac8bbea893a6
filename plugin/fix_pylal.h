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

 private:
  PyObject *engine;
  class NeighList *list;
  std::vector<double> stat;    // per-step scalars; layout declared in pylal/lammps/stat.py
  int i_e_hal, i_virial, i_stop, i_messages, i_r_cut, i_natoms;    // positions in stat, from Python
  int i_vector[7];    // the global vector's entries (E, sigma, tau, max f_i, softmax, flags, version)
  double r_cut;
  double *fcomm;    // (nall, ncol) forces being reverse-communicated; memory owned by Python
  int ncol;
  int max_columns;    // 6 + 3K: largest row the engine sends (sizes LAMMPS's comm buffers)
  double **peratom;
  int nmax_peratom;
  std::vector<int> pair_i, pair_j;
  std::vector<double> pair_vec;

  void build_pairs();
  void read_stat_layout();
  PyObject *stat_view();
  void python_failure(bool all_ranks);
  void log_messages();
};

}    // namespace LAMMPS_NS

#endif
