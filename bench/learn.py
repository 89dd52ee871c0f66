"""Does a run make a real model better? The learning benchmark: StepCoder and its ablations on SmolLM2-135M.

    make bench-learn                 # every arm not finished yet, then the summary, table and figures
    python bench/learn.py --arms stepcoder,vanilla --iterations 32 --eval-every 8

Arms (the paper's ablations, one switch each; all share the base model, the training pool, the seeds and the
generation budget = iterations × problems_per_iteration × n_samples):

    stepcoder   CCCS + FGO          no-fgo   CCCS only          no-cccs   FGO only          vanilla   neither
    ppocoder    PPOCoder's reward (unit tests + AST + data-flow match), no CCCS/FGO (opt-in: --arms ...,ppocoder)

Held-out evaluation: greedy pass@1 on MBPP-test (500, never trained on) for the base model and every arm every
``--eval-every`` iterations, with a 95 % Wilson interval; at the end HumanEval and MBPP+ (236 of its MBPP-test
tasks, with EvalPlus's ~100 extra tests each) too. Arms are compared with the base and with each other by an
exact McNemar test on the same problems and a paired bootstrap CI of the difference. No choice here is made on
MBPP-test: the run config is ``infra/configs/learn.yaml``.

Resumable: each arm is a run in one store under ``--work`` (default .stepcoder/bench-learn); a re-run continues
unfinished arms from their last committed iteration. Each finished arm's results go to
``bench/results/learn/<N>-iterations/summary.json``, one folder per budget (with ``--commit``, committed to git at
once, without checkpoints), and a finished arm is never re-run. A longer budget continues the same stores, and
the shorter budget's folder stays as it was. The figures (curves.png, curriculum.png) are redrawn from
summary.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

CONFIG = REPO / "infra" / "configs" / "learn.yaml"
RESULTS = REPO / "bench" / "results" / "learn"
ARMS: dict[str, tuple[str, ...]] = {
    "stepcoder": (),
    "no-fgo": ("fgo.enabled=false",),
    "no-cccs": ("curriculum.enabled=false",),
    "vanilla": ("fgo.enabled=false", "curriculum.enabled=false"),
    "ppocoder": ("reward.mode=ppocoder", "fgo.enabled=false", "curriculum.enabled=false"),
}
DEFAULT_ARMS = ("stepcoder", "no-fgo", "no-cccs", "vanilla")
MAIN_EVAL, FINAL_EVALS = "mbpp-test", ("mbpp-test", "humaneval", "mbpp-plus-test")
EVAL_LIMIT: int | None = None


SEED_SUFFIX = "-seed"


def run_name(arm: str, seed: int) -> str:
    """The store's run for one replicate of ``arm``. Seed 0 keeps the bare arm name, so the runs made before
    replicates existed are that arm's first replicate."""
    return arm if seed == 0 else f"{arm}{SEED_SUFFIX}{seed}"


def parse_run(run: str) -> tuple[str, int]:
    """``vanilla-seed2`` → ("vanilla", 2); ``vanilla`` → ("vanilla", 0)."""
    arm, sep, seed = run.rpartition(SEED_SUFFIX)
    if sep and seed.isdigit() and arm in ARMS:
        return arm, int(seed)
    return run, 0


def _seed(run: str) -> list[str]:
    """A replicate changes only ``generation.seed`` (sampling, the critic head's init, minibatch order); the
    training pool and the order problems are visited in (``data.seed``) stay, so replicates differ by the
    training's own randomness, not by what they train on."""
    seed = parse_run(run)[1]
    return [f"generation.seed={seed}"] if seed else []


def arm_overrides(run: str) -> list[str]:
    """What makes ``run`` its arm and replicate (kept in the summary)."""
    return [*ARMS[parse_run(run)[0]], *_seed(run)]


def _overrides(run: str, work: Path) -> list[str]:
    return [*ARMS[parse_run(run)[0]], f"store={work / 'store'}", f"checkpoint_dir={work / 'checkpoints'}",
            "eval.every=0", *EXTRA, *_seed(run)]  # the seed after --set: replicates must differ


EXTRA: list[str] = []  # --set overrides, for every arm (e.g. a smoke test's tiny model)


def _config(arm: str, work: Path):
    from stepcoder.config import load_config

    return load_config(CONFIG, _overrides(arm, work), run_name=arm)


# ---------------------------------------------------------------- evaluation


def evaluate_policy(cfg, policy_dir: str, split: str) -> dict:
    """Greedy pass@1 of ``policy_dir`` on ``split``, with each problem's outcome (for the paired tests)."""
    from stepcoder.datasets.splits import load_eval_split
    from stepcoder.evaluation import evaluate
    from stepcoder.evaluation.stats import wilson_interval
    from stepcoder.execution import make_executor
    from stepcoder.models import resolve_model
    from stepcoder.prompts import chat_renderer
    from tasks.generate import engine_for

    engine = engine_for(cfg, str(resolve_model(cfg.model.path)), policy_dir)
    chat = chat_renderer(engine.tokenizer, cfg.model.prompt_format)
    problems = load_eval_split(split)[:EVAL_LIMIT]
    e = cfg.execution
    with make_executor("embedded", timeout_s=e.timeout_s, budget_s=e.budget_s, memory_mb=e.memory_mb,
                       coverage=False) as executor:
        result = evaluate(engine, executor, problems, eval_name=split, n=1, temperature=0.0,
                          max_new_tokens=cfg.eval.max_new_tokens, seed=cfg.generation.seed, chat_template=chat)
    passed = [s.c > 0 for s in result.scores]
    lo, hi = wilson_interval(sum(passed), len(passed))
    return {"split": split, "pass@1": sum(passed) / len(passed), "ci95": [lo, hi], "problems": len(passed),
            "solved": sum(passed), "problem_ids": [s.problem_id for s in result.scores], "passed": passed}


def cached_eval(path: Path, run) -> dict:
    """An evaluation is kept on disk once made: a resumed benchmark never evaluates a checkpoint twice."""
    if path.exists():
        return json.loads(path.read_text())
    out = run()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


# ---------------------------------------------------------------- one arm


def committed_iterations(cfg) -> int:
    from storage import open_store
    from storage.run_state import load_run_state

    return load_run_state(open_store(cfg.store), cfg.run_name).iteration - 1


def latest_policy(cfg) -> str:
    from storage import open_store
    from storage.run_state import load_run_state

    return str(Path(load_run_state(open_store(cfg.store), cfg.run_name).checkpoint_uri) / "policy")


def policy_at(cfg, iteration: int) -> str | None:
    """The policy checkpoint committed by ``iteration``, or None where the store has no such iteration."""
    from storage import open_store
    from storage.store import run_sql

    con = open_store(cfg.store).connect()
    try:
        uri = run_sql(con, "SELECT checkpoint_uri FROM iterations WHERE run = ? AND iteration = ?",
                      [cfg.run_name, iteration]).column("checkpoint_uri").to_pylist()
    finally:
        con.close()
    return str(Path(uri[0]) / "policy") if uri and uri[0] else None


def run_arm(arm: str, work: Path, iterations: int, eval_every: int, started: float, plan: dict) -> dict:
    """Train ``arm`` up to ``iterations`` (continuing from its store), evaluating every ``eval_every``."""
    from flows.stepcoder_flow import stepcoder

    cfg = _config(arm, work)
    evals = {}
    done = committed_iterations(cfg)
    while done < iterations:
        # One iteration per flow run (~10 s of Prefect start-up against minutes of work): progress and ETA
        # after every iteration, and an interrupted sitting loses at most the iteration in flight.
        t = time.perf_counter()
        stepcoder(run_name=arm, config_path=str(CONFIG), overrides=_overrides(arm, work), iterations=1)
        done = committed_iterations(cfg)
        plan["iteration_s"].append(time.perf_counter() - t)
        _progress(arm, done, iterations, started, plan)
        if done % eval_every == 0 or done == iterations:
            evals[done] = cached_eval(work / "evals" / arm / f"{done}-{MAIN_EVAL}.json",
                                      lambda: evaluate_policy(cfg, latest_policy(cfg), MAIN_EVAL))
    for it in range(eval_every, iterations + 1, eval_every):  # evaluations of earlier sittings
        path = work / "evals" / arm / f"{it}-{MAIN_EVAL}.json"
        if it not in evals and path.exists():
            evals[it] = json.loads(path.read_text())
    finals = {split: cached_eval(work / "evals" / arm / f"{iterations}-{split}.json",
                                 lambda s=split: evaluate_policy(cfg, latest_policy(cfg), s))
              for split in FINAL_EVALS}
    return arm_summary(cfg, arm, iterations, evals, finals)


def _progress(arm: str, done: int, total: int, started: float, plan: dict) -> None:
    per_it = sum(plan["iteration_s"]) / len(plan["iteration_s"])
    remaining = (total - done) + plan["iterations_after"](arm)
    elapsed = time.time() - started
    print(f"[bench-learn] arm {arm}: iteration {done}/{total}, {per_it / 60:.1f} min/iteration, "
          f"elapsed {elapsed / 3600:.2f} h, ETA all arms {remaining * per_it / 3600:.1f} h", flush=True)


def arm_summary(cfg, arm: str, iterations: int, evals: dict[int, dict], finals: dict[str, dict]) -> dict:
    """What the summary keeps of an arm: config, per-iteration curves from the store, evaluations."""
    from stepcoder.curriculum import stage_counts
    from storage import connect, run_sql

    con = connect(cfg.store)
    per_it = run_sql(con, """
        SELECT i.iteration, i.pass_rate, i.reward_mean, i.num_rollouts,
               epoch(i.finished_at - i.started_at) AS wall_s, m.kl_ref, m.explained_variance
        FROM iterations i LEFT JOIN (
            SELECT iteration, avg(kl_ref) AS kl_ref, avg(explained_variance) AS explained_variance
            FROM train_metrics WHERE run = $run GROUP BY iteration) m USING (iteration)
        WHERE i.run = $run ORDER BY i.iteration""", {"run": arm}).to_pylist()
    cur = run_sql(con, """SELECT iteration, problem_id, stage_before, stage_after, full_stage FROM curriculum
                          WHERE run = $run ORDER BY iteration""", {"run": arm}).to_pylist()
    return {
        "arm": parse_run(arm)[0],
        "run": arm,
        "seed": parse_run(arm)[1],
        "overrides": arm_overrides(arm),
        "config": json.loads(cfg.to_json()),
        "iterations": iterations,
        "samples": sum(r["num_rollouts"] for r in per_it),
        "wall_s": sum(r["wall_s"] or 0 for r in per_it),
        "curves": per_it,
        "curriculum_stages": [{**r, "stages": {str(k): v for k, v in r["stages"].items()}}
                              for r in stage_counts(cur)],
        "evals": {str(k): _strip(v) for k, v in sorted(evals.items())},
        "final": {split: v for split, v in finals.items()},
    }


def _strip(e: dict) -> dict:
    return {k: v for k, v in e.items() if k not in ("problem_ids", "passed")}


# ---------------------------------------------------------------- the comparison


def comparisons(base: dict, arms: dict[str, dict]) -> list[dict]:
    """Paired tests on the final outcomes of every held-out split: every arm against the base and every pair of
    arms (the paper's order first, so ``a`` is the arm the paper expects ahead), each record naming its split.

    All pairs, not only neighbours in the paper's order: a reader asking "does StepCoder beat vanilla" should
    find the answer here, not in a script of their own. A split an arm lacks (an arm finished before the split
    was added) is left out for that arm."""
    from stepcoder.evaluation.stats import compare

    paper = ("stepcoder", "no-fgo", "no-cccs", "vanilla", "ppocoder")

    def rank(run: str) -> tuple[int, int]:
        arm, seed = parse_run(run)
        return (paper.index(arm) if arm in paper else len(paper), seed)

    order = sorted(arms, key=rank)
    pairs = [(a, "base") for a in order] + [(a, b) for i, a in enumerate(order) for b in order[i + 1:]]
    out = []
    for split in FINAL_EVALS:
        finals = {"base": base.get(split), **{a: s["final"].get(split) for a, s in arms.items()}}
        present = {name: e for name, e in finals.items() if e is not None}
        ids = next(iter(present.values()))["problem_ids"] if present else None
        for name, e in present.items():
            if e["problem_ids"] != ids:  # a paired test on different problems would be meaningless
                raise ValueError(f"{name}: evaluated on other {split} problems than {next(iter(present))}")
        out += [{"a": a, "b": b, "split": split, **compare(finals[a]["passed"], finals[b]["passed"])}
                for a, b in pairs if finals[a] is not None and finals[b] is not None]
    return out


def replicates(arms: dict[str, dict]) -> dict[str, dict]:
    """Per arm with more than one seed: each replicate's final pass@1 per split, their mean and range. The
    spread between replicates is the training's own noise, which no paired test on one run can show."""
    by_arm: dict[str, list[str]] = {}
    for run in arms:
        by_arm.setdefault(parse_run(run)[0], []).append(run)
    out = {}
    for arm, runs in by_arm.items():
        if len(runs) < 2:
            continue
        runs = sorted(runs, key=lambda r: parse_run(r)[1])
        splits = [sp for sp in FINAL_EVALS if all(sp in arms[r]["final"] for r in runs)]
        each = {sp: [arms[r]["final"][sp]["pass@1"] for r in runs] for sp in splits}
        out[arm] = {"runs": runs, "pass@1": {sp: {"each": v, "mean": sum(v) / len(v), "range": [min(v), max(v)]}
                                             for sp, v in each.items()}}
    return out


MODEL_NAMES = {"smollm2-135m": "SmolLM2-135M-Instruct"}


def write_summary(work: Path, base: dict, arms: dict[str, dict], budget: dict, model: str) -> dict:
    summary = {
        "model": MODEL_NAMES.get(model, model),
        "config": str(CONFIG.relative_to(REPO)) if CONFIG.is_relative_to(REPO) else str(CONFIG),
        "extra_overrides": EXTRA,
        "budget": budget,
        "held_out": {"main": MAIN_EVAL, "final": list(FINAL_EVALS)},
        "base": base,
        "arms": arms,
        "comparisons": comparisons(base, arms) if arms else [],
        "replicates": replicates(arms),
    }
    out = budget_dir(budget["iterations"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
    from learn_plots import plot_curriculum, plot_curves

    plot_curves(summary, out / "curves.png")
    if "stepcoder" in arms:
        plot_curriculum(arms["stepcoder"], out / "curriculum.png")
    print_table(summary)
    return summary


def budget_dir(iterations: int) -> Path:
    """Each budget's results in a folder of their own: a 32-iteration run never overwrites the 16-iteration one."""
    return RESULTS / f"{iterations}-iterations"


def _json_default(x):
    return float(x) if hasattr(x, "__float__") else str(x)


def _ci(e: dict) -> str:
    return f"[{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]"


def print_table(summary: dict) -> None:
    base = summary["base"][MAIN_EVAL]
    second = [("humaneval", "HumanEval"), ("mbpp-plus-test", "MBPP+")]
    print(f"\nHeld-out {MAIN_EVAL} greedy pass@1 (95 % Wilson CI); vs base: paired difference, exact McNemar p")
    print(f"{'arm':<11} {'iters':>5} {'samples':>7} {'pass@1':>7} {'95% CI':>15} {'Δ vs base':>10} {'p':>7} "
          + " ".join(f"{title:>9}" for _, title in second))

    def _more(e: dict) -> str:  # an arm finished before a split was added has no figure for it
        return " ".join(f"{e[split]['pass@1']:>9.3f}" if split in e else f"{'-':>9}" for split, _ in second)

    print(f"{'base':<11} {0:>5} {0:>7} {base['pass@1']:>7.3f} {_ci(base):>15} {'':>10} {'':>7} "
          f"{_more(summary['base'])}")
    vs_base = {c["a"]: c for c in summary["comparisons"] if c["b"] == "base" and c.get("split") == MAIN_EVAL}
    for arm, s in summary["arms"].items():
        f, c = s["final"][MAIN_EVAL], vs_base[arm]
        print(f"{arm:<11} {s['iterations']:>5} {s['samples']:>7} {f['pass@1']:>7.3f} {_ci(f):>15} "
              f"{c['diff']:>+10.3f} {c['mcnemar_p']:>7.3f} {_more(s['final'])}")
    for arm, r in summary.get("replicates", {}).items():
        print(f"\n{arm}: {len(r['runs'])} replicates (seeds) — " + "; ".join(
            f"{sp} mean {v['mean']:.3f}, range {v['range'][0]:.3f}–{v['range'][1]:.3f}" for sp, v in r["pass@1"].items()))
    between = [c for c in summary["comparisons"] if c["b"] != "base"]
    if between:
        print("\nBetween arms, paired on the same problems: a − b in points, 95 % bootstrap CI, exact McNemar p, "
              "problems only a / only b solves")
        print(f"{'a − b':<28} {'split':<15} {'Δ pt':>6} {'95% CI':>15} {'p':>7} {'only a/b':>9}")
        for c in between:
            lo, hi = c["diff_ci95"]
            print(f"{c['a'] + ' − ' + c['b']:<28} {c['split']:<15} {100 * c['diff']:>+6.1f} "
                  f"{f'{100 * lo:+.1f}…{100 * hi:+.1f}':>15} {c['mcnemar_p']:>7.3f} "
                  f"{str(c['only_a']) + '/' + str(c['only_b']):>9}")


# ---------------------------------------------------------------- main


def main() -> None:
    global CONFIG, RESULTS, EVAL_LIMIT
    ap = argparse.ArgumentParser(description="StepCoder learning benchmark (resumable)")
    ap.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma list of {', '.join(ARMS)}")
    ap.add_argument("--seeds", type=int, default=1,
                    help="replicates per arm (generation.seed 0..N-1; seed 0 is the arm's bare name): one run "
                         "cannot tell arms apart whose difference is within the training's own noise")
    ap.add_argument("--iterations", type=int, default=32, help="iterations per arm (the generation budget)")
    ap.add_argument("--eval-every", type=int, default=8)
    ap.add_argument("--work", type=Path, default=REPO / ".stepcoder" / "bench-learn")
    ap.add_argument("--commit", action="store_true", help="git-commit the budget's results folder after each arm")
    ap.add_argument("--config", type=Path, default=CONFIG, help="run config of every arm")
    ap.add_argument("--set", action="append", default=[], help="override for every arm, e.g. model.path=tiny")
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="where <N>-iterations/summary.json and the figures go")
    ap.add_argument("--eval-limit", type=int, default=None, help="first N problems of each eval (smoke tests)")
    args = ap.parse_args()
    CONFIG, RESULTS, EVAL_LIMIT = args.config.resolve(), args.results.resolve(), args.eval_limit
    EXTRA.extend(args.set)
    if args.seeds < 1:
        sys.exit(f"--seeds must be at least 1, got {args.seeds}")
    arms = [run_name(a, k) for a in (a.strip() for a in args.arms.split(",") if a.strip())
            for k in range(args.seeds)]
    unknown = [a for a in arms if parse_run(a)[0] not in ARMS]
    if unknown:
        sys.exit(f"unknown arms {unknown}; valid: {', '.join(ARMS)}")
    cfg = _config(arms[0], args.work)
    per_iteration = cfg.data.problems_per_iteration * cfg.generation.n_samples
    budget = {"iterations": args.iterations, "eval_every": args.eval_every,
              "samples_per_iteration": per_iteration, "samples_per_arm": per_iteration * args.iterations,
              "pool": cfg.data.subset, "problems_per_iteration": cfg.data.problems_per_iteration,
              "n_samples": cfg.generation.n_samples}
    print(f"[bench-learn] arms {arms}; {args.iterations} iterations × {per_iteration} samples = "
          f"{budget['samples_per_arm']} samples per arm; evaluation on {MAIN_EVAL} every {args.eval_every}")
    here = budget_dir(args.iterations) / "summary.json"
    previous = json.loads(here.read_text()) if here.exists() else {}
    # Every arm already finished at this budget stays in the summary, also when this sitting runs other arms.
    finished = {a: s for a, s in previous.get("arms", {}).items() if s.get("iterations") == args.iterations}
    # The base model's evaluations (with each problem's outcome) are kept in summary.json: a later sitting on
    # another machine, or another budget, reuses them instead of evaluating the same weights again.
    summaries = [previous, *(json.loads(p.read_text()) for p in sorted(RESULTS.glob("*-iterations/summary.json"))
                             if p != here)]
    base = {split: _kept_base(summaries, split, cfg.model.path) or cached_eval(
                args.work / "evals" / "base" / f"{split}.json",
                lambda s=split: evaluate_policy(cfg, str(_base_dir(cfg)), s))
            for split in FINAL_EVALS}
    for split, e in base.items():
        print(f"[bench-learn] base {split} pass@1 {e['pass@1']:.3f} {_ci(e)}")
    for arm in finished:
        _complete_finals(arm, finished[arm], args.work)
    todo = [a for a in arms if a not in finished]
    started = time.time()
    plan = {"iteration_s": [], "iterations_after": lambda arm: args.iterations * (len(todo) - 1 - todo.index(arm))}
    results = dict(finished)
    write_summary(args.work, base, results, budget, cfg.model.path)
    for arm in todo:
        results[arm] = run_arm(arm, args.work, args.iterations, args.eval_every, started, plan)
        write_summary(args.work, base, results, budget, cfg.model.path)
        if args.commit:
            out = budget_dir(args.iterations)
            subprocess.run(["git", "add", str(out)], cwd=REPO, check=True)
            subprocess.run(["git", "commit", "-q", "-m", f"bench-learn: arm {arm} finished ({args.iterations} "
                            f"iterations)", "--", str(out)], cwd=REPO, check=False)


def _complete_finals(arm: str, summary: dict, work: Path) -> None:
    """A final evaluation added after ``arm`` finished (MBPP+): made from its last checkpoint where this machine
    still has it; otherwise the arm keeps the splits it has and the table shows '-'."""
    missing = [split for split in FINAL_EVALS if split not in summary["final"]]
    if not missing:
        return
    cfg = _config(arm, work)
    # The checkpoint of the iteration this summary stopped at, not the store's latest: the same store may have
    # gone on to a longer budget since, and a 16-iteration figure must come from the 16-iteration weights.
    policy = policy_at(cfg, summary["iterations"])
    if policy is None or not Path(policy).exists():
        print(f"[bench-learn] arm {arm}: its iteration-{summary['iterations']} checkpoint is not on this machine "
              f"(another machine ran it, or a later iteration pruned it), so no {', '.join(missing)}")
        return
    for split in missing:
        summary["final"][split] = cached_eval(work / "evals" / arm / f"{summary['iterations']}-{split}.json",
                                              lambda s=split: evaluate_policy(cfg, policy, s))


def _kept_base(summaries: list[dict], split: str, model: str) -> dict | None:
    """The base model's evaluation on ``split`` from any budget's summary (the same weights every time)."""
    if EVAL_LIMIT is not None:  # a smoke test's partial evaluation is not the base model's figure
        return None
    for summary in summaries:
        kept = summary.get("base", {}).get(split)
        same_model = summary.get("model") == MODEL_NAMES.get(model, model)
        if kept and "passed" in kept and same_model and kept["problems"] > 0:
            return kept
    return None


def _base_dir(cfg) -> Path:
    from stepcoder.models import resolve_model

    return resolve_model(cfg.model.path)


if __name__ == "__main__":
    main()
