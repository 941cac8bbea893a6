/* Python embedding (see embed_python.h). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>    // first, as Python requires

#include "embed_python.h"

#include <cstdlib>
#include <dlfcn.h>
#include <unistd.h>

namespace pylal {

namespace {
bool exists(const std::string &path) { return access(path.c_str(), X_OK) == 0; }
}    // namespace

std::string python_executable()
{
  if (const char *env = std::getenv("PYLAL_PYTHON")) return env;
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&python_executable), &info) && info.dli_fname) {
    std::string path = info.dli_fname;
    for (int up = 0; up < 6 && !path.empty(); ++up) path = path.substr(0, path.find_last_of('/'));
    if (exists(path + "/bin/python")) return path + "/bin/python";
  }
  if (const char *venv = std::getenv("VIRTUAL_ENV"))
    if (exists(std::string(venv) + "/bin/python")) return std::string(venv) + "/bin/python";
  return PYLAL_BUILD_PYTHON;
}

std::string ensure_python()
{
  if (Py_IsInitialized()) return "";
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 0;    // leave LAMMPS's signal handling alone
  std::string exe = python_executable();
  PyStatus status = PyConfig_SetBytesString(&config, &config.executable, exe.c_str());
  if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(status))
    return std::string("cannot start Python (") + exe + "): " + (status.err_msg ? status.err_msg : "");
  PyEval_SaveThread();    // release the GIL
  return "";
}

}    // namespace pylal
