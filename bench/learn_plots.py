"""Figures of the learning benchmark, drawn from ``bench/results/learn/<N>-iterations/summary.json``
(matplotlib only)."""

from __future__ import annotations

from pathlib import Path

COLORS = {"base": "black", "stepcoder": "tab:blue", "no-fgo": "tab:orange", "no-cccs": "tab:green",
          "vanilla": "tab:red", "ppocoder": "tab:purple"}


def _style(run: str, s: dict) -> dict:
    """An arm's colour for all its replicates; seed 0 solid, later seeds dashed."""
    return {"color": COLORS.get(s.get("arm", run)), "ls": "-" if not s.get("seed") else "--"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_curves(summary: dict, out: Path) -> Path:
    """Every arm on one figure: held-out pass@1 (with 95 % CIs), train pass rate, reward, KL to the reference."""
    fig = _figure(18, 4.5)
    axes = fig.subplots(1, 4)
    base = summary["base"]["mbpp-test"]
    ax = axes[0]
    ax.axhline(base["pass@1"], color=COLORS["base"], ls="--", lw=1, label="base")
    ax.axhspan(*base["ci95"], color=COLORS["base"], alpha=0.08)
    for arm, s in summary["arms"].items():
        its = [0] + [int(k) for k in s["evals"]]
        vals = [base["pass@1"]] + [e["pass@1"] for e in s["evals"].values()]
        lo = [base["ci95"][0]] + [e["ci95"][0] for e in s["evals"].values()]
        hi = [base["ci95"][1]] + [e["ci95"][1] for e in s["evals"].values()]
        st = _style(arm, s)
        ax.plot(its, vals, marker="o", label=arm, **st)
        ax.fill_between(its, lo, hi, color=st["color"], alpha=0.12)
    ax.set(title="held-out MBPP-test greedy pass@1", xlabel="iteration", ylabel="pass@1 (95 % CI)")
    ax.legend(fontsize=8)
    for ax, (key, title) in zip(axes[1:], (("pass_rate", "train pass rate (at the CCCS stage)"),
                                           ("reward_mean", "mean reward"), ("kl_ref", "KL to the reference"))):
        for arm, s in summary["arms"].items():
            pts = [(r["iteration"], r[key]) for r in s["curves"] if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), label=arm, lw=1.2, **_style(arm, s))
        ax.set(title=title, xlabel="iteration")
    fig.suptitle(f"StepCoder learning benchmark: {summary['model']}, "
                 f"{summary['budget']['samples_per_arm']} samples per arm")
    fig.savefig(out)
    return out


def plot_curriculum(arm: dict, out: Path) -> Path:
    """Problems per CCCS stage after each iteration (stacked), and problems advanced per iteration."""
    fig = _figure(10, 4.5)
    ax = fig.subplots()
    rows = arm["curriculum_stages"]
    its = [r["iteration"] for r in rows]
    stages = sorted({int(k) for r in rows for k in r["stages"]})
    layers = [[r["stages"].get(str(s), 0) for r in rows] for s in stages]
    if layers:
        ax.stackplot(its, layers, labels=[f"stage {s}" for s in stages], alpha=0.8)
    ax.bar(its, [r["advanced"] for r in rows], color="black", width=0.3, label="advanced this iteration")
    ax.set(title=f"CCCS: problems per stage ({arm['arm']} arm; stage 0 = most of the solution given)",
           xlabel="iteration", ylabel="problems seen so far")
    ax.legend(fontsize=8, loc="upper left")
    fig.savefig(out)
    return out
