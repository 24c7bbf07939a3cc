"""Pareto plot across runs: utility (y, e.g. Sat) against cost (x, e.g. V-Rate %), one panel per env.

Each run is a point with its std over seeds as error bars; the Pareto front (the runs no other run of
the same env beats on both axes: at least as high a utility for at most the cost, one of them
strictly) is joined by a step line. Rendered with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from interactcs_gym.evaluation.report import RunSummary


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points of ``(cost, utility)`` pairs (lower cost, higher utility),
    sorted by cost."""
    front = []
    for i, (c, u) in enumerate(points):
        dominated = any((c2 <= c and u2 >= u) and (c2 < c or u2 > u)
                        for j, (c2, u2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def _axis(summary: RunSummary, key: str) -> tuple[float, float, str] | None:
    metric = summary.family.metric(key)
    agg = summary.metrics[key]
    if agg.mean is None:
        return None
    scale = 100.0 if metric.percent else 1.0
    return agg.mean * scale, agg.std * scale, metric.label


def pareto_plot(summaries: list[RunSummary], path: str | Path, *, x: str | None = None,
                y: str | None = None) -> Path:
    """Write the plot to ``path`` (format from its suffix). ``x``/``y`` override the metric keys
    (default: each family's ``cost`` and ``utility``)."""
    # A Figure on an Agg canvas, not pyplot: no display, and no global backend switch for callers.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels: dict[str, list[tuple[RunSummary, tuple, tuple]]] = defaultdict(list)
    for s in summaries:
        xs = _axis(s, x or s.family.cost)
        ys = _axis(s, y or s.family.utility)
        if xs is not None and ys is not None:
            panels[s.env_id].append((s, xs, ys))
    if not panels:
        raise ValueError("no run has values for both axes of the Pareto plot")

    fig = Figure(figsize=(5.5 * len(panels), 4.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (env_id, runs) in zip(axes[0], panels.items()):
        points = [(xs[0], ys[0]) for _, xs, ys in runs]
        for s, xs, ys in runs:
            ax.errorbar(xs[0], ys[0], xerr=xs[1], yerr=ys[1], fmt="o", capsize=3)
            ax.annotate(s.name, (xs[0], ys[0]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        front = pareto_front(points)
        ax.step([points[i][0] for i in front], [points[i][1] for i in front], where="post",
                color="gray", linestyle="--", linewidth=1, label="Pareto front")
        ax.set_xlabel(runs[0][1][2] + " (lower is cheaper)")
        ax.set_ylabel(runs[0][2][2])
        ax.set_title(env_id)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
