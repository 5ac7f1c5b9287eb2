"""The micro testbed recipe end to end: SFT of the embedded SmolLM2 on generated traces, then held-out
greedy rollouts graded and labelled by the oracle (about 3 minutes on 2 CPU cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from attncore.config import load_config
from attncore.data import read_jsonl
from attncore.models import load_model
from attncore.paths import built_model_dir
from attncore.synthetic.dataset import generate_examples
from attncore.synthetic.evaluation import evaluate_testbed
from attncore.synthetic.testbed_model import TestbedModelConfig, train

MICRO = Path(__file__).parents[3] / "experiments" / "testbed" / "micro.yaml"


@pytest.mark.slow
def test_micro_recipe_teaches_format_overthinking_and_above_chance_accuracy(smollm2, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNCORE_CACHE_DIR", str(tmp_path))
    cfg = load_config(TestbedModelConfig, MICRO, [f"base_model={smollm2.source}"])
    figures = train(cfg, progress=False)
    assert figures["examples"] == 160 and figures["optimizer_steps"] == 40
    assert Path(figures["checkpoint"]) == built_model_dir("testbed-micro")
    assert figures["train_loss"] < 1.0  # measured 0.75 (mean over the run; the first steps are near 1.8)

    saved = tmp_path / "rollouts.jsonl"
    result = evaluate_testbed(
        load_model(figures["checkpoint"]), cfg.evaluation, progress=False, rollouts_out=saved
    )
    # Measured 2026-11-27 on the 2-core dev box (32 problems of difficulty 1): 30/32 well-formed, 1 truncated,
    # 26.6% of thinking tokens in oracle-redundant steps, 48.8 thinking tokens on average, accuracy 8/32.
    # Floating-point detail moves these by a problem or two: on the earlier test set (difficulty 1-2) the
    # full-logits loss gave 4/32 and the equal loss on supervised positions only 2/32. Hence the margins.
    assert result.problems == 32
    assert result.well_formed >= 28 / 32
    assert result.truncated <= 3 / 32
    assert result.redundancy_ratio >= 0.10
    assert 30 <= result.mean_thinking_tokens <= 100
    # Chance: boxing a number that the problem states is right on none of these problems, and a uniform
    # guess among the possible answers (1..50) on 2% of them (4 or more of 32 then has probability 0.3%).
    examples = generate_examples(cfg.evaluation.data)
    assert not any(e.problem.answer in e.problem.quantities for e in examples)
    assert result.accuracy >= 4 / 32

    # The saved rollouts hold what the figures were computed from.
    records = read_jsonl(saved)
    assert [r["problem_id"] for r in records] == [e.id for e in examples]
    assert sum(r["correct"] for r in records) == round(32 * result.accuracy)
    assert sum(r["well_formed"] for r in records) == round(32 * result.well_formed)
    assert sum(r["thinking_tokens"] for r in records) == pytest.approx(32 * result.mean_thinking_tokens)
    assert all(r["correct"] == (r["pred"] == r["gold"]) for r in records if r["well_formed"])
    assert all(len(r["step_labels"]) >= 1 for r in records if r["well_formed"])
