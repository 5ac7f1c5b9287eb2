"""Benchmark loaders: every local benchmark normalised to Problem records, splits, hub path, errors."""

from __future__ import annotations

import json

import pytest

from attncore.data import BENCHMARKS, DataConfig, bundled_problems, load_problems, load_problems_or_bundled
from attncore.errors import UserError
from attncore.paths import data_dir

pytestmark = pytest.mark.skipif(data_dir() is None, reason="reference data folder ../shared/data is absent")

EXPECTED = {  # rows in ../shared/data (see its README) and the first record's gold answer
    "gsm8k": (1319, "18"),
    "math500": (500, "\\left( 3, \\frac{\\pi}{2} \\right)"),
    "aime24": (30, "204"),
    "aime25": (30, "70"),
    "amc23": (40, "27"),
    "olympiadbench_581": (581, "2"),
    "svamp": (1000, "145"),
    "asdiv": (2215, "9"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_local_benchmarks_load_and_normalise(name):
    problems = load_problems(DataConfig(name=name))
    count, first_answer = EXPECTED[name]
    assert len(problems) == count
    assert problems[0].answer == first_answer
    assert len({p.id for p in problems}) == count, "ids are unique"
    assert all(p.problem.strip() and p.answer.strip() and p.source == f"{name}/test" for p in problems)


def test_gsm8k_rationale_drops_calculator_annotations():
    first = load_problems(DataConfig(name="gsm8k", limit=1))[0]
    assert first.rationale.startswith("Janet sells 16 - 3 - 4 = 9 duck eggs a day.")
    assert "<<" not in first.rationale and "####" not in first.rationale
    train = load_problems(DataConfig(name="gsm8k", split="train"))
    assert len(train) == 7473 and train[0].answer == "72"


def test_svamp_and_asdiv_join_body_and_question():
    svamp = load_problems(DataConfig(name="svamp", limit=1))[0]
    assert svamp.problem.startswith("There are 87 oranges") and svamp.problem.endswith(
        "How big is each group of bananas?"
    )
    assert svamp.meta["equation"] == "( 290.0 / 2.0 )"
    asdiv = load_problems(DataConfig(name="asdiv", limit=1))[0]
    assert (
        asdiv.problem
        == "Seven red apples and two green apples are in the basket. How many apples are in the basket?"
    )


def test_svamp_split_is_fixed_and_disjoint():
    test = load_problems(DataConfig(name="svamp", split="test200"))
    train = load_problems(DataConfig(name="svamp", split="train800"))
    assert (len(test), len(train)) == (200, 800)
    assert not {p.id for p in test} & {p.id for p in train}
    assert [p.id for p in load_problems(DataConfig(name="svamp", split="test200"))] == [p.id for p in test]


def test_offset_and_limit():
    all_ = load_problems(DataConfig(name="math500"))
    assert [p.id for p in load_problems(DataConfig(name="math500", offset=10, limit=5))] == [
        p.id for p in all_[10:15]
    ]


def test_hub_path_uses_the_same_normaliser(tmp_path):
    """A hub id goes through `datasets.load_dataset`; a local dataset folder exercises the same path."""
    folder = tmp_path / "my_gsm8k"
    folder.mkdir()
    rows = [{"question": "What is 2+3?", "answer": "2+3=<<2+3=5>>5\n#### 5"}]
    (folder / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    problems = load_problems(DataConfig(name="gsm8k", hub_id=str(folder), split="test"))
    assert [(p.problem, p.answer, p.rationale) for p in problems] == [("What is 2+3?", "5", "2+3=5")]


def test_unreachable_hub_is_one_line_error():
    with pytest.raises(UserError, match="could not load 'no-such-org/no-such-set'") as err:
        load_problems(DataConfig(name="gsm8k", hub_id="no-such-org/no-such-set"))
    assert "\n" not in str(err.value)


def test_user_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="unknown benchmark 'gsm9k'"):
        load_problems(DataConfig(name="gsm9k"))
    with pytest.raises(UserError, match="has no split 'dev'"):
        load_problems(DataConfig(name="math500", split="dev"))
    with pytest.raises(UserError, match="not found at"):
        load_problems(DataConfig(name="gsm8k", data_dir=str(tmp_path)))
    bad = tmp_path / "benchmarks" / "gsm8k"
    bad.mkdir(parents=True)
    (bad / "test.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n{broken\n')
    with pytest.raises(UserError, match=r"test.jsonl:2: invalid JSON"):
        load_problems(DataConfig(name="gsm8k", data_dir=str(tmp_path)))


def test_bundled_fallback_when_no_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNCORE_DATA_DIR", str(tmp_path / "absent"))
    # An explicit folder that does not exist is still a folder the user asked for: an error, not a fallback.
    with pytest.raises(UserError):
        load_problems(DataConfig(name="gsm8k"))
    monkeypatch.delenv("ATTNCORE_DATA_DIR")
    monkeypatch.setattr("attncore.data.data_dir", lambda explicit=None: None)
    problems, origin = load_problems_or_bundled(DataConfig(name="gsm8k", limit=3))
    assert origin == "bundled" and [p.answer for p in problems] == ["14", "3", "70"]
    assert len(bundled_problems()) == 8


def test_every_benchmark_has_a_hub_id():
    assert all(spec.hub_id for spec in BENCHMARKS.values())
