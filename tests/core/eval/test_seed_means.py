"""The seed-mean table of `attncore eval compare`: which runs form an arm, and the means and deltas
checked against hand-computed numbers on hand-built reports (no stores, no grading)."""

from __future__ import annotations

from attncore.eval.compare import seed_arms, seed_means_table
from attncore.eval.report import BenchmarkMetrics, RunReport


def metrics(pass1: float, tokens: float) -> BenchmarkMetrics:
    return BenchmarkMetrics(
        dataset="testbed",
        problems=300,
        samples=1,
        rollouts=300,
        pass1=pass1,
        pass1_low=None,
        pass1_high=None,
        pass_k={1: pass1},
        tokens_mean=tokens,
        tokens_median=tokens,
        tokens_mean_correct=None,
        tokens_median_correct=None,
        tokens_mean_incorrect=None,
        tokens_median_incorrect=None,
        thinking_tokens_mean=tokens,
        answer_tokens_mean=0.0,
        truncation_rate=0.0,
        grade_mode="attnpo",
        grade_reasons={},
    )


def report(name: str, pass1: float, tokens: float) -> RunReport:
    return RunReport(name, "student", {"testbed": metrics(pass1, tokens)})


def test_seed_arms_group_names_equal_but_for_the_seed():
    names = [
        "runs/teacher-eval",
        "runs/dss-seed0/eval",
        "runs/molsaki-seed0/eval",
        "runs/dss-seed1/eval",
        "runs/molsaki-seed1/eval",
        "runs/sl-seed0/eval",
        "runs/dss-seed12",
    ]
    assert seed_arms(names) == {
        "runs/dss/eval": ["runs/dss-seed0/eval", "runs/dss-seed1/eval"],
        "runs/molsaki/eval": ["runs/molsaki-seed0/eval", "runs/molsaki-seed1/eval"],
    }
    # "seed" inside a word is not a seed: only `-seed<N>` ending a path part counts
    assert seed_arms(["runs/a-seedling1/eval", "runs/a-seedling2/eval"]) == {}


def test_seed_means_against_the_baseline_arm():
    reports = [
        report("runs/dss-seed0/eval", 0.04, 320.0),
        report("runs/dss-seed1/eval", 0.06, 300.0),
        report("runs/molsaki-seed0/eval", 0.05, 310.0),
        report("runs/molsaki-seed1/eval", 0.08, 330.0),
        report("runs/vanilla-seed0/eval", 0.02, 20.0),
    ]
    table = seed_means_table(reports, reports[0])
    assert table is not None
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:4]]
    # DSS: mean of 4.0 and 6.0 = 5.0; MoLSAKI: mean of 5.0 and 8.0 = 6.5, so +1.5 points; tokens 310, 320
    assert rows[0] == ["testbed", "runs/dss/eval", "2", "5.0", "4.0, 6.0", "base", "310"]
    assert rows[1] == ["testbed", "runs/molsaki/eval", "2", "6.5", "5.0, 8.0", "+1.5", "320"]
    assert "vanilla" not in table  # one seed is no mean
    assert "against runs/dss/eval" in table


def test_seed_means_against_a_single_baseline_run():
    reports = [report("runs/teacher-eval", 0.60, 250.0), report("a-seed0", 0.10, 1.0), report("a-seed1", 0.20, 1.0)]
    table = seed_means_table(reports, reports[0])
    assert table is not None
    row = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert row == ["testbed", "a", "2", "15.0", "10.0, 20.0", "-45.0", "1.0"]
    assert seed_means_table(reports[:2], reports[0]) is None
