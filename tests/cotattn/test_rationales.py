"""`cotattn rationales` with the embedded SmolLM2 as the teacher: phase 2 takes exactly the phase-1
failures with the gold in the prompt, kept rows are exactly the graded-correct rollouts with their
provenance, a rerun generates nothing, and golds set to the teacher's own answers are kept in phase 1."""

from __future__ import annotations

import json

import pytest

from attncore.data import read_rows, write_rows
from attncore.rollout.store import RolloutStore
from cotattn.cli import main
from cotattn.config import RationalesConfig
from cotattn.rationales import RATIONALES_NAME, run_rationales

QUESTIONS = [
    ("Tom has 3 apples.", "He buys 5 more apples. How many apples does he have now?"),
    ("A box holds 6 pens.", "How many pens are in 2 boxes?"),
    ("Sara had 10 sweets.", "She ate 4 of them. How many sweets are left?"),
]


def data_dir(tmp_path, golds: list[str]):
    rows = [
        {"ID": f"p{i}", "Body": body, "Question": question, "Answer": gold}
        for i, ((body, question), gold) in enumerate(zip(QUESTIONS, golds, strict=True))
    ]
    write_rows(rows, tmp_path / "benchmarks" / "svamp" / "test.jsonl")
    return tmp_path


def config(data, out, **overrides) -> RationalesConfig:
    return RationalesConfig(
        data={"name": "svamp", "split": "test", "data_dir": str(data)},
        sampling={"max_tokens": 80},
        grading={"workers": 1},
        engine="hf",
        out=str(out),
        tracking={"mode": "disabled"},
        **overrides,
    )


@pytest.mark.slow
def test_two_phases_keep_only_gold_answers(tmp_path, smollm2):
    cfg = config(data_dir(tmp_path / "d1", ["1000", "2000", "3000"]), tmp_path / "a")
    summary = run_rationales(cfg, progress=False)
    phase1 = {r.problem_id: r for r in RolloutStore.open_existing(tmp_path / "a" / "phase1").read()}
    failed = sorted(pid for pid, r in phase1.items() if not r.extra["correct"])
    phase2 = {r.problem_id: r for r in RolloutStore.open_existing(tmp_path / "a" / "phase2").read()}
    assert sorted(phase2) == failed and summary["guided"] == len(failed)
    for pid, r in phase2.items():
        assert f"The correct answer is {r.gold}." in r.prompt and r.gold == phase1[pid].gold
    kept = read_rows(tmp_path / "a" / RATIONALES_NAME)
    expected = [(pid, 1) for pid, r in phase1.items() if r.extra["correct"]]
    expected += [(pid, 2) for pid, r in phase2.items() if r.extra["correct"]]
    assert sorted((r["id"], r["phase"]) for r in kept) == sorted(expected)
    assert summary["kept"] == len(kept)

    # A rerun generates nothing and writes the same file.
    before = (tmp_path / "a" / RATIONALES_NAME).read_text()
    assert run_rationales(cfg, progress=False) == summary
    assert (tmp_path / "a" / RATIONALES_NAME).read_text() == before
    assert len(RolloutStore.open_existing(tmp_path / "a" / "phase1").read()) == 3

    # Golds equal to the teacher's own phase-1 answers: those are kept in phase 1, text and provenance.
    preds = [phase1[f"svamp/test/p{i}"].extra["pred"] for i in range(3)]
    assert any(p is not None for p in preds), "the teacher wrote no '#### N' answer at all"
    golds = [p if p is not None else "1000" for p in preds]
    data2 = data_dir(tmp_path / "d2", golds)
    summary2 = run_rationales(config(data2, tmp_path / "b"), progress=False)
    kept2 = {r["id"]: r for r in read_rows(tmp_path / "b" / RATIONALES_NAME)}
    for i, pred in enumerate(preds):
        pid = f"svamp/test/p{i}"
        if pred is not None:
            row = kept2[pid]
            assert (row["phase"], row["answer"], row["rationale"]) == (1, pred, phase1[pid].text.strip())
            assert row["problem"] == f"{QUESTIONS[i][0]} {QUESTIONS[i][1]}"
            assert row["teacher"] == cfg.teacher.name and row["rollout_id"] == f"{pid}#0"
            assert "Question:" in row["prompt"] or QUESTIONS[i][1] in row["prompt"]
    assert summary2["kept_phase1"] == sum(p is not None for p in preds)
    assert json.loads((tmp_path / "b" / "rationales_summary.json").read_text()) == summary2


def test_config_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as bad:
        main(["rationales", "-q", "guided_hint=no placeholder", f"out={tmp_path / 'x'}"])
    err = capsys.readouterr().err.strip()
    assert bad.value.code == 2 and "guided_hint" in err and "{answer}" in err and err.count("\n") == 0
    with pytest.raises(SystemExit) as bad:
        main(["rationales", "-q", "sampling.n=2", f"out={tmp_path / 'x'}"])
    assert bad.value.code == 2 and "sampling.n must be 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_refilled_slots_keep_the_same_greedy_rationales(tmp_path, smollm2):
    """Greedy decoding in refilled slots (2 slots for 3 problems, so one slot is refilled) writes the
    same phase rollouts and kept rationales as static batches."""
    data = data_dir(tmp_path / "d", ["1000", "8", "6"])
    static = run_rationales(config(data, tmp_path / "static", batch_size=2), progress=False)
    refilled = run_rationales(config(data, tmp_path / "refill", batch_size=2, refill=True), progress=False)
    assert refilled == static and static["guided"] >= 1
    for phase in ("phase1", "phase2"):
        stores = {run: RolloutStore.open_existing(tmp_path / run / phase) for run in ("static", "refill")}
        texts = {run: {r.problem_id: r.text for r in store.read()} for run, store in stores.items()}
        assert texts["refill"] == texts["static"]
        assert stores["refill"].meta["refill"] is True and "refill" not in stores["static"].meta
    assert read_rows(tmp_path / "refill" / RATIONALES_NAME) == read_rows(tmp_path / "static" / RATIONALES_NAME)
