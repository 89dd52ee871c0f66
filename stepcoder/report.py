"""Learning curves of a run: pass rate, reward and KL to the reference per iteration, as one PNG.

Pure plotting (matplotlib only): rows come in as plain dicts, whoever queried them (``flows/artifacts.py``
reads them from the store with DuckDB). Metric names match the store's columns: ``pass_rate`` and
``reward_mean`` from ``iterations``, ``kl_ref`` averaged over the iteration's ``train_metrics`` steps.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import BinaryIO

# (column, panel title, y label): the same names as the SQL columns and the iteration artifact.
PANELS = (
    ("pass_rate", "pass rate", "pass_rate (rollouts, at their CCCS stage)"),
    ("reward_mean", "reward", "reward_mean"),
    ("kl_ref", "KL to the reference policy", "kl_ref = mean KL(π‖π_ref) per token"),
)


def _finite(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _curriculum_panel(ax, rows: list[dict]) -> None:
    """Problems per CCCS stage after each iteration (stacked bars) and problems advanced (black line)."""
    from matplotlib.ticker import MaxNLocator

    staged = [r for r in rows if r.get("stages")]
    ax.set_title("CCCS curriculum: problems per stage")
    ax.set_xlabel("iteration")
    ax.set_ylabel("problems seen (stage 0 = most help)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if not staged:
        ax.text(0.5, 0.5, "no curriculum yet", ha="center", va="center", transform=ax.transAxes, color="gray")
        return
    its = [r["iteration"] for r in staged]
    stages = sorted({int(k) for r in staged for k in r["stages"]})
    bottom = [0] * len(staged)
    for stage in stages:
        heights = [r["stages"].get(stage, r["stages"].get(str(stage), 0)) for r in staged]
        ax.bar(its, heights, bottom=bottom, label=f"stage {stage}", width=0.8)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.plot(its, [r.get("advanced", 0) for r in staged], color="black", marker="^", label="advanced this iteration")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(True, alpha=0.3)


def plot_learning_curves(rows: list[dict], out_png: str | Path | BinaryIO, title: str | None = None):
    """Write a 4-panel PNG (2000×450 px) of ``pass_rate``, ``reward_mean``, ``kl_ref`` and the curriculum per
    ``iteration`` (``stages``: {stage: problems at it}, ``advanced``: problems moved on; see
    :func:`stepcoder.curriculum.stage_counts`).

    ``rows``: one dict per iteration with ``iteration``, ``pass_rate``, ``reward_mean``, ``kl_ref`` (missing or
    NaN values leave a gap) and optionally ``evals``, a ``{name: value}`` mapping of evaluation pass rates drawn
    on the pass-rate panel (e.g. ``{"humaneval/pass@1": 0.12}``). ``out_png`` is a path or a binary file
object (e.g. an fsspec file on S3). Returns ``out_png``.
    """
    # Figure + Agg canvas directly, not pyplot: no global backend state, safe in worker threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = sorted(rows, key=lambda r: r["iteration"])
    fig = Figure(figsize=(20, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(PANELS) + 1)
    for ax, (key, panel_title, ylabel) in zip(axes, PANELS):
        points = [(r["iteration"], r[key]) for r in rows if _finite(r.get(key))]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", color="tab:blue", label="train rollouts" if key == "pass_rate" else None)
        else:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_title(panel_title)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if rows:  # half an iteration of margin: a single iteration still gets an integer tick
            ax.set_xlim(rows[0]["iteration"] - 0.5, rows[-1]["iteration"] + 0.5)
        ax.grid(True, alpha=0.3)
    pass_ax = axes[0]
    pass_ax.set_ylim(-0.03, 1.03)
    eval_names = sorted({name for r in rows for name in (r.get("evals") or {})})
    eval_colors = ["tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
    for i, name in enumerate(eval_names):
        points = [(r["iteration"], r["evals"][name]) for r in rows
                  if name in (r.get("evals") or {}) and _finite(r["evals"][name])]
        if points:
            xs, ys = zip(*points)
            pass_ax.plot(xs, ys, marker="s", linestyle="--", label=name, color=eval_colors[i % len(eval_colors)])
    if rows:
        pass_ax.legend(loc="best", fontsize="small")
    reward_ax = axes[1]
    reward_ax.axhline(0.0, color="gray", linewidth=0.8)
    _curriculum_panel(axes[-1], rows)
    if rows:
        last = rows[-1]
        fig.suptitle(
            (title or "learning curves")
            + f" · {len(rows)} iteration{'s' if len(rows) != 1 else ''}, last = {last['iteration']}"
        )
    else:
        fig.suptitle(title or "learning curves")
    if isinstance(out_png, (str, Path)):
        out_png = Path(out_png)
        out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")
    return out_png
