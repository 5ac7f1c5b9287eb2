"""Two stored runs through the harness (no model needed: every rollout is already in its store), their
reports, and `attncore eval compare` on them, checked against hand-computed numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attncore.cli import app
from attncore.data import load_problems
from attncore.eval.compare import write_comparison
from attncore.eval.config import SuiteConfig
from attncore.eval.report import load_report
from attncore.eval.suite import run_suite
from attncore.rollout.job import store_meta
from attncore.rollout.store import RolloutStore
from attncore.rollout.types import Rollout

pytestmark = pytest.mark.slow  # four grading pools start in the fixture

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_gsm8k(data: Path, count: int) -> Path:
    """A GSM8K-format test file of `count` problems `a + b` with gold answer `10 * (i + 1)`."""
    folder = data / "benchmarks" / "gsm8k"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "idx": i,
            "question": f"What is {5 * (i + 1)} + {5 * (i + 1)}?",
            "answer": f"It is.\n#### {10 * (i + 1)}",
        }
        for i in range(count)
    ]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def suite(tmp_path: Path, name: str) -> SuiteConfig:
    return SuiteConfig.model_validate(
        {
            "name": name,
            "out": str(tmp_path / name),
            "data_dir": str(tmp_path / "data"),
            "model": {"name": "stored-only"},
            "sampling": {"n": 2, "temperature": 0.6, "top_p": 0.95, "max_tokens": 64},
            "grading": {"mode": "gsm8k", "workers": 1},
            "benchmarks": {
                "gsm8k": {"limit": 2},
                "gsm8k_tail": {"dataset": "gsm8k", "offset": 2, "limit": 2},
            },
            "tracking": {"mode": "disabled"},
        }
    )


def store_run(cfg: SuiteConfig, samples: dict[str, list[list[tuple[bool, int]]]]) -> None:
    """Write rollouts as the harness would: `samples[label][problem] = [(correct, tokens), ...]`."""
    for label, per_problem in samples.items():
        job = cfg.job(label)
        problems = load_problems(job.data)
        store = RolloutStore(job.out, store_meta(job, "hf"))
        rollouts = []
        for problem, outcomes in zip(problems, per_problem, strict=True):
            for i, (correct, tokens) in enumerate(outcomes):
                text = f"#### {problem.answer if correct else 0}"
                rollouts.append(
                    Rollout(
                        f"{problem.id}#{i}",
                        problem.id,
                        i,
                        problem.source,
                        problem.problem,
                        problem.answer,
                        "prompt",
                        [1],
                        [7] * tokens,
                        text,
                        "stop" if tokens < 64 else "length",
                        "m",
                        0,
                        0.6,
                        0.95,
                        0,
                        64,
                    )
                )
        store.append(rollouts)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("runs")
    write_gsm8k(tmp_path / "data", 4)
    base, short = suite(tmp_path, "base"), suite(tmp_path, "short")
    store_run(
        base,
        {
            "gsm8k": [[(True, 10), (False, 20)], [(True, 30), (True, 40)]],
            "gsm8k_tail": [[(True, 10), (False, 10)], [(False, 10), (True, 10)]],
        },
    )
    store_run(
        short,
        {
            "gsm8k": [[(True, 5), (True, 5)], [(True, 10), (False, 20)]],
            "gsm8k_tail": [[(False, 8), (False, 8)], [(True, 8), (False, 64)]],
        },
    )
    base_report = run_suite(base, progress=False)
    short_report = run_suite(short.model_copy(update={"baseline": base.out}), progress=False)
    return tmp_path, base_report, short_report


def test_reports_of_stored_runs(runs):
    tmp_path, base, short = runs
    m = base.benchmarks["gsm8k"]
    assert (m.problems, m.samples, m.rollouts) == (2, 2, 4)
    assert m.pass1 == 0.75 and m.pass_k == {1: 0.75, 2: 1.0}
    assert (m.tokens_mean, m.tokens_median) == (25.0, 25.0)
    assert (m.tokens_mean_correct, m.tokens_median_correct) == (80 / 3, 30.0)
    assert (m.tokens_mean_incorrect, m.tokens_median_incorrect) == (20.0, 20.0)
    assert (m.thinking_tokens_mean, m.answer_tokens_mean) == (0.0, 25.0), "plain template: no thinking"
    assert m.truncation_rate == 0.0 and m.grade_reasons == {"ok": 4} and m.grade_mode == "gsm8k"

    tail = short.benchmarks["gsm8k_tail"]
    assert tail.pass1 == 0.25 and tail.pass_k == {1: 0.25, 2: 0.5}
    assert tail.tokens_mean == 22.0 and tail.truncation_rate == 0.25
    assert tail.tokens_mean_correct == 8.0 and tail.tokens_median_incorrect == 8.0
    # AES against the base run: gsm8k dL = (25 - 10) / 25, dA = 0; tail dL = (10 - 22) / 10, dA = -0.5
    assert short.benchmarks["gsm8k"].aes == pytest.approx(0.6)
    assert tail.aes == pytest.approx(-1.2 - 5 * 0.5)
    assert short.mean_aes == pytest.approx((0.6 - 3.7) / 2)

    saved = load_report(tmp_path / "short")
    assert saved == short, "metrics.json round-trips"
    md = (tmp_path / "short" / "metrics.md").read_text()
    assert "| gsm8k_tail | 2 x 2" in md and "+0.600" in md and "-3.700" in md
    for png in ("length_histograms.png", "accuracy_vs_tokens.png"):
        assert (tmp_path / "short" / png).read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "short" / "config.resolved.yaml").is_file()


def table_rows(text: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in text.splitlines()[2:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


def test_compare_two_stored_runs(runs):
    tmp_path, _, _ = runs
    text = write_comparison([tmp_path / "base", tmp_path / "short"], out=tmp_path / "cmp")
    rows = table_rows(text)
    # cells: pass@1 (CI), Δ pass@1, only base / only run (p), tokens, Δ tokens, truncated, AES
    assert rows[("gsm8k", "base")][1:5] == ["base", "base", "25.0", "base"]
    # paired by rollout: gsm8k p0#1 only short, p1#1 only base; tail p2#0 and p3#1 only base, p3#0 only
    # short; exact McNemar 2 * (C(2,0) + C(2,1)) / 4 and 2 * (C(3,0) + C(3,1)) / 8, both capped at 1
    assert rows[("gsm8k", "short")][1:] == ["+0.0", "1 / 1 (p = 1.000)", "10.0", "-60.0%", "0.0", "+0.600"]
    assert rows[("gsm8k_tail", "short")][1:] == [
        "-25.0",
        "2 / 1 (p = 1.000)",
        "22.0",
        "+120.0%",
        "25.0",
        "-3.700",
    ]
    # averages over both benchmarks: pass@1 62.5 -> 50.0, tokens 17.5 -> 16.0, AES mean of the two
    assert rows[("average", "base")][:4] == ["62.5", "base", "", "17.5"]
    assert rows[("average", "short")] == ["50.0", "-12.5", "", "16.0", "-8.6%", "", "-1.550"]
    assert (tmp_path / "cmp" / "compare.md").read_text().strip() == text.strip()
    assert (tmp_path / "cmp" / "accuracy_vs_tokens.png").read_bytes().startswith(PNG_MAGIC)

    other_base = table_rows(write_comparison([tmp_path / "short"], baseline=tmp_path / "short"))
    assert other_base[("gsm8k", "short")][1] == "base"


def test_compare_cli(runs):
    tmp_path, _, _ = runs
    result = CliRunner().invoke(app, ["eval", "compare", str(tmp_path / "base"), str(tmp_path / "short")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == write_comparison([tmp_path / "base", tmp_path / "short"]).strip()
