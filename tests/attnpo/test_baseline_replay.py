"""Replaying a logged run under each score baseline (attnpo.baseline_replay): on logged responses whose
steps are generated testbed steps (the oracle agrees with the generator's labels), with essential steps
scored above redundant ones, the figures follow from the labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attncore.config import load_config, save_resolved
from attncore.errors import UserError
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.dataset import generate_examples
from attnpo.baseline_replay import baseline_figures, figures_table, replay_response, replay_run
from attnpo.config import RescalingConfig
from attnpo.rescaled_log import oracle_labels
from attnpo.train import TrainConfig

A2 = Path(__file__).resolve().parents[2] / "experiments" / "attnpo" / "testbed" / "a2_attnpo.yaml"


def logged_rows() -> tuple[list[dict], list[list[str]]]:
    """Rows at p = 1, |F|/|o| = 0.5 (above every score: the release's baseline attenuates every step of
    A > 0), 10 tokens a step, S = 0.03 on essential and 0.01 on redundant steps; even rows A > 0 (all
    steps logged as Pos-Adv), odd rows A < 0 (none logged). Returns the rows and their labels."""
    examples = generate_examples(
        SyntheticConfig(count=10, seed=7, problem={"difficulty": (2, 3)}, trace={"redundancy": (0.3, 0.6)})
    )
    rows, labels = [], []
    for i, e in enumerate(examples):
        positive = len(rows) % 2 == 0
        row = {
            "step": 1, "rank": 0, "row": i, "problem_id": e.id, "problem": e.problem.text,
            "gold": str(e.problem.answer), "accuracy": 1.0, "advantage": 0.2 if positive else -0.2,
            "baseline": 0.5, "answer_tokens": 5, "total_tokens": 10,
            "steps": [
                {"text": st.text, "tokens": 10, "score": 0.03 if label == "essential" else 0.01,
                 "gamma": 0.03 / 0.5 if label == "essential" else 0.01 / 0.5, "pos": positive, "neg": False}
                for st, label in zip(e.trace.steps, e.labels, strict=True)
            ],
            "answer": e.trace.answer,
        }  # fmt: skip
        if oracle_labels(row) == e.labels:
            rows.append(row)
            labels.append(e.labels)
    assert (
        len(rows) >= 4
        and any("redundant" in x for x in labels[0::2])
        and any("redundant" in x for x in labels[1::2])
    )
    return rows, labels


def test_figures_follow_the_labels():
    rows, labels = logged_rows()
    config = RescalingConfig(curriculum_steps=14)
    replayed = [replay_response(row, config, None) for row in rows]
    figures = baseline_figures(replayed, rows, "uniform")
    steps = sum(map(len, labels))
    redundant = [x.count("redundant") for x in labels]
    essential = [x.count("essential") for x in labels]
    assert figures["responses"] == len(rows) and figures["steps"] == steps
    assert figures["reproduced"] == {"baseline": "uniform", "mismatched_steps": 0}
    positive = range(0, len(rows), 2)
    # uniform: S_base = 0.5, every step below; Pos-Adv takes every step of the A > 0 rows, Neg-Adv none
    uniform = figures["uniform"]
    assert uniform["below"] == steps and uniform["every_step_below"] == len(rows)
    assert uniform["below_redundant"] == pytest.approx(sum(redundant) / steps)
    assert uniform["pos"] == sum(len(labels[b]) for b in positive)
    assert uniform["pos_redundant"] == pytest.approx(sum(redundant[b] for b in positive) / uniform["pos"])
    assert uniform["neg"] == 0 and uniform["neg_essential"] is None
    # thinking: S_base is the row's mean score, between 0.01 and 0.03 where a row has both labels: Pos-Adv
    # takes exactly the redundant steps of A > 0 rows, Neg-Adv exactly the essential steps of A < 0 rows
    mixed = [b for b in range(len(rows)) if redundant[b] and essential[b]]
    thinking = figures["thinking"]
    assert thinking["below"] == sum(redundant[b] for b in mixed) and thinking["below_redundant"] == 1.0
    assert thinking["every_step_below"] == 0
    assert (
        thinking["pos"] == sum(redundant[b] for b in mixed if b % 2 == 0) and thinking["pos_redundant"] == 1.0
    )
    assert (
        thinking["neg"] == sum(essential[b] for b in mixed if b % 2 == 1) and thinking["neg_essential"] == 1.0
    )
    where = [
        (k + 0.5) / len(labels[b])
        for b in mixed
        if b % 2 == 0
        for k, x in enumerate(labels[b])
        if x == "redundant"
    ]
    assert thinking["pos_position"] == pytest.approx(sum(where) / len(where))
    scale = figures["scale"]
    assert scale["median_uniform_share"] == 0.5 and scale["sra"] == 1.0 and scale["sra_pooled"] == 1.0
    assert scale["sra_pairs"] == sum(r * e for r, e in zip(redundant, essential, strict=True))
    assert scale["lowest_redundant"] == sum(r > 0 for r in redundant) and scale["fully_labelled"] == len(rows)
    table = figures_table(figures).splitlines()
    assert table[2] == (
        f"| uniform | {steps} ({100 * sum(redundant) / steps:.1f}%) | {len(rows)} | {uniform['pos']} "
        f"| {100 * uniform['pos_redundant']:.1f}% | {uniform['pos_position']:.3f} | 0 | — |"
    )
    assert table[-1].endswith("(uniform): 0 steps differ from the logged Pos-Adv / Neg-Adv flags.")
    # a logged flag the replay does not give is counted
    rows[0]["steps"][0]["pos"] = False
    assert baseline_figures(replayed, rows, "uniform")["reproduced"]["mismatched_steps"] == 1


def test_older_logs_without_token_counts():
    rows, _ = logged_rows()
    config = RescalingConfig(curriculum_steps=14)
    old = {
        **{k: v for k, v in rows[0].items() if k not in ("answer_tokens", "total_tokens")},
        "steps": [{k: v for k, v in s.items() if k != "tokens"} for s in rows[0]["steps"]],
    }
    # |F|/|o| from the logged S_base / p^beta; step lengths from the tokenizer
    replayed = replay_response(old, config, lambda text: 10)
    assert replayed.uniform_share == 0.5 and replayed.lengths == [10] * len(old["steps"])
    for kind, factors in replay_response(rows[0], config, None).factors.items():
        assert factors.gamma.equal(replayed.factors[kind].gamma)
    # a step of 30 tokens moves the mean towards its score
    counted = replay_response(old, config, lambda text: 30 if text == old["steps"][0]["text"] else 10)
    assert (
        counted.lengths[0] == 30
        and counted.factors["thinking"].baseline[0] != replayed.factors["thinking"].baseline[0]
    )
    with pytest.raises(UserError, match="no step token counts"):
        replay_response(old, config, None)
    no_shares = {k: v for k, v in rows[0].items() if k not in ("answer_tokens", "total_tokens")}
    with pytest.raises(UserError, match="baseline is thinking: its \\|F\\|/\\|o\\| cannot be recovered"):
        replay_response(no_shares, RescalingConfig(baseline="thinking"), None)


def test_replay_run_reads_a_run_folder(tmp_path):
    rows, _ = logged_rows()
    run = tmp_path / "a2"
    save_resolved(load_config(TrainConfig, A2), run)
    (run / "rescaled").mkdir()
    (run / "rescaled" / "rank-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    replayed = [replay_response(row, load_config(TrainConfig, A2).method.rescaling, None) for row in rows]
    assert replay_run(run) == baseline_figures(replayed, rows, "uniform")
    with pytest.raises(UserError, match=r"has no config\.resolved\.yaml"):
        replay_run(tmp_path)
    (run / "rescaled" / "rank-0.jsonl").write_text("")
    with pytest.raises(UserError, match="has no rescaled responses"):
        replay_run(run)
