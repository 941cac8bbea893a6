"""The `stat` array: the per-step scalars exchanged by the engine and its caller (C++ `fix pylal`
or the python/invoke callback), float64, owned by the caller. Declared here only: the plugin asks
`Engine.stat_indices(names)` at set-up where each field it uses lives and how long the array is.
Per-run constants are not here: they come once from `Engine.describe()`.
"""
FIELDS = (
    "e_hal",  # E_HAL = E - tau sigma~ of all atoms (HAL eq. 1): the fix's scalar
    "e", "sigma", "tau", "f_max", "softmax", "flags", "version", "rollbacks",  # the fix's global vector f_ID[1..8]
    "virial_xx", "virial_yy", "virial_zz", "virial_xy", "virial_xz", "virial_yz",  # this rank's pairs, of F_HAL
    "stop",  # 1: end the run (on_flag stop, stop file); written by Engine.end_of_step
    "messages",  # number of messages queued on rank 0 (Engine.pop_messages)
    "swaps",  # parameter swaps in this run
    "natoms",  # written by the caller: the system's atom count (to notice lost atoms)
    # blow-up guard and rollback (pylal/hal/guard.py, docs/fix_pylal.md)
    "step_length",  # written by the caller: max_i |x_i(t) - x_i(t - dt)| of its owned atoms (A)
    "skin",  # written by the caller: the neighbour skin (A); the guard's step limit is half of it
    "saved_step",  # written by the caller: step of the saved good state (-1: none yet)
    "rollback",  # 1: restore the saved state at the end of this step (the engine decided)
    "guard_events",  # guard events so far
)
INDEX = {name: i for i, name in enumerate(FIELDS)}
SIZE = len(FIELDS)
VIRIAL = INDEX["virial_xx"]  # 6 entries from here
VECTOR = ("e", "sigma", "tau", "f_max", "softmax", "flags", "version", "rollbacks")


def indices(names) -> list[int]:
    """Positions of `names` (a list, or one space-separated string); 'size' is the array length and
    'vector' expands to the fix's global vector entries."""
    if isinstance(names, str):
        names = names.split()
    out = []
    for name in names:
        if name == "size":
            out.append(SIZE)
        elif name == "vector":
            out.extend(INDEX[v] for v in VECTOR)
        elif name in INDEX:
            out.append(INDEX[name])
        else:
            raise KeyError(f"pylal stat layout: unknown field '{name}' (known: size, vector, {', '.join(FIELDS)})")
    return out
