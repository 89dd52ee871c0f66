"""`stepcoder data list|validate` and `stepcoder eval`: datasets and evaluation at the terminal.

Registered in flows/cli.py with ``app.add_typer(data_app, name="data")`` and ``app.command("eval")(eval_command)``.
A dataset is named ``FORMAT`` or ``FORMAT:PATH`` (``stepcoder data list`` with no argument lists the formats).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

data_app = typer.Typer(help="Datasets: list what a source holds, validate canonical solutions.",
                       no_args_is_help=True)
console = Console()
err = Console(stderr=True)

SOURCE_HELP = "FORMAT or FORMAT:PATH, e.g. mbpp, leetcode, apps:/data/APPS/train, appsplus:data.json"


def _source(source: str):
    from stepcoder.datasets import DatasetError, parse_source

    try:
        return parse_source(source)
    except DatasetError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)


def _formats_table() -> Table:
    from stepcoder.datasets import FORMATS

    table = Table(title="dataset formats")
    for col in ("format", "splits", "shipped", "description"):
        table.add_column(col)
    for f in FORMATS.values():
        table.add_row(f.name, ", ".join(f.splits) or "-", "yes" if f.shipped else "needs a path", f.description)
    return table


@data_app.command("list")
def data_list(
    source: Optional[str] = typer.Argument(None, help=SOURCE_HELP),
    split: Optional[str] = typer.Option(None, "--split", help="only this split"),
    show_rejects: int = typer.Option(10, "--show-rejects", help="print the first N rejected records"),
) -> None:
    """Count a source's problems by split, difficulty and test kind; count rejected records by reason."""
    from stepcoder.datasets import DatasetError, scan

    if source is None:
        console.print(_formats_table())
        return
    fmt, path = _source(source)
    try:
        loaded = scan(fmt, path, split)
    except DatasetError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    counts = Counter((p.meta.get("split") or "-", p.difficulty or "-", p.tests.kind) for p in loaded.problems)
    table = Table(title=f"{loaded.source}: {len(loaded.problems)} problems")
    for col in ("split", "difficulty", "tests", "problems"):
        table.add_column(col, justify="right" if col == "problems" else "left")
    for (s, d, k), n in sorted(counts.items()):
        table.add_row(s, d, k, str(n))
    console.print(table)
    with_solution = sum(bool(p.solution.strip()) for p in loaded.problems)
    console.print(f"with a canonical solution: {with_solution} · without: {len(loaded.problems) - with_solution}")
    _print_rejects(loaded.rejects, show_rejects)


def _print_rejects(rejects, show: int) -> None:
    if not rejects:
        console.print("rejected records: 0")
        return
    by = Counter(r.reason for r in rejects)
    console.print(f"rejected records: {len(rejects)} (" + ", ".join(f"{k} {v}" for k, v in by.items()) + ")")
    for r in rejects[:show]:
        console.print(f"  [yellow]{r.reason}[/yellow] {r.detail}", highlight=False, soft_wrap=True)
    if len(rejects) > show:
        console.print(f"  ... {len(rejects) - show} more (write them all with --out-rejects)")


@data_app.command("validate")
def data_validate(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    split: Optional[str] = typer.Option(None, "--split", help="only this split"),
    out_clean: Optional[Path] = typer.Option(None, "--out-clean", help="write the clean problems here (JSONL; "
                                                                       "load it back as stepcoder:FILE)"),
    out_rejects: Optional[Path] = typer.Option(None, "--out-rejects", help="rejects report (.jsonl or .csv): "
                                                                           "problem_id, reason, detail, where"),
    timeout_s: float = typer.Option(4.0, "--timeout", help="per-test wall-clock limit, seconds"),
    budget_s: float = typer.Option(20.0, "--budget", help="per-solution wall-clock budget, seconds"),
    workers: Optional[int] = typer.Option(None, "--workers", help="solutions run at once (default: CPU count)"),
    subset: Optional[int] = typer.Option(None, "--subset", help="validate a seeded random subset of N problems"),
    seed: int = typer.Option(0, "--seed"),
    show_rejects: int = typer.Option(20, "--show-rejects", help="print the first N rejects"),
) -> None:
    """Run every canonical solution against its own tests in the sandbox; report and drop the bad problems."""
    from stepcoder.datasets import DatasetError
    from stepcoder.datasets.problems_jsonl import write_problems
    from stepcoder.datasets.splits import random_subset
    from stepcoder.datasets.validate import validate_source, write_rejects

    fmt, path = _source(source)
    pick = (lambda ps: random_subset(ps, subset, seed)) if subset else None
    try:
        report = validate_source(fmt, path, split, problems_filter=pick, timeout_s=timeout_s, budget_s=budget_s,
                                 workers=workers)
    except DatasetError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    s = report.summary()
    console.print(f"[bold]{s['source']}[/bold]: {s['clean']} clean, {s['rejected']} rejected · "
                  f"{s['executed']} solutions run ({s['retried']} timeouts retried) in {s['seconds']} s")
    _print_rejects(report.rejects, show_rejects)
    if out_clean:
        n = write_problems(report.clean, out_clean)
        console.print(f"clean subset ({n}) → {out_clean}  (load it as stepcoder:{out_clean})")
    if out_rejects:
        n = write_rejects(report.rejects, out_rejects)
        console.print(f"rejects report ({n}) → {out_rejects}")


def eval_command(
    checkpoint: str = typer.Option(..., "--checkpoint", help="policy: a HF model dir, a training checkpoint dir "
                                                             "(holding policy/), or a named model (tiny, ...)"),
    dataset: str = typer.Option(..., "--dataset", help=SOURCE_HELP + "; or eval:NAME[:PATH], a held-out eval split "
                                                        "(mbpp-test, humaneval, leetcode-test, apps-eval150, ...)"),
    split: Optional[str] = typer.Option(None, "--split", help="split of the dataset"),
    n: int = typer.Option(1, "--n", min=1, help="samples per problem"),
    k: list[int] = typer.Option([1], "--k", help="pass@k to report (repeatable; each <= n)"),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy (then n must be 1)"),
    top_p: float = typer.Option(1.0, "--top-p"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="first N problems only"),
    seed: int = typer.Option(0, "--seed"),
    dtype: str = typer.Option("bfloat16", "--dtype", help="vLLM dtype: bfloat16 or float32"),
    max_model_len: int = typer.Option(1024, "--max-model-len"),
    prompt_format: str = typer.Option("auto", "--prompt-format", help="auto, chat or plain"),
    timeout_s: float = typer.Option(4.0, "--timeout", help="per-test wall-clock limit, seconds"),
    workers: Optional[int] = typer.Option(None, "--workers"),
    name: Optional[str] = typer.Option(None, "--name", help="eval_name in the evals table (default: --dataset, "
                                                             "plus /SPLIT)"),
    store: Optional[str] = typer.Option(None, "--store", help="write rows to this store's evals table"),
    run: str = typer.Option("eval", "--run", help="store run to write under (keep it apart from training runs)"),
    iteration: Optional[int] = typer.Option(None, "--iteration", help="store iteration (default: the next free)"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the rows and per-problem scores as JSON"),
) -> None:
    """Evaluate a checkpoint: pass@k (greedy pass@1 at temperature 0), broken down by difficulty."""
    from stepcoder.datasets import DatasetError, load_problems
    from stepcoder.datasets.splits import load_eval_split
    from stepcoder.evaluation import evaluate
    from stepcoder.evaluation.evaluate import eval_mode

    try:
        eval_mode(n, temperature)
        if any(x < 1 or x > n for x in k):
            raise ValueError(f"every --k must be in [1, --n={n}], got {k}")
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    try:
        if dataset.startswith("eval:"):  # eval:NAME or eval:NAME:PATH
            _, split_name, path = (dataset.split(":", 2) + [""])[:3]
            problems = load_eval_split(split_name, path or None)
        else:
            fmt, path = _source(dataset)
            problems = load_problems(fmt, path, split)
    except DatasetError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    problems = problems[:limit] if limit else problems
    if not problems:
        err.print(f"[red]{dataset}: no problems to evaluate[/red]")
        raise typer.Exit(1)
    model_dir, checkpoint_uri = _policy_dir(checkpoint)
    eval_name = name or (dataset if not split else f"{dataset}/{split}")

    from stepcoder.execution import make_executor
    from stepcoder.generation import make_generator
    from stepcoder.prompts import chat_renderer

    generator = make_generator("vllm", str(model_dir), dtype=dtype, max_model_len=max_model_len, seed=seed)
    try:
        chat = chat_renderer(generator.tokenizer, prompt_format)
        with make_executor("embedded", timeout_s=timeout_s, budget_s=5 * timeout_s, workers=workers,
                           coverage=False) as executor:
            result = evaluate(generator, executor, problems, eval_name=eval_name, n=n, ks=k,
                              temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                              chat_template=chat, checkpoint_uri=checkpoint_uri)
    finally:
        close = getattr(generator, "close", None)
        if close:
            close()
    _print_metrics(result)
    if out:
        out.write_text(json.dumps({"rows": result.rows, "scores": [s.__dict__ for s in result.scores]}, indent=1))
        console.print(f"rows and per-problem scores → {out}")
    if store:
        it = write_eval_rows(store, run, iteration, result.rows)
        console.print(f"evals → {store} (run {run}, iteration {it})")


def _policy_dir(checkpoint: str) -> tuple[Path, str]:
    """(HF model dir to load, checkpoint URI to record). A training checkpoint keeps its weights in policy/."""
    from stepcoder.models import NAMED_MODELS, resolve_model

    if checkpoint in NAMED_MODELS:
        return resolve_model(checkpoint), checkpoint
    path = Path(checkpoint).expanduser().resolve()
    if (path / "policy" / "config.json").exists():
        return path / "policy", str(path)
    if (path / "config.json").exists():
        return path, str(path)
    err.print(f"[red]--checkpoint {checkpoint}: no config.json there or in policy/, and not a named model "
              f"({', '.join(NAMED_MODELS)})[/red]")
    raise typer.Exit(2)


def _print_metrics(result) -> None:
    table = Table(title=f"{result.eval_name} ({result.mode}, {len(result.scores)} problems)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for row in result.rows:
        v = row["value"]
        table.add_row(row["metric"], f"{v:.4f}" if not float(v).is_integer() else str(int(v)))
    console.print(table)


def write_eval_rows(store_url: str, run: str, iteration: int | None, rows: list[dict]) -> int:
    """Stage and commit eval rows as their own iteration of ``run`` (the next free one unless given).

    A committed iteration is never overwritten: commit() republishes every table of an iteration, so writing into
    a training iteration would drop its rollouts.
    """
    from storage import open_store

    st = open_store(store_url)
    done = st.committed_iterations(run)
    it = iteration if iteration is not None else (done[-1] + 1 if done else 1)
    if it in done:
        err.print(f"[red]run {run!r} iteration {it} is already committed; pick another --iteration or --run[/red]")
        raise typer.Exit(1)
    st.stage(run, it, "evals", rows)
    st.commit(run, it)
    return it
