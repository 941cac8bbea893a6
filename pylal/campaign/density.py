"""Walkers far from the held-out states. With a barostat the HAL bias acts on the box too (E_HAL =
E - tau sigma, HAL eq. 1, enters the virial), and sigma often grows as the box expands, so a walker can
drift to densities the held-out set never samples (AlCu ACE campaign, docs/benchmarks.md: liquid at
27.9 A^3/atom against 18-20 held out). Then the held-out error no longer measures what the labels teach,
and a rising held-out curve may mean "other states", not "a worse fit". The campaign says so once per walker."""
from __future__ import annotations

import math

TOLERANCE = 0.15  # relative margin around the held-out range of volume per atom


def volume_range(frames) -> tuple[float, float] | None:
    """(min, max) volume per atom (A^3) of the periodic held-out frames; None without any."""
    volumes = [a.get_volume() / len(a) for a in frames if len(a) and a.pbc.all()]
    return (min(volumes), max(volumes)) if volumes else None


def outside_holdout(walker: str, volume_per_atom: float, held: tuple[float, float] | None,
                    tolerance: float = TOLERANCE) -> str | None:
    """A warning when the walker's volume per atom lies more than `tolerance` outside the held-out range."""
    if held is None or not math.isfinite(volume_per_atom):
        return None
    lo, hi = held
    if lo * (1 - tolerance) <= volume_per_atom <= hi * (1 + tolerance):
        return None
    return (f"walker {walker} is at {volume_per_atom:.1f} A^3/atom (median of its last check steps), outside "
            f"the held-out set's {lo:.1f}-{hi:.1f} A^3/atom: the held-out error does not measure the states it "
            f"labels (with a barostat the HAL bias acts on the box too; a fixed volume, a smaller tau_rel or "
            f"held-out data at these densities tell the cases apart)")
