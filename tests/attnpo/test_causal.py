"""Step-removal check and head stability."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attncore.errors import UserError
from attncore.models import load_model
from attncore.steps import StepSegmenterConfig
from attnpo.causal import CausalConfig, causal_check, shortened_prefix, steps_to_remove
from attnpo.probe import ProbeConfig, probe_items
from attnpo.stability import sra_stability


def test_steps_to_remove_hand_cases():
    assert steps_to_remove(torch.tensor([0.3, 0.1, 0.5, 0.1]), 1) == ((1,), (2,))
    assert steps_to_remove(torch.tensor([0.3, 0.1, 0.5, 0.1]), 2) == ((1, 3), (0, 2))
    # Ties: the lowest set takes the earlier step, the highest set the later one.
    assert steps_to_remove(torch.tensor([1.0, 1.0, 1.0]), 1) == ((0,), (2,))


def test_sra_stability():
    a = torch.tensor([[0.5, 0.6], [0.7, math.nan]])
    b = torch.tensor([[0.5, 0.7], [0.9, 0.2]])
    r, n = sra_stability(a, b)
    assert n == 3 and r == pytest.approx(1.0)
    r, n = sra_stability(a, 1 - a)
    assert r == pytest.approx(-1.0)
    # x = [0, 1, 0, 1], y = [0, 1, 1, 0]: covariance 0.
    r, _ = sra_stability(torch.tensor([0.0, 1, 0, 1]), torch.tensor([0.0, 1, 1, 0]))
    assert r == pytest.approx(0.0)
    with pytest.raises(UserError, match="not the same model"):
        sra_stability(a, torch.zeros(3, 2))


def test_shortened_prefix_and_causal_check_resume(tiny_model_dir, probe_folder, tmp_path):
    loaded = load_model(str(tiny_model_dir("qwen2")))
    _, rollouts = probe_folder
    probe, _ = probe_items(rollouts, loaded.tokenizer, StepSegmenterConfig(), ProbeConfig(rollouts="x"))
    item = probe[0]
    steps = item.response.steps
    prefix = shortened_prefix(item, [1])
    text = loaded.tokenizer.decode(prefix[len(item.rollout.prompt_ids) :])
    assert text == "".join(s for i, s in enumerate(steps) if i != 1) + "</think>"
    assert prefix[: len(item.rollout.prompt_ids)] == item.rollout.prompt_ids

    scores = {i.rollout.rollout_id: torch.arange(len(i.segmented.steps), dtype=torch.float64) for i in probe}
    labels = {
        i.rollout.rollout_id: tuple(
            "redundant" if k == 0 else "essential" for k in range(len(i.segmented.steps))
        )
        for i in probe
    }
    cfg = CausalConfig(enabled=True, k=1, max_responses=3, sampling={"max_tokens": 4})
    result = causal_check(loaded, probe, scores, labels, cfg, "attnpo", tmp_path, "oracle", progress=False)
    # Scores rise with the position: the lowest step is step 0 (redundant), the highest the last one.
    assert result.responses == 3 and result.redundant_share == {"without_low": 1.0, "without_high": 0.0}
    assert result.labelled_removed == {"without_low": 3, "without_high": 3}
    rows = [json.loads(x) for x in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and {r["condition"] for r in rows} == {"original", "without_low", "without_high"}
    for condition, accuracy in result.accuracy.items():
        assert accuracy == sum(r["correct"] for r in rows if r["condition"] == condition) / 3
    again = causal_check(loaded, probe, scores, labels, cfg, "attnpo", tmp_path, "oracle", progress=False)
    assert again == result and len((tmp_path / "answers.jsonl").read_text().splitlines()) == 9


def test_head_stability_cli(tmp_path, attnpo_cli):
    for name, sra in (("a", [[0.5, 0.6], [0.7, None]]), ("b", [[0.5, 0.7], [0.9, 0.2]])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "sra.json").write_text(json.dumps({"sra": sra, "probe": {"hash": name}}))
    code, out, err = attnpo_cli("head-stability", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code == 0, err
    assert "Pearson r of per-head SRA: 1.000 over 3 heads" in out and "probe hashes differ" in out
    code, _, err = attnpo_cli("head-stability", str(tmp_path), str(tmp_path / "b"))
    assert code == 2 and err.startswith("error: no sra.json")
