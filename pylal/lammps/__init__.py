"""The LAMMPS side of pylal: the `fix pylal` plugin (plugin/, installed here as pylalplugin.so)
and the per-rank engine it calls (engine.py).

This module stays free of heavy imports: the `lmp` console script imports it through the
`lammps.plugins` entry point only to learn where the plugin library is.
"""
import os


def plugin_dir() -> str:
    """Folder holding pylalplugin.so (entry point of the `lammps.plugins` group)."""
    return os.path.dirname(os.path.abspath(__file__))
