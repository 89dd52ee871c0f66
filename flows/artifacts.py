"""What one iteration shows in the Prefect UI: a markdown artifact, plus the run's learning-curves PNG.

``summary_markdown`` is pure (a summary dict in, markdown out) so it is tested without Prefect; the task
``publish_report`` is the side effect. All iterations of a run publish under one artifact key
(``stepcoder-<run>``), so the UI's Artifacts page shows the run's history as versions of that key.
Names match the store's columns and the CLI summary (``pass_rate``, ``reward_mean``, ``kl_ref``, ...).
"""

from __future__ import annotations

import math
import re
from collections import Counter

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.report_cmd import curriculum_progress, write_learning_curves

MAX_PROBLEM_ROWS = 25  # per-problem curriculum rows shown; the rest are counted (the store has them all)


def artifact_key(run: str) -> str:
    """Prefect artifact keys allow only lowercase letters, digits and dashes: ``My_Run.2`` → ``stepcoder-my-run-2``."""
    slug = re.sub(r"[^a-z0-9]+", "-", run.lower()).strip("-")
    return f"stepcoder-{slug or 'run'}"


def _num(x, fmt: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, fmt)


def _table(headers: list[str], rows: list[list], right: tuple[int, ...] = ()) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    align = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _curriculum_section(curriculum: list[dict]) -> list[str]:
    if not curriculum:
        return ["_no curriculum rows for this iteration_"]
    moves = Counter((c["stage_before"], c["stage_after"]) for c in curriculum)
    advanced = sum(1 for c in curriculum if c["advanced"])
    out = [
        f"{advanced} of {len(curriculum)} problems advanced a stage "
        "(a problem moves on when its pass rate at its stage reaches ρ).",
        "",
        _table(["stage before", "stage after", "problems"],
               [[b, a, n] for (b, a), n in sorted(moves.items())], right=(0, 1, 2)),
        "",
    ]
    shown = sorted(curriculum, key=lambda c: (not c["advanced"], str(c["problem_id"])))[:MAX_PROBLEM_ROWS]
    out.append(_table(
        ["problem", "stage before → after", "stages", "samples", "passes", "pass rate"],
        [[c["problem_id"], f"{c['stage_before']} → {c['stage_after']}" + (" ⬆" if c["advanced"] else ""),
          c["num_stages"], c["samples"], c["passes"], _num(c["pass_rate"], ".3f")] for c in shown],
        right=(2, 3, 4, 5),
    ))
    if len(curriculum) > len(shown):
        out.append(f"\n… and {len(curriculum) - len(shown)} more problems (`SELECT * FROM curriculum`).")
    return out


def summary_markdown(summary: dict, curriculum: list[dict] | None = None) -> str:
    """Markdown for one iteration: pass rate per CCCS stage, reward and outcome counts, PPO losses / KL / FGO
    masked fraction, evaluation metrics (iterations that evaluated), curriculum movement and phase timings.

    ``summary`` is :func:`stepcoder.summary.iteration_summary`'s dict as the flow returns it (with ``timings``,
    ``store`` and ``checkpoint`` when present); ``curriculum`` the iteration's curriculum rows (defaults to
    ``summary["curriculum"]``). Missing sections are skipped, so older summaries still render.
    """
    curriculum = curriculum if curriculum is not None else summary.get("curriculum")
    run, it = summary["run"], summary["iteration"]
    n = summary.get("rollouts", 0)
    md = [
        f"# StepCoder · run `{run}` · iteration {it}",
        "",
        f"**pass_rate {_num(summary.get('pass_rate'), '.3f')}** over {n} rollouts · "
        f"**reward_mean {_num(summary.get('reward_mean'), '+.3f')}** · "
        f"problems advanced {summary.get('advanced', 'n/a')}",
        "",
        "## Pass rate per CCCS stage",
        "Stage 0 gives the most of the canonical solution as prefix; higher stages ask for more of it.",
        "",
    ]
    by_stage = summary.get("pass_rate_by_stage") or {}
    md.append(_table(
        ["stage", "samples", "passes", "pass_rate"],
        [[stage, s["samples"], s["passes"], _num(s["pass_rate"], ".3f")]
         for stage, s in sorted(by_stage.items(), key=lambda kv: int(kv[0]))],
        right=(0, 1, 2, 3),
    ) if by_stage else "_no rollouts_")

    outcomes = summary.get("outcomes") or {}
    md += ["", "## Reward and outcomes", "",
           f"reward_mean **{_num(summary.get('reward_mean'), '+.4f')}** over {n} rollouts", ""]
    md.append(_table(
        ["outcome", "count", "share"],
        [[o, c, f"{c / n:.1%}" if n else "n/a"] for o, c in outcomes.items()],
        right=(1, 2),
    ))

    md += ["", "## PPO", ""]
    md.append(_table(["metric", "value"], [
        ["policy_loss", _num(summary.get("policy_loss"), "+.5f")],
        ["value_loss", _num(summary.get("value_loss"), ".5f")],
        ["kl_ref (KL(π‖π_ref) per token)", _num(summary.get("kl_ref"), ".5f")],
        ["approx_kl (π_old → π)", _num(summary.get("approx_kl"), ".6f")],
        ["fgo_masked_fraction (completion tokens FGO left out)", _num(summary.get("fgo_masked_fraction"), ".1%")],
    ], right=(1,)))

    evals = summary.get("evals") or {}
    if evals:
        md += ["", "## Evaluation (this iteration's checkpoint)", ""]
        md.append(_table(["eval/metric", "value"], [[k, _num(v, ".4f")] for k, v in sorted(evals.items())],
                         right=(1,)))

    if curriculum is not None:
        md += ["", "## Curriculum movement (CCCS)", ""] + _curriculum_section(curriculum)
    progress = summary.get("curriculum_progress") or []
    if progress:
        stages = sorted({int(k) for r in progress for k in r["stages"]})
        md += ["", "## Curriculum progress (whole run)",
               "Problems seen so far at each stage after each iteration (latest iterations).", ""]
        md.append(_table(
            ["iteration", "advanced"] + [f"stage {k}" for k in stages],
            [[r["iteration"], r["advanced"]] + [r["stages"].get(k, r["stages"].get(str(k), 0)) for k in stages]
             for r in progress[-10:]],
            right=tuple(range(len(stages) + 2)),
        ))

    timings = summary.get("timings") or {}
    if timings:
        total = sum(timings.values())
        md += ["", "## Phase timings", ""]
        md.append(_table(
            ["phase", "seconds", "share"],
            [[k, f"{v:.1f}", f"{v / total:.0%}" if total else "n/a"] for k, v in timings.items()]
            + [["**total**", f"**{total:.1f}**", ""]],
            right=(1, 2),
        ))

    where = []
    if summary.get("checkpoint"):
        where.append(f"checkpoint: `{summary['checkpoint']}`")
    if summary.get("store"):
        where.append(f"store: `{summary['store']}`")
    if summary.get("learning_curves"):
        where.append(f"learning curves: `{summary['learning_curves']}`")
    if where:
        md += ["", " · ".join(where)]
    return "\n".join(md) + "\n"


@task(name="publish-report", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def publish_report(summary: dict, curriculum: list[dict] | None = None) -> dict:
    """Rewrite the run's learning-curves PNG in its store and publish this iteration's markdown artifact.

    Call it after the commit: the plot reads the committed history. A failed plot is logged, not raised
    (the iteration is already committed; ``stepcoder report RUN`` redraws it).
    """
    log = get_run_logger()
    summary = dict(summary)
    try:
        summary["learning_curves"] = write_learning_curves(summary["store"], summary["run"])
        summary["curriculum_progress"] = curriculum_progress(summary["store"], summary["run"])
    except Exception as exc:  # noqa: BLE001 - reporting must not fail a committed iteration
        log.warning("learning curves not written (%s); `stepcoder report %s` redraws them", exc, summary["run"])
    artifact_id = create_markdown_artifact(
        key=artifact_key(summary["run"]),
        markdown=summary_markdown(summary, curriculum),
        description=f"StepCoder run {summary['run']}, iteration {summary['iteration']}",
    )
    return {"artifact_id": str(artifact_id), "learning_curves": summary.get("learning_curves")}
