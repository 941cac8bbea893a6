/* Python embedding: start the interpreter when LAMMPS runs from `lmp` (when LAMMPS is driven
   from Python, Python is already running and nothing happens). */
#ifndef PYLAL_EMBED_PYTHON_H
#define PYLAL_EMBED_PYTHON_H

#include <string>

namespace pylal {

// The interpreter to embed: $PYLAL_PYTHON, else the venv this plugin is installed in
// (<venv>/lib/pythonX.Y/site-packages/pylal/lammps/pylalplugin.so), else $VIRTUAL_ENV, else
// the interpreter the plugin was built with.
std::string python_executable();

// Starts Python unless it runs already; returns "" or why it could not. The GIL is released on
// return (every call into Python takes it with PyGILState_Ensure). Never finalized: numpy cannot
// be initialised twice in one process.
std::string ensure_python();

}    // namespace pylal

#endif
