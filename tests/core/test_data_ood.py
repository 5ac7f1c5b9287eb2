"""The hub-only out-of-domain sets: their normalisers on hand-made rows, and their offline failure."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from fractions import Fraction

import pytest

from attncore.data import BENCHMARKS, DataConfig, load_problems, load_problems_or_bundled
from attncore.errors import UserError
from attncore.grading.code import passes_tests
from attncore.grading.rules import grade_response

GPQA_ROW = {
    "Record ID": "rec42",
    "Question": "Which particle carries the strong force?",
    "Correct Answer": "gluon",
    "Incorrect Answer 1": "photon",
    "Incorrect Answer 2": "W boson",
    "Incorrect Answer 3": "graviton",
    "High-level domain": "Physics",
}


def option_lines(text: str) -> dict[str, str]:
    return {line[0]: line[3:] for line in text.splitlines() if len(line) > 3 and line[1:3] == ") "}


def test_gpqa_options_are_shuffled_with_a_seed_per_record():
    normalise = BENCHMARKS["gpqa_diamond"].normalise
    problem = normalise(dict(GPQA_ROW), 0, "gpqa_diamond/test")
    options = option_lines(problem.problem)
    assert sorted(options.values()) == ["W boson", "gluon", "graviton", "photon"]
    assert options[problem.answer] == "gluon", "the gold letter points at the correct answer"
    assert problem.id == "gpqa_diamond/test/rec42" and problem.meta == {"domain": "Physics"}
    assert normalise(dict(GPQA_ROW), 5, "gpqa_diamond/test") == problem, "same record, same order"
    letters = {normalise({**GPQA_ROW, "Record ID": f"r{i}"}, i, "g").answer for i in range(40)}
    assert letters == {"A", "B", "C", "D"}, "the correct answer is not always in one place"
    assert grade_response(f"</think>\\boxed{{{problem.answer}}}", problem.answer, "choice").correct


def test_mmlu_keeps_its_option_order():
    row = {"question": "2 + 2 = ?", "subject": "arithmetic", "choices": ["3", "4", "5", "22"], "answer": 1}
    problem = BENCHMARKS["mmlu"].normalise(row, 7, "mmlu/test")
    assert problem.problem == "2 + 2 = ?\n\nA) 3\nB) 4\nC) 5\nD) 22"
    assert (problem.answer, problem.id, problem.meta) == (
        "B",
        "mmlu/test/arithmetic/7",
        {"subject": "arithmetic"},
    )


def encoded_tests(tests: list[dict]) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def test_livecodebench_rows_become_test_specifications():
    public = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]
    private = [{"input": "5 5\n", "output": "10\n", "testtype": "stdin"}]
    row = {
        "question_id": "abc123",
        "question_content": "Print the sum of two integers.",
        "starter_code": "",
        "platform": "atcoder",
        "difficulty": "easy",
        "public_test_cases": json.dumps(public),
        "private_test_cases": encoded_tests(private),
        "metadata": "{}",
    }
    problem = BENCHMARKS["livecodebench"].normalise(row, 0, "livecodebench/v6")
    spec = json.loads(problem.answer)
    assert spec == {"fn_name": None, "tests": public + private}
    assert problem.problem.startswith("Print the sum of two integers.\n\nRead the input from standard input")
    assert problem.meta == {"platform": "atcoder", "difficulty": "easy"}
    assert passes_tests("a, b = map(int, input().split())\nprint(a + b)\n", problem.answer)

    functional = dict(
        row,
        starter_code="class Solution:\n    def add(self, a: int, b: int) -> int:",
        metadata=json.dumps({"func_name": "add"}),
    )
    problem = BENCHMARKS["livecodebench"].normalise(functional, 1, "livecodebench/v6")
    assert json.loads(problem.answer)["fn_name"] == "add"
    assert "```python\nclass Solution:\n    def add(self, a: int, b: int) -> int:\n```" in problem.problem


def test_livecodebench_tests_never_unpickle_objects():
    row = {
        "question_content": "x",
        "public_test_cases": "[]",
        "private_test_cases": base64.b64encode(zlib.compress(pickle.dumps(Fraction(1, 2)))).decode(),
    }
    with pytest.raises(UserError, match="refusing to unpickle"):
        BENCHMARKS["livecodebench"].normalise(row, 0, "lcb")


@pytest.mark.parametrize(
    ("name", "split"), [("gpqa_diamond", "test"), ("mmlu", "test"), ("livecodebench", "v6")]
)
def test_hub_only_sets_fail_offline_with_one_line(name, split, monkeypatch):
    """conftest sets HF_HUB_OFFLINE=1, as on a machine without network."""
    with pytest.raises(UserError) as caught:
        load_problems(DataConfig(name=name, split=split))
    message = str(caught.value)
    assert message.startswith(f"could not load '{BENCHMARKS[name].hub_id}'") and "\n" not in message
    monkeypatch.setattr("attncore.data.data_dir", lambda explicit=None: None)
    with pytest.raises(UserError, match="could not load"):  # never the bundled GSM8K-style problems
        load_problems_or_bundled(DataConfig(name=name, split=split))


def test_livecodebench_split_names_are_checked():
    with pytest.raises(UserError, match=r"no split 'test' \(known: v6, release_v6\)"):
        load_problems(DataConfig(name="livecodebench", split="test"))
