"""Step label sources: the testbed oracle, a JSONL file, and LLM judges through the rollout engine."""

from __future__ import annotations

import json

import pytest

from attncore.errors import UserError
from attncore.rollout.store import RolloutStore
from attnpo.labels import (
    JsonlLabels,
    JsonlLabelsConfig,
    JudgeLabels,
    JudgeModel,
    JudgesConfig,
    OracleLabels,
    OracleLabelsConfig,
    ProbeResponse,
    consensus,
    judge_prompt,
    read_verdict,
    step_problem_id,
)

PROBLEM = "Ann has 3 boxes with 4 pens in each box. She buys 5 more pens. How many pens does she have?"
STEPS = (
    "Ann has 3 boxes of 4 pens, and buys 5 more.",
    "The boxes hold 3 * 4 = 12 pens.",
    "With the new ones she has 12 + 5 = 17 pens.",
    "Let me check: 3 * 4 = 12, yes.",
    "Maybe she also had 2 + 2 = 4 pencils.",
)


def probe(answer: str = "So she has \\boxed{17} pens.", steps=STEPS, rid="r#0") -> ProbeResponse:
    return ProbeResponse(rid, PROBLEM, "17", steps, answer)


def test_oracle_labels_hand_case():
    source = OracleLabels(OracleLabelsConfig())
    want = ("redundant", "essential", "essential", "redundant", "redundant")
    assert source.label([probe()]) == [want]
    # Without a boxed answer the gold answer is traced back; an unreadable '=' leaves the step unlabelled.
    garbled = (*STEPS[:3], "Then = = 12 things.")
    assert source.label([probe("no box", garbled)]) == [("redundant", "essential", "essential", None)]
    assert source.provenance()["kind"] == "oracle"


def test_jsonl_labels(tmp_path):
    path = tmp_path / "labels.jsonl"
    rows = [{"id": "r#0", "labels": ["essential", None, "redundant", "redundant", "essential"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    source = JsonlLabels(JsonlLabelsConfig(path=str(path)))
    got = source.label([probe(), probe(rid="other#0", steps=STEPS[:2])])
    assert got == [tuple(rows[0]["labels"]), (None, None)]
    assert source.provenance()["sha256"] and source.provenance()["path"] == str(path)
    with pytest.raises(UserError, match="has 5 labels but the segmenter finds 2 steps"):
        source.label([probe(steps=STEPS[:2])])
    for bad, message in [
        ('{"id": "a", "labels": ["essential", "maybe"]}', "line 1: labels must be"),
        ('{"id": "a"}', "line 1 is not an object"),
        ('{"id": "a", "labels": []}\n{"id": "a", "labels": []}', "line 2: id 'a' occurs twice"),
    ]:
        path.write_text(bad)
        with pytest.raises(UserError, match=message):
            JsonlLabels(JsonlLabelsConfig(path=str(path)))
    with pytest.raises(UserError, match="labels file not found"):
        JsonlLabels(JsonlLabelsConfig(path=str(tmp_path / "none.jsonl")))


def test_verdicts_and_consensus():
    assert read_verdict(" Essential, because ...") == "essential"
    assert read_verdict("It is redundant, not essential") == "redundant"
    assert read_verdict("I cannot tell") is None
    assert read_verdict("inessentially") is None  # whole words only
    votes = ["essential", "essential", "redundant"]
    assert consensus(votes, "majority") == "essential"
    assert consensus(votes, "unanimous") is None
    assert consensus(["redundant"] * 3, "unanimous") == "redundant"
    assert consensus(["essential", None], "majority") is None  # 1 of 2 is no majority
    assert consensus(["essential", None, "essential"], "majority") == "essential"


def test_judge_prompt_fills_placeholders_once():
    r = ProbeResponse("r#0", "What is {x}? Write \\boxed{}.", "1", ("a {step} b", "second " * 10), "")
    text = judge_prompt("P: {problem}\nS:\n{steps}\n#{number}: {step}", r, 1, max_chars=50)
    assert text.startswith("P: What is {x}? Write \\boxed{}.\nS:\n1. a {step} b\n2. second second")
    assert text.endswith("#2: " + ("second " * 10).strip()[:50] + " [...]")
    with pytest.raises(ValueError, match="must show the judged step"):
        JudgesConfig(prompt="Is it essential?")


def judged(tmp_path, model_name: str, judges: int, max_tokens: int, responses, prompt=None):
    cfg = JudgesConfig(
        **({"prompt": prompt} if prompt else {}),
        judges=[JudgeModel(model={"name": model_name}, seed=s) for s in range(judges)],
        sampling={"temperature": 0.0 if judges == 1 else 1.0, "max_tokens": max_tokens},
        engine="hf",
        consensus="majority",
    )
    source = JudgeLabels(cfg, tmp_path / "judges")
    labels = source.label(responses, progress=False)
    texts = [
        {r.problem_id: r.text for r in RolloutStore.open_existing(tmp_path / "judges" / f"judge-{i}").read()}
        for i in range(judges)
    ]
    return source, labels, texts


def test_judges_run_through_the_rollout_engine_and_resume(tiny_model_dir, tmp_path):
    model = str(tiny_model_dir("llama"))
    responses = [probe(), probe(rid="s#0", steps=STEPS[:2])]
    source, labels, texts = judged(tmp_path, model, 3, 6, responses, "Step {number}: {step}\nEssential?")
    assert [len(x) for x in labels] == [5, 2]
    for r, row in zip(responses, labels, strict=True):
        for i, label in enumerate(row):
            votes = [read_verdict(t[step_problem_id(r.id, i)]) for t in texts]
            assert label == consensus(votes, "majority")
    assert len(texts[0]) == 7 and texts[0] != texts[1]  # one prompt per step; judges sample apart
    summary = tmp_path / "judges" / "judge-0" / "summary.json"
    assert json.loads(summary.read_text())["generated_now"] == 7
    assert source.label(responses, progress=False) == labels  # resumed from the stores
    assert json.loads(summary.read_text())["generated_now"] == 0
    assert source.provenance()["consensus"] == "majority" and len(source.provenance()["judges"]) == 3


@pytest.mark.slow
def test_the_embedded_model_can_judge(tmp_path):
    """SmolLM2-135M as a single greedy judge: a poor judge, but the path runs here end to end."""
    _, labels, texts = judged(tmp_path, "smollm2-135m-instruct", 1, 3, [probe(steps=STEPS[:2])])
    votes = tuple(read_verdict(texts[0][step_problem_id("r#0", i)]) for i in range(2))
    assert labels == [votes]
    assert all(t.strip() for t in texts[0].values())
