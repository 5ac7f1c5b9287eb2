"""`synth` commands: generate a labelled synthetic set, label traces or rollouts with the oracle, rank
their steps with trivial rankers, build and evaluate the testbed model."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from statistics import mean
from typing import Annotated, Any

import typer

from attncore.cli_support import CONFIG_OPTION, OVERRIDES_ARGUMENT, config_from_cli, new_app
from attncore.config import save_resolved
from attncore.data import check_row_file, read_rows, write_jsonl
from attncore.errors import UserError
from attncore.synthetic.arithmetic import format_number
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.dataset import generate_examples, write_examples
from attncore.synthetic.oracle import (
    Label,
    Labelling,
    Tokenizer,
    attnpo_steps,
    label_trace,
    redundancy_ratio,
)
from attncore.synthetic.rankers import (
    plot_positions,
    position_counts,
    report_table,
    response_from_row,
    trivial_ranker_report,
)
from attncore.synthetic.stats import summarize
from attncore.tracking import report_to_active_run

app = new_app("Synthetic overthinking testbed: generate problems with labelled traces; label traces.")

TEXT_FIELDS = ("text", "response", "completion", "rationale")  # rollout rows, then synthetic records
SEGMENTER_MODES = ("clean", "faithful")


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.jsonl or .parquet).")],
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
) -> None:
    """Generate problems with R1-style traces and their step labels; print a summary of the set."""
    check_row_file(out)
    cfg = config_from_cli(SyntheticConfig, config, overrides)
    examples = generate_examples(cfg)
    write_examples(examples, out)
    saved = save_resolved(cfg, out.parent, f"{out.stem}.config.resolved.yaml")
    typer.echo(f"wrote {len(examples)} examples to {out} (resolved config: {saved})")
    for key, value in summarize(examples).items():
        typer.echo(f"  {key}: {value}")


def _field(row: dict[str, Any], names: tuple[str, ...], what: str, number: int) -> Any:
    for name in names:
        if row.get(name) is not None:
            return row[name]
    raise UserError(f"row {number} has no {what} (looked for {', '.join(names)})")


def _load_tokenizer(name: str) -> Tokenizer:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise UserError(f"could not load tokenizer {name!r}: {str(exc).splitlines()[0]}") from None


def _generator_labels(row: dict[str, Any]) -> list[str] | None:
    """The labels a synthetic record carries, or None for other rows (rollouts)."""
    steps = row.get("steps")
    if isinstance(steps, list) and steps and all(isinstance(s, dict) and "label" in s for s in steps):
        return [s["label"] for s in steps]
    return None


def _label_row(
    row: dict[str, Any],
    number: int,
    source: dict[str, Any],
    segment: Callable[[str], list[str]],
    counter: Tokenizer | None,
) -> tuple[dict[str, Any], Labelling]:
    """Label one row's trace against its problem (`source` holds the problem text and gold answer)."""
    text = _field(row, TEXT_FIELDS, "trace text", number)
    problem_id = str(_field(row, ("problem_id", "id"), "problem id", number))
    problem_text = _field(source, ("problem",), "problem text", number)
    gold = _field(source, ("gold", "answer"), "gold answer", number)
    labelling = label_trace(str(text), str(problem_text), gold, segment)
    final = labelling.final_answer
    result = {
        "id": str(row.get("rollout_id", row.get("id", problem_id))),
        "problem_id": problem_id,
        "labels": [str(lab) for lab in labelling.labels],
        "steps": [step.text for step in labelling.steps],
        "redundancy_ratio": redundancy_ratio(labelling, counter),
        "final_answer": None if final is None else format_number(final),
        "well_formed": labelling.well_formed,
        "issues": list(labelling.issues),
    }
    return result, labelling


@app.command()
def label(
    traces: Annotated[Path, typer.Argument(help="Traces or rollouts (.jsonl or .parquet), one per row.")],
    problems: Annotated[
        Path | None, typer.Option("--problems", "-p", help="Problem set to look rows up in by problem id.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write per-trace labels here (.jsonl).")
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="AttnPO segmenter mode: clean or faithful.")] = "clean",
    tokenizer: Annotated[
        str | None,
        typer.Option("--tokenizer", help="Count redundancy in this tokenizer's tokens, not characters."),
    ] = None,
) -> None:
    """Label every trace's steps with the oracle and print the redundancy-ratio summary.

    Rows are rollouts (`text`, `problem_id`, `problem`, `gold`) or synthetic records (`rationale`,
    `id`, `problem`, `answer`); with `--problems`, the problem is looked up by id instead.
    """
    if mode not in SEGMENTER_MODES:
        raise UserError(f"--mode must be one of {', '.join(SEGMENTER_MODES)}, got {mode!r}")
    if out is not None and out.suffix != ".jsonl":
        raise UserError(f"{out}: labels are written as JSON lines; use a .jsonl path")
    lookup = None if problems is None else {str(r["id"]): r for r in read_rows(problems) if "id" in r}
    counter = _load_tokenizer(tokenizer) if tokenizer else None
    segment = partial(attnpo_steps, mode=mode)

    results, labels = [], []
    agree = compared = 0
    for number, row in enumerate(read_rows(traces), 1):
        source = row
        if lookup is not None:
            problem_id = str(_field(row, ("problem_id", "id"), "problem id", number))
            if problem_id not in lookup:
                raise UserError(f"row {number}: problem id {problem_id!r} is not in {problems}")
            source = lookup[problem_id]
        result, labelling = _label_row(row, number, source, segment, counter)
        results.append(result)
        labels.extend(labelling.labels)
        expected = _generator_labels(row)
        if expected is not None:
            compared += 1
            agree += expected == result["labels"]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(results, out)

    ratios = [r["redundancy_ratio"] for r in results if r["redundancy_ratio"] is not None]
    unit = "tokens" if counter is not None else "characters"
    typer.echo(f"labelled {len(results)} traces" + (f" -> {out}" if out is not None else ""))
    typer.echo(f"  well formed: {sum(r['well_formed'] for r in results)}")
    typer.echo(f"  steps: {len(labels)} ({', '.join(f'{lab}: {labels.count(lab)}' for lab in Label)})")
    if ratios:
        typer.echo(
            f"  redundancy ratio ({unit}): mean {mean(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}"
        )
    if compared:
        typer.echo(f"  traces whose oracle labels match the generator's: {agree}/{compared}")


@app.command()
def rankers(
    sets: Annotated[
        list[Path],
        typer.Argument(
            help="Generated sets (.jsonl/.parquet) or evaluation rollouts (testbed.rollouts.jsonl)."
        ),
    ],
    include_wrong: Annotated[
        bool, typer.Option("--include-wrong", help="Also rank steps of rollouts graded wrong.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random ranker.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the figures as JSON here.")] = None,
    histogram: Annotated[
        Path | None,
        typer.Option("--histogram", help="Plot essential and redundant steps over relative position (PNG)."),
    ] = None,
    bins: Annotated[int, typer.Option("--bins", min=2, help="Histogram bins.")] = 10,
) -> None:
    """Step Ranking Accuracy of trivial rankers (position, length, mention of the final answer, random)
    on labelled steps, overall and by pair direction. Rollouts count only when graded correct, unless
    `--include-wrong`."""
    if histogram is not None and histogram.suffix != ".png":
        raise UserError(f"{histogram}: the histogram is written as PNG; use a .png path")
    figures, panels = {}, {}
    for path in sets:
        rows = read_rows(path)
        kept = [(n, row) for n, row in enumerate(rows, 1) if include_wrong or row.get("correct", True)]
        responses = [response_from_row(row, n) for n, row in kept]
        report = trivial_ranker_report(responses, seed)
        typer.echo(f"{path}: {len(kept)} of {len(rows)} rows")
        typer.echo(report_table(report))
        counts = position_counts(responses, bins)
        panels[path.name] = counts
        figures[str(path)] = {
            "rows": len(rows),
            "responses": len(responses),
            "rankers": {
                name: {**asdict(acc), "share_after": acc.share_after} for name, acc in report.items()
            },
            "positions": counts,
        }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=1))
    if histogram is not None:
        typer.echo(f"histogram -> {plot_positions(panels, histogram)}")


@app.command("train-model")
def train_model(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    skip_eval: Annotated[bool, typer.Option("--skip-eval", help="Train and save only.")] = False,
    if_missing: Annotated[
        bool,
        typer.Option(
            "--if-missing", help="Do nothing when the cache holds the model built from this recipe."
        ),
    ] = False,
) -> None:
    """Fine-tune the testbed's mini reasoning model (default: `testbed-mini` from SmolLM2-135M), save it in
    the cache under its name, then evaluate it on held-out problems. Resumes an interrupted run."""
    from attncore.models import CACHE_MARKER, is_complete_cache, load_model
    from attncore.paths import built_model_dir
    from attncore.synthetic.evaluation import evaluate_testbed
    from attncore.synthetic.testbed_model import TestbedModelConfig, config_hash, train

    cfg = config_from_cli(TestbedModelConfig, config, overrides)
    built = built_model_dir(cfg.name)
    if (
        if_missing
        and is_complete_cache(built)
        and json.loads((built / CACHE_MARKER).read_text()).get("recipe") == config_hash(cfg)
        and (skip_eval or (built / "testbed.results.json").is_file())
    ):
        typer.echo(f"{cfg.name} is built from this recipe: {built}")
        return
    figures = train(cfg)
    typer.echo(
        f"trained {cfg.name}: {figures['examples']} examples, {figures['optimizer_steps']} steps, "
        f"loss {figures['train_loss']:.3f}, {figures['train_seconds'] / 60:.1f} min -> {figures['checkpoint']}"
    )
    results = {"training": figures}
    if not skip_eval:
        rollouts = Path(figures["checkpoint"]) / "testbed.rollouts.jsonl"
        evaluation = evaluate_testbed(
            load_model(figures["checkpoint"]), cfg.evaluation, rollouts_out=rollouts
        )
        typer.echo(evaluation.table())
        typer.echo(f"rollouts -> {rollouts}")
        results["evaluation"] = evaluation.as_dict()
    (Path(figures["checkpoint"]) / "testbed.results.json").write_text(json.dumps(results, indent=1))
    report_to_active_run(_flat_figures("testbed", results))


def _flat_figures(prefix: str, tree: dict[str, Any]) -> dict[str, float]:
    """Numeric leaves of nested figures as `prefix/key/subkey` (wandb summary keys)."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict):
            flat.update(_flat_figures(name, value))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = value
    return flat


@app.command()
def evaluate(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model name, folder or hub id.")
    ] = "testbed-mini",
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the figures as JSON here.")] = None,
    rollouts: Annotated[
        Path | None,
        typer.Option("--rollouts", help="Write each rollout, graded and labelled, as JSON lines here."),
    ] = None,
) -> None:
    """Accuracy, well-formedness, thinking length and oracle redundancy ratio on held-out problems."""
    from attncore.models import load_model
    from attncore.synthetic.evaluation import evaluate_testbed
    from attncore.synthetic.testbed_model import EvaluationConfig

    cfg = config_from_cli(EvaluationConfig, config, overrides)
    evaluation = evaluate_testbed(load_model(model), cfg, rollouts_out=rollouts)
    typer.echo(evaluation.table())
    if out is not None:
        out.write_text(json.dumps(evaluation.as_dict(), indent=1))
    if rollouts is not None:
        typer.echo(f"rollouts -> {rollouts}")
