"""Shared helpers of the HAL-versus-AL benchmarks: seed statistics, capped values, tables, files."""
from __future__ import annotations

import json
import os

import numpy as np


def stats(values):
    """Mean, standard deviation (ddof 0), min and max of the finite values (None if there are none)."""
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return dict(mean=None, std=None, min=None, max=None, n=0)
    return dict(mean=float(v.mean()), std=float(v.std()), min=float(v.min()), max=float(v.max()), n=len(v))


def fmt(s, scale=1.0, digits=0, capped=False):
    """'mean +- std [min-max]' (scaled); '>=' in front when a capped run is part of the mean."""
    if s["mean"] is None:
        return "n/a"
    f = f"{{:.{digits}f}}"
    text = f"{'>=' if capped else ''}{f.format(scale * s['mean'])} +- {f.format(scale * s['std'])}"
    if s["n"] > 1:
        text += f" [{f.format(scale * s['min'])}-{f.format(scale * s['max'])}]"
    return text


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def ratio_text(numerator, denominator, num_capped, den_capped) -> str:
    """numerator / denominator of means; a capped numerator makes it a lower bound, a capped
    denominator an upper bound (both: undetermined)."""
    if numerator is None or denominator in (None, 0):
        return "n/a"
    r = numerator / denominator
    if num_capped and den_capped:
        return f"~{r:.2f} (both capped)"
    return (">=" if num_capped else "<=" if den_capped else "") + f"{r:.2f}"


def write_outputs(out_dir, name, data: dict, markdown: str, log=print):
    os.makedirs(out_dir, exist_ok=True)
    jpath, mpath = os.path.join(out_dir, f"{name}.json"), os.path.join(out_dir, f"{name}.md")
    with open(jpath, "w") as fh:
        json.dump(data, fh, indent=1, default=float)
    with open(mpath, "w") as fh:
        fh.write(markdown + "\n")
    log(f"wrote {jpath} and {mpath}")
