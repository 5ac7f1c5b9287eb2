"""Run an evaluation suite: every benchmark's rollouts, grades, metrics, then the run's report and plots.

Each benchmark is a rollout job (`attncore.rollout.job`) in its own folder `out/<label>`, so resuming
comes from the rollout store: rerunning the same config reuses every stored rollout and grade and
generates only what a killed run left undone, while a changed benchmark config is refused by its store
(or replaced with `overwrite`). The model is loaded once, and only when something is left to generate.
A benchmark loaded from the hub that cannot be loaded (no network, a gated set) is skipped with its
one-line reason and the rest of the suite runs; a local benchmark that does not load is an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

from attncore.config import save_resolved
from attncore.data import Problem, hub_only, load_problems
from attncore.errors import UserError
from attncore.eval.config import SuiteConfig
from attncore.eval.plots import plot_accuracy_vs_tokens, plot_length_histograms
from attncore.eval.report import RunReport, benchmark_metrics, load_report
from attncore.grading import Grader, GradingMode
from attncore.grading.code import parse_test_spec
from attncore.grading.normalize import choice_gold, numeric_gold
from attncore.rollout.engine import Engine
from attncore.rollout.grade import resolve_grading_mode
from attncore.rollout.job import (
    RolloutJobConfig,
    build_engine,
    resolve_engine,
    run_rollouts,
    store_meta,
)
from attncore.rollout.store import RolloutStore
from attncore.rollout.types import rollout_id
from attncore.tracking import Tracker

LENGTH_HISTOGRAMS = "length_histograms.png"
ACCURACY_VS_TOKENS = "accuracy_vs_tokens.png"


def check_golds(label: str, problems: list[Problem], mode: GradingMode) -> None:
    """Fail before generating when a grading mode cannot read the benchmark's gold answers."""
    check = {
        GradingMode.GSM8K: numeric_gold,
        GradingMode.CHOICE: choice_gold,
        GradingMode.CODE: parse_test_spec,
    }.get(mode)
    if check is None:
        return
    for problem in problems:
        try:
            check(problem.answer)
        except UserError as exc:
            raise UserError(f"benchmark {label!r} ({problem.id}): {exc}") from None


def pending_rollouts(job: RolloutJobConfig, problems: list[Problem], engine_name: str) -> int:
    """How many rollouts of a benchmark its store still lacks (opening it checks the config matches)."""
    if job.overwrite:
        return len(problems) * job.sampling.n
    store = RolloutStore(job.out, store_meta(job, engine_name), repair=True)
    wanted = {rollout_id(p.id, i) for p in problems for i in range(job.sampling.n)}
    return len(wanted - store.done_ids())


def _note(message: str, progress: bool) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def run_suite(cfg: SuiteConfig, progress: bool = True, grader: Grader | None = None) -> RunReport:
    """Evaluate `cfg.model` on every benchmark of `cfg`; writes and returns the run's report.

    `grader` is a started grading pool every benchmark grades with (each starts its own otherwise).
    """
    out = Path(cfg.out)
    baseline = load_report(cfg.baseline) if cfg.baseline is not None else None
    jobs = {label: cfg.job(label) for label in cfg.benchmarks}
    problems: dict[str, list[Problem]] = {}
    skipped: dict[str, str] = {}
    for label, job in jobs.items():
        try:
            problems[label] = load_problems(job.data)
        except UserError as exc:
            if job.data.hub_id is None and not hub_only(job.data.name):
                raise  # a local set that does not load is a setup mistake, not missing network
            skipped[label] = str(exc)
            print(f"skipping {label}: {exc}", file=sys.stderr, flush=True)
            continue
        if not problems[label]:
            raise UserError(f"benchmark {label!r} has no problems (check its offset and limit)")
        check_golds(label, problems[label], resolve_grading_mode(job.grading.mode, job.prompt.template))
    if not problems:
        raise UserError(f"no benchmark of the suite could be loaded: {'; '.join(skipped.values())}")
    save_resolved(cfg, out)

    engine_name = resolve_engine(next(iter(jobs.values())))
    todo = {label: pending_rollouts(jobs[label], problems[label], engine_name) for label in problems}
    engine: Engine | None = None
    if any(todo.values()):
        _note(f"loading {cfg.model.name} for {sum(todo.values())} rollouts", progress)
        engine = build_engine(next(iter(jobs.values())))

    tracker = Tracker(cfg.tracking, cfg.model_dump(mode="json"), out, job="eval")
    try:
        metrics = {}
        histograms = {}
        for position, label in enumerate(problems, 1):
            job = jobs[label]
            _note(
                f"[{position}/{len(problems)}] {label}: {len(problems[label])} problems x {job.sampling.n}",
                progress,
            )
            run_rollouts(job, progress=progress, engine=engine, problems=problems[label], grader=grader)
            table = RolloutStore(job.out, store_meta(job, engine_name)).read_table()
            metrics[label] = benchmark_metrics(job.data.name, table)
            histograms[label] = (
                table.column("n_completion_tokens").to_pylist(),
                table.column("correct").to_pylist(),
            )
        report = RunReport(cfg.run_name, cfg.model.name, metrics, skipped)
        if baseline is not None:
            report = report.with_aes(baseline, cfg.baseline)
        report.save(out)
        plot_length_histograms(histograms, out / LENGTH_HISTOGRAMS)
        if baseline is not None:
            plot_accuracy_vs_tokens([baseline, report], out / ACCURACY_VS_TOKENS)
        tracker.summary(_flat_metrics(report))
    finally:
        tracker.finish()
    return report


def _flat_metrics(report: RunReport) -> dict[str, float]:
    flat: dict[str, float] = {}
    for label, m in report.benchmarks.items():
        flat[f"eval/{label}/pass@1"] = m.pass1
        flat[f"eval/{label}/tokens_mean"] = m.tokens_mean
        flat[f"eval/{label}/truncation_rate"] = m.truncation_rate
        flat.update({f"eval/{label}/pass@{k}": v for k, v in m.pass_k.items()})
        if m.aes is not None:
            flat[f"eval/{label}/aes"] = m.aes
    for key, value in report.to_dict()["average"].items():
        if value is not None:
            flat[f"eval/average/{key}"] = value
    return flat
