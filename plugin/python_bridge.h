/* The Python bridge of fix pylal: every call into the per-rank engine (pylal/lammps/engine.py),
   each under the GIL; LAMMPS's arrays go to it as memoryviews, without copies; the run's constants
   come once from engine.describe(), the per-step scalars in `stat` (layout declared in
   pylal/lammps/stat.py); a Python exception becomes a LAMMPS error. Python.h stays in the .cpp. */
#ifndef PYLAL_PYTHON_BRIDGE_H
#define PYLAL_PYTHON_BRIDGE_H

#include "pointers.h"

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

typedef struct _object PyObject;

namespace LAMMPS_NS {

class PythonBridge : protected Pointers {
 public:
  // positions in stat of the fields the plugin uses (from the engine's stat_indices)
  struct Fields {
    int e_hal, virial, stop, messages, natoms, step_length, skin, saved_step, rollback;
    int vector[8];    // the fix's global vector (E, sigma, tau, max f_i, softmax, flags, version, rollbacks)
  };
  static constexpr int N_VECTOR = 8;
  // the run's constants (engine.describe())
  struct Constants {
    double r_cut;           // model cutoff (A)
    int max_columns;        // 6 + 3K: widest force row the engine returns
    long check_every;       // steps between f_i checks
    bool checkpoint;        // `checkpoint FILE` given
    int rollback_every;     // steps between saves of the good state (0: none)
    int rollback_max;       // rollbacks in a row before LAMMPS stops
    double rollback_temp;   // K of redrawn velocities (0: the thermostat's)
    long seed;
  };

  // imports MODULE, builds CLASS(args, comm, ntypes) on this rank and has it describe itself
  PythonBridge(class LAMMPS *, const std::string &module, const std::string &cls, const std::vector<std::string> &args);
  ~PythonBridge() override;    // engine.close(): flushes flags to the server

  double &stat(int index) { return stat_[index]; }
  const Fields &at() const { return at_; }
  const Constants &constants() const { return constants_; }

  void check_pair_style();  // the engine judges the deck's pair style (a LAMMPS prior must be in it)

  // engine.evaluate: returns the (nall, ncol) float64 rows (owned by Python) that the fix
  // reverse-communicates, valid until finish()
  double *evaluate(int nall, const std::vector<int> &pair_i, const std::vector<int> &pair_j,
                   const std::vector<double> &pair_vec, int &ncol);
  // engine.finish: adds the forces onto f, fills peratom (nlocal, 3) and stat; computes only
  void finish(double *peratom);
  // engine.end_of_step: acts on finish's decision (flag, trace, wait, stop file); sets stat stop
  void end_of_step();
  // the current owned atoms to engine.checkpoint (which writes a data file when it is time)
  void checkpoint();

  void write_restart(FILE *fp);    // engine.state(): one blob, written by rank 0
  void restart(char *buf);         // engine.restore(blob), on every rank
  void log_messages();             // messages the engine queued on rank 0, to screen and log

 private:
  PyObject *engine;
  std::vector<double> stat_;
  Fields at_;
  Constants constants_;
  struct Pending;    // the buffer between evaluate and finish
  std::unique_ptr<Pending> pending;

  void read_stat_layout();
  void read_constants();
  PyObject *stat_view();
  void box(double *out12);
  [[noreturn]] void failure(bool all_ranks);
};

}    // namespace LAMMPS_NS

#endif
