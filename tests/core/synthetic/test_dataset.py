"""Synthetic records: Problem-compatible rows, JSONL/Parquet round trips, and the `synth` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from attncore.data import DataConfig, Problem, load_problems_or_bundled, read_jsonl
from attncore.errors import UserError
from attncore.synthetic.cli import app
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.dataset import generate_examples, read_examples, write_examples
from attncore.tiny import train_tokenizer


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_examples_round_trip(tmp_path: Path, suffix: str):
    examples = generate_examples(SyntheticConfig(count=40, seed=3))
    path = tmp_path / f"set{suffix}"
    write_examples(examples, path)
    assert read_examples(path) == examples


def test_rows_carry_the_problem_fields_and_the_ground_truth():
    (example,) = generate_examples(SyntheticConfig(count=1, seed=2))
    row = example.to_row()
    problem = Problem(**{k: row[k] for k in ("id", "problem", "answer", "source", "rationale", "meta")})
    assert problem == example.to_problem()
    assert (problem.id, problem.source) == ("synthetic/0", "synthetic")
    assert problem.answer == str(example.problem.answer)
    assert problem.rationale == example.trace.text
    assert problem.meta["difficulty"] == str(row["difficulty"]) == str(len(row["operations"]))
    assert [s["label"] for s in row["steps"]] == example.labels
    assert json.loads(json.dumps(row)) == row  # plain JSON types only


def test_unknown_suffix_and_foreign_rows_are_user_errors(tmp_path: Path):
    with pytest.raises(UserError, match=r"unsupported file type '\.csv'"):
        write_examples([], tmp_path / "set.csv")
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"id": "x", "problem": "p"}\n')
    with pytest.raises(UserError, match="row 1 is not a synthetic example"):
        read_examples(foreign)


def test_generate_then_label_from_the_command_line(tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "data" / "train.jsonl"
    result = runner.invoke(
        app, ["generate", "--out", str(out), "count=25", "seed=9", "problem.difficulty=[2,3]"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 25 examples" in result.output
    assert "opening_predictability" in result.output
    resolved = yaml.safe_load((tmp_path / "data" / "train.config.resolved.yaml").read_text())
    assert resolved["count"] == 25 and resolved["problem"]["difficulty"] == [2, 3]
    assert read_examples(out) == generate_examples(
        SyntheticConfig(count=25, seed=9, problem={"difficulty": (2, 3)})
    )

    labels = tmp_path / "labels.jsonl"
    result = runner.invoke(app, ["label", str(out), "--out", str(labels), "--mode", "faithful"])
    assert result.exit_code == 0, result.output
    assert "labels match the generator's: 25/25" in result.output
    rows = read_jsonl(labels)
    assert [r["labels"] for r in rows] == [e.labels for e in read_examples(out)]
    assert all(r["well_formed"] and 0.0 <= r["redundancy_ratio"] < 1.0 for r in rows)


@pytest.mark.slow
def test_label_counts_redundancy_in_tokens_with_a_tokenizer(tmp_path: Path):
    tokenizer = tmp_path / "tokenizer"
    train_tokenizer().save_pretrained(tokenizer)
    data = tmp_path / "set.jsonl"
    write_examples(generate_examples(SyntheticConfig(count=5, seed=4)), data)
    out = tmp_path / "labels.jsonl"
    result = CliRunner().invoke(app, ["label", str(data), "--out", str(out), "--tokenizer", str(tokenizer)])
    assert result.exit_code == 0, result.output
    assert "redundancy ratio (tokens)" in result.output
    by_tokens = [r["redundancy_ratio"] for r in read_jsonl(out)]
    CliRunner().invoke(app, ["label", str(data), "--out", str(out)])
    by_chars = [r["redundancy_ratio"] for r in read_jsonl(out)]
    assert all(0.0 <= t < 1.0 for t in by_tokens)
    assert by_tokens != by_chars  # the tiny tokenizer's tokens are not characters


def test_label_rollouts_looked_up_by_problem_id(tmp_path: Path):
    examples = generate_examples(SyntheticConfig(count=2, seed=1))
    problems = tmp_path / "problems.jsonl"
    write_examples(examples, problems)
    rollouts = tmp_path / "rollouts.jsonl"
    first = examples[0].problem.operations[0]
    text = f"First, {first.left} + {first.right} = {first.result}\n</think>\n\n\\boxed{{{examples[0].problem.answer}}}"
    rollouts.write_text(
        json.dumps({"rollout_id": "synthetic/0#0", "problem_id": "synthetic/0", "text": text})
        + "\n"
        + json.dumps({"rollout_id": "synthetic/1#0", "problem_id": "synthetic/1", "text": "I give up"})
        + "\n"
    )
    out = tmp_path / "labels.jsonl"
    result = CliRunner().invoke(app, ["label", str(rollouts), "--problems", str(problems), "--out", str(out)])
    assert result.exit_code == 0, result.output
    first_row, second_row = read_jsonl(out)
    assert first_row["id"] == "synthetic/0#0" and len(first_row["labels"]) == 1
    assert first_row["final_answer"] == str(examples[0].problem.answer)
    assert second_row["labels"] == ["redundant"]
    assert not second_row["well_formed"] and "missing </think>" in second_row["issues"]


def test_label_with_an_unknown_problem_id_is_a_user_error(tmp_path: Path):
    problems = tmp_path / "problems.jsonl"
    write_examples(generate_examples(SyntheticConfig(count=1)), problems)
    rollouts = tmp_path / "rollouts.jsonl"
    rollouts.write_text(json.dumps({"problem_id": "nope", "text": "x"}) + "\n")
    result = CliRunner().invoke(app, ["label", str(rollouts), "--problems", str(problems)])
    assert isinstance(result.exception, UserError)
    assert "problem id 'nope' is not in" in str(result.exception)


def test_evaluate_writes_figures_and_rollouts(tmp_path: Path, tiny_model_dir):
    figures, rollouts = tmp_path / "figures.json", tmp_path / "rollouts.jsonl"
    args = [
        "evaluate",
        "-m",
        str(tiny_model_dir("llama")),
        "--out",
        str(figures),
        "--rollouts",
        str(rollouts),
    ]
    overrides = ["data.count=4", "sampling.temperature=0", "sampling.max_tokens=8"]
    result = CliRunner().invoke(app, args + overrides)
    assert result.exit_code == 0, result.output
    summary = json.loads(figures.read_text())
    rows = [json.loads(line) for line in rollouts.read_text().splitlines()]
    assert summary["problems"] == len(rows) == 4
    # A random tiny model writes 8 tokens of noise: never well-formed, always truncated.
    assert summary["well_formed"] == 0.0 and summary["truncated"] == 1.0
    assert all(r["completion_tokens"] == 8 and r["finish_reason"] == "length" for r in rows)
    assert summary["accuracy"] == sum(r["correct"] for r in rows) / 4
    assert [r["problem_id"] for r in rows] == [f"testbed-test/{i}" for i in range(4)]
    assert f"rollouts -> {rollouts}" in result.output


def test_synthetic_sets_load_as_a_data_source_with_offset_and_limit():
    spec = SyntheticConfig(count=6, seed=3, id_prefix="held-out")
    problems, origin = load_problems_or_bundled(
        DataConfig(name="synthetic", synthetic=spec, offset=2, limit=3)
    )
    expected = [e.to_problem() for e in generate_examples(spec)][2:5]
    assert origin == "synthetic" and problems == expected
    assert [p.id for p in problems] == ["held-out/2", "held-out/3", "held-out/4"]
    with pytest.raises(ValueError, match="come together"):
        DataConfig(name="synthetic")
    with pytest.raises(ValueError, match="come together"):
        DataConfig(name="gsm8k", synthetic=spec)
    with pytest.raises(ValueError, match="no hub_id"):
        DataConfig(name="synthetic", synthetic=spec, hub_id="a/b")
