"""Grading throughput: the worker pool against serial math-verify in the main thread, on MATH500 answers.

The answers are MATH500 reference solutions (correct) and the same solutions with the boxed answer
perturbed (wrong), half and half. Correct answers mostly match on the normal form; wrong ones go through
math-verify, the slow path. Start-up (forkserver import, worker warm-up) is timed separately.

    python benchmarks/grading_throughput.py --n 1000 --workers 2
"""

from __future__ import annotations

import argparse
import re
import time

from attncore.data import DataConfig, load_problems
from attncore.grading import Grader, extract_boxed

_FIRST_DIGIT = re.compile(r"\d")


def _perturbed(answer: str) -> str:
    """A wrong answer of the same shape: the first digit bumped, or `+1` appended when there is none."""
    match = _FIRST_DIGIT.search(answer)
    if match is None:
        return answer + "+1"
    return f"{answer[: match.start()]}{(int(match.group()) + 1) % 10}{answer[match.end() :]}"


def build_answers(n: int) -> tuple[list[str], list[str]]:
    """`n` responses and their gold answers, cycling over MATH500; every second response is wrong.

    A problem's second visit flips which of correct / wrong it gets, so no response repeats within the
    first 1,000 and math-verify's parse cache does not favour the single-process baseline.
    """
    problems = [p for p in load_problems(DataConfig(name="math500")) if p.rationale]
    responses, golds = [], []
    for i in range(n):
        problem = problems[i % len(problems)]
        solution = problem.rationale or ""
        if (i + i // len(problems)) % 2:
            answer = extract_boxed(solution) or ""
            box = f"\\boxed{{{answer}}}"  # every MATH500 solution boxes its answer this way
            cut = solution.rfind(box)
            solution = f"{solution[:cut]}\\boxed{{{_perturbed(answer)}}}{solution[cut + len(box) :]}"
        responses.append(solution)
        golds.append(problem.answer)
    return responses, golds


def measure(n: int = 1000, workers: int = 2) -> dict[str, float | int | bool]:
    """Grade `n` answers with a `workers`-process pool and serially in this process; return the timings."""
    from attncore.grading import rules  # the serial baseline needs math-verify in this process

    responses, golds = build_answers(n)

    started = time.perf_counter()
    with Grader(workers=workers) as grader:
        ready = time.perf_counter()
        pooled = grader.grade(responses, golds)
        pool_s = time.perf_counter() - ready
    start_s = ready - started

    rules.warm_up()
    began = time.perf_counter()
    serial = [rules.grade_response(response, gold) for response, gold in zip(responses, golds, strict=True)]
    serial_s = time.perf_counter() - began

    return {
        "answers": n,
        "workers": workers,
        "pool_start_s": start_s,
        "pool_s": pool_s,
        "pool_answers_per_s": n / pool_s,
        "serial_s": serial_s,
        "serial_answers_per_s": n / serial_s,
        "speedup": serial_s / pool_s,
        "accuracy": sum(result.correct for result in pooled) / n,
        "verdicts_agree": [r.correct for r in pooled] == [r.correct for r in serial],
    }


def markdown_table(figures: dict[str, float | int | bool]) -> str:
    """The figures of `measure` as a small Markdown table."""
    n, workers = figures["answers"], figures["workers"]
    return "\n".join(
        [
            "| grader | answers | seconds | answers/s |",
            "|---|---:|---:|---:|",
            f"| pool, {workers} workers | {n} | {figures['pool_s']:.2f} | {figures['pool_answers_per_s']:.0f} |",
            f"| serial, main thread | {n} | {figures['serial_s']:.2f} | {figures['serial_answers_per_s']:.0f} |",
            "",
            f"pool / serial: {figures['speedup']:.2f}x; pool start-up {figures['pool_start_s']:.2f} s (not counted); "
            f"accuracy {figures['accuracy']:.3f}; pool and serial verdicts agree: {figures['verdicts_agree']}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="answers to grade")
    parser.add_argument("--workers", type=int, default=2, help="pool size")
    args = parser.parse_args()
    print(markdown_table(measure(args.n, args.workers)))


if __name__ == "__main__":
    main()
