"""Learning-curve outputs: a CSV (one row per label count) and a PNG (matplotlib, Agg backend)."""
from __future__ import annotations

import csv
from pathlib import Path


def write_curves_csv(path, curves: dict) -> None:
    """curves: {name: [(n_labels, rmse) or (n_labels, rmse, std)]}; long format
    name,n_labels,force_rmse,std."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "n_labels", "force_rmse_eV_per_A", "std_eV_per_A"])
        for name, curve in curves.items():
            for p in curve:
                w.writerow([name, int(p[0]), f"{p[1]:.6g}", f"{p[2]:.3g}" if len(p) > 2 else ""])


def plot_curves(path, curves: dict, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, curve in curves.items():
        n = [p[0] for p in curve]
        r = [p[1] for p in curve]
        style = dict(ls="--", color="0.4") if name.startswith("random") else {}
        ax.plot(n, r, marker="o", ms=3, label=name, **style)
        if len(curve[0]) > 2:
            s = [p[2] for p in curve]
            ax.fill_between(n, [a - b for a, b in zip(r, s)], [a + b for a, b in zip(r, s)],
                            alpha=0.15, **({"color": "0.4"} if name.startswith("random") else {}))
    ax.set_xlabel("labelled configurations")
    ax.set_ylabel("held-out force RMSE (eV/A)")
    ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
