"""Where the wall time went: MD, labelling, fitting (bars), total wall time as a line.
MD and labelling overlap in a campaign (walkers run while the reference labels), so the bars need
not add up to the wall time."""
from __future__ import annotations

from pylal.report._figure import new_figure, save
from pylal.report.summary import duration


def plot_time_split(split: dict, path):
    """split: summary.time_split output {"seconds": {label: s}, "wall": s|None, "source": str}."""
    items = [(k, v) for k, v in split["seconds"].items() if v is not None]
    if not items:
        return None
    fig, axes = new_figure(1, 1, size=(7.0, 0.6 * len(items) + 1.6))
    ax = axes[0, 0]
    labels, values = zip(*items)
    longest = max(values + (split.get("wall") or 0,))
    unit, scale = ("h", 3600.0) if longest > 3 * 3600 else (("min", 60.0) if longest > 180 else ("s", 1.0))
    bars = ax.barh(range(len(items)), [v / scale for v in values], color=[f"C{i}" for i in range(len(items))])
    ax.set_yticks(range(len(items)), labels)
    ax.invert_yaxis()
    for bar, v in zip(bars, values):
        ax.annotate(" " + duration(v), (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                    va="center", fontsize=8)
    if split.get("wall"):
        ax.axvline(split["wall"] / scale, color="0.3", ls="--", lw=1.0,
                   label=f"wall time {split['wall'] / scale:.3g} {unit}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel(f"time ({unit})")
    ax.margins(x=0.15)
    ax.set_title("time split" + (" (campaign.json timings)" if split["source"] == "campaign.json timings"
                                  else " (from the server log and traces)"), fontsize=10)
    return save(fig, path)
