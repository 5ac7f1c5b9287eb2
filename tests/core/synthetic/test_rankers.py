"""Trivial step rankers on hand-computed responses, generated sets and evaluation rollouts; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attncore.data import write_jsonl
from attncore.errors import UserError
from attncore.synthetic.cli import app
from attncore.synthetic.config import SyntheticConfig, TraceConfig
from attncore.synthetic.dataset import generate_examples, write_examples
from attncore.synthetic.oracle import label_trace
from attncore.synthetic.rankers import (
    LabelledResponse,
    position_counts,
    ranking_figures,
    response_from_row,
    trivial_ranker_report,
)

E, R = "essential", "redundant"
# Lengths 40, 14, 17, 24; the answer 14 is in steps 2 and 3.
RESPONSE = LabelledResponse(
    (
        "So the problem says Mia has 3 and 4 more",
        "3 + 4 = 7 now.",
        "7 × 2 = 14, done.",
        "Again, 7 × 2 = 14 holds.",
    ),
    (R, E, E, R),
    "14",
)


def test_trivial_rankers_on_a_hand_computed_response():
    assert [len(s) for s in RESPONSE.steps] == [40, 14, 17, 24]
    report = trivial_ranker_report([RESPONSE])
    # Pairs (1,0) and (2,0) point before, (1,3) and (2,3) after.
    later = report["later step"]
    assert (later.sra, later.sra_after, later.sra_before) == (0.5, 0.0, 1.0)
    earlier = report["earlier step"]
    assert (earlier.sra, earlier.sra_after, earlier.sra_before) == (0.5, 1.0, 0.0)
    assert report["longer step"].sra == 0.0  # both essential steps are shorter than both redundant ones
    assert report["shorter step"].sra == 1.0
    # (1,0) neither: 1/2; (1,3) only the redundant: 0; (2,0) only the essential: 1; (2,3) both: 1/2.
    answer = report["contains the final answer"]
    assert (answer.sra, answer.sra_after, answer.sra_before) == (0.5, 0.25, 0.75)
    assert later.share_after == 0.5


def test_figures_average_over_responses_with_pairs_and_pool_pair_counts():
    U = "unparseable"
    responses = [
        LabelledResponse(("a",) * 4, (R, E, E, R), None),
        LabelledResponse(("a",) * 2, (E, R), None),
        LabelledResponse(("a",) * 3, (E, U, E), None),  # no pair: left out of the means
    ]
    figures = ranking_figures(responses, [[0.0, 1.0, 2.0, 2.0], [1.0, 1.0], [5.0, 0.0, 3.0]])
    # First response: (1,0) 1, (2,0) 1 before; (1,3) 0, (2,3) tie 1/2 after. Second: a tie, after.
    assert figures.sra == pytest.approx((2.5 / 4 + 0.5) / 2)
    assert figures.sra_after == pytest.approx((0.25 + 0.5) / 2)
    assert figures.sra_before == pytest.approx(1.0)
    assert (figures.responses, figures.pairs, figures.pairs_after) == (2, 5, 3)
    assert (figures.responses_after, figures.responses_before) == (2, 1)
    assert figures.share_after == pytest.approx(0.6)
    none = ranking_figures([LabelledResponse(("a",), (E,), None)], [[1.0]])
    assert (none.sra, none.sra_after, none.sra_before, none.share_after) == (None, None, None, None)


def test_the_random_ranker_is_near_chance_and_reproducible():
    many = [LabelledResponse(("a", "b"), (E, R), None)] * 4000
    first = trivial_ranker_report(many, seed=3)["random"]
    assert first.sra == pytest.approx(0.5, abs=0.03)
    assert trivial_ranker_report(many, seed=3)["random"] == first
    assert trivial_ranker_report(many, seed=4)["random"] != first


def test_position_counts_bin_by_relative_position():
    assert position_counts([RESPONSE], bins=4) == {E: [0, 1, 1, 0], R: [1, 0, 0, 1]}
    assert position_counts([RESPONSE], bins=2) == {E: [1, 1], R: [1, 1]}


def test_responses_from_generated_records_and_from_rollouts_agree():
    example = generate_examples(SyntheticConfig(count=1, seed=2, trace=_with_redundancy()))[0]
    from_record = response_from_row(example.to_row(), 1)
    assert from_record.labels == tuple(example.labels)
    assert from_record.final_answer == str(example.problem.answer)
    labelling = label_trace(example.trace.text, example.problem.text, example.problem.answer)
    rollout = {
        "text": example.trace.text.removeprefix("<think>\n"),
        "step_labels": [str(label) for label in labelling.labels],
        "pred": str(example.problem.answer),
        "gold": str(example.problem.answer),
        "correct": True,
    }
    assert response_from_row(rollout, 1) == from_record
    with pytest.raises(UserError, match="row 7: 1 step labels but the segmenter finds"):
        response_from_row({**rollout, "step_labels": ["essential"]}, 7)
    with pytest.raises(UserError, match="row 2 has neither"):
        response_from_row({"text": "x"}, 2)


def _with_redundancy() -> TraceConfig:
    return TraceConfig(redundancy=(0.5, 0.5))


def test_rankers_command_on_a_set_and_on_rollouts(tmp_path: Path):
    examples = generate_examples(SyntheticConfig(count=40, seed=4, trace=_with_redundancy()))
    data = tmp_path / "set.jsonl"
    write_examples(examples, data)
    rollouts = tmp_path / "rollouts.jsonl"
    rows = []
    for i, e in enumerate(examples[:10]):
        labels = [str(label) for label in label_trace(e.trace.text, e.problem.text, e.problem.answer).labels]
        rows.append(
            {"text": e.trace.text, "step_labels": labels, "pred": str(e.problem.answer), "correct": i < 6}
        )
    write_jsonl(rows, rollouts)

    out, png = tmp_path / "rankers.json", tmp_path / "positions.png"
    args = ["rankers", str(data), str(rollouts), "--out", str(out), "--histogram", str(png)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| later step |" in result.output and "with the redundant step after" in result.output
    figures = json.loads(out.read_text())
    expected = trivial_ranker_report([response_from_row(e.to_row(), 1) for e in examples])
    assert figures[str(data)]["rankers"]["later step"]["sra"] == pytest.approx(expected["later step"].sra)
    assert figures[str(rollouts)]["responses"] == 6  # only the rollouts graded correct
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = CliRunner().invoke(app, ["rankers", str(rollouts), "--include-wrong", "--out", str(out)])
    assert json.loads(out.read_text())[str(rollouts)]["responses"] == 10

    result = CliRunner().invoke(app, ["rankers", str(data), "--histogram", str(tmp_path / "p.jpg")])
    assert isinstance(result.exception, UserError) and "use a .png path" in str(result.exception)
