"""CSQA keywords: the teacher's keyword line parsed out of its rationale, keyword occurrences as the
critical units (same rules for teacher and student), the rules hash per unit kind, the CommonsenseQA
loader, and `cotattn rationales` asking for keywords in the same call."""

from __future__ import annotations

import pytest

from attncore.critical import CriticalConfig, find_critical_units
from attncore.data import DataConfig, load_problems, read_rows, write_rows
from attncore.errors import UserError
from attncore.models import load_tokenizer
from attncore.rollout.store import RolloutStore
from attncore.store.extract import PreparedText, prepare_text, special_prefix
from attncore.store.inputs import RationaleExample
from attncore.tiny import train_tokenizer
from cotattn.config import KEYWORDS_REQUEST, RationalesConfig, TeacherTargetsConfig, TrainConfig
from cotattn.rationales import RATIONALES_NAME, parse_keywords, run_rationales
from cotattn.teacher_targets import TeacherTargets, run_teacher_targets
from cotattn.text import TaskFormat, rules_hash, student_example
from cotattn.train import build_items, open_teacher, read_rationales

QUESTION = "Where would you put a fishing rod after using it by the river?\n\nA) garage\nB) River bank"
RATIONALE = "A fishing rod is stored at home. Rivers flood, so a river is no place for a Fishing Rod. The garage holds 2 rods."
KEYWORDS = ("fishing rod", "river", "garage")
LISTED = CriticalConfig(listed_keywords=True)


def test_parse_a_well_formed_keyword_line():
    text = 'Rods rust outside.\n**Keywords:** fishing rod, "river"; Garage., river, \nThe answer is A.'
    assert parse_keywords(text) == (
        "Rods rust outside.\nThe answer is A.",
        ["fishing rod", "river", "Garage"],
    )
    # The last keyword line counts (an echo of the request earlier does not).
    two = "Keywords: word, word\nA rod.\nKeywords: rod, shed\nThe answer is A."
    assert parse_keywords(two) == ("Keywords: word, word\nA rod.\nThe answer is A.", ["rod", "shed"])


def test_missing_and_malformed_keyword_lines():
    # No line: the rationale is untouched, keywords None (kept, no units, skips L_att).
    assert parse_keywords("  A rod is kept in a garage.\nThe answer is A. ") == (
        "A rod is kept in a garage.\nThe answer is A.",
        None,
    )
    # A line that names nothing usable: keywords [] and the line still leaves the rationale.
    assert parse_keywords('A rod.\nKeywords: , ; "" .\nThe answer is A.') == ("A rod.\nThe answer is A.", [])
    # "keywords" inside a sentence is not a keyword line.
    assert parse_keywords("The keywords: are hidden.") == ("The keywords: are hidden.", None)


def test_keyword_units_per_occurrence():
    text, _ = TaskFormat().text.render(QUESTION, RATIONALE)
    units = find_critical_units(text, LISTED.for_example(KEYWORDS))
    found = [(u.label, text[u.spans[0][0] : u.spans[0][1]]) for u in units]
    # Text order, one unit per occurrence, any case; "Rivers" and "rods" are other words (word
    # boundaries), the multi-word keyword is one unit, and the number 2 is not a unit here.
    assert found == [
        ("fishing rod", "fishing rod"),
        ("river", "river"),
        ("garage", "garage"),
        ("river", "River"),
        ("fishing rod", "fishing rod"),
        ("river", "river"),
        ("fishing rod", "Fishing Rod"),
        ("garage", "garage"),
    ]
    assert all(len(u.spans) == 1 for u in units)
    # Without listed_keywords the same example's units are its numbers, whatever it lists.
    assert [u.label for u in find_critical_units(text, CriticalConfig().for_example(KEYWORDS))] == ["2"]


def test_teacher_and_student_cut_the_same_keyword_units():
    tok = train_tokenizer()
    prefix = special_prefix(tok)
    fmt = TaskFormat()
    teacher = prepare_text(
        tok, RationaleExample("c1", QUESTION, RATIONALE, KEYWORDS), fmt.text, LISTED, prefix
    )
    student = student_example(tok, "c1", QUESTION, RATIONALE, "A", fmt, LISTED, prefix, KEYWORDS)
    assert isinstance(teacher, PreparedText) and student.unit_count == 8
    assert student.alignment_hash == teacher.record.alignment_hash
    assert student.layout.units == teacher.record.unit_tokens
    # Other keywords give other units and another hash; no (or blank) keywords give no unit (L_att skipped).
    other = student_example(tok, "c1", QUESTION, RATIONALE, "A", fmt, LISTED, prefix, ("garage", "home"))
    assert other.unit_count == 3 and other.alignment_hash != student.alignment_hash
    none = student_example(tok, "c1", QUESTION, RATIONALE, "A", fmt, LISTED, prefix, ("", " "))
    assert none.layout is None and none.skip_reason == "no_critical_units"


def test_rules_hash_differs_between_number_and_keyword_units():
    numbers = rules_hash(TaskFormat(), CriticalConfig())
    keywords = rules_hash(TaskFormat(), LISTED)
    assert numbers != keywords
    assert keywords == rules_hash(TaskFormat(), CriticalConfig(listed_keywords=True))
    # Number units hash as before the keyword option existed (older teacher targets stay readable).
    assert "listed_keywords" not in CriticalConfig().rules() and LISTED.rules()["listed_keywords"] is True


def test_commonsenseqa_loads_both_layouts_by_path(tmp_path):
    hub = {
        "id": "q1",
        "question": "Where is a rod kept?",
        "choices": {"label": ["A", "B"], "text": ["garage", "river"]},
        "answerKey": "A",
    }
    original = {
        "id": "q2",
        "question": {
            "stem": "What flows?",
            "choices": [{"label": "A", "text": "rock"}, {"label": "B", "text": "river"}],
        },
        "answerKey": "b",
    }
    write_rows([hub, original], tmp_path / "benchmarks" / "commonsenseqa" / "validation.jsonl")
    problems = load_problems(DataConfig(name="commonsenseqa", split="validation", data_dir=str(tmp_path)))
    assert [(p.id, p.problem, p.answer) for p in problems] == [
        ("commonsenseqa/validation/q1", "Where is a rod kept?\n\nA) garage\nB) river", "A"),
        ("commonsenseqa/validation/q2", "What flows?\n\nA) rock\nB) river", "B"),
    ]


CSQA_ROWS = [
    {
        "id": "c1",
        "question": "Where do you keep a fishing rod?",
        "choices": {"label": ["A", "B", "C"], "text": ["garage", "oven", "bathtub"]},
        "answerKey": "A",
    },
    {
        "id": "c2",
        "question": "What do you use to cut paper?",
        "choices": {"label": ["A", "B", "C"], "text": ["spoon", "scissors", "pillow"]},
        "answerKey": "B",
    },
]


QUESTIONS = {
    "commonsenseqa/validation/c1": "Where do you keep a fishing rod?\n\nA) garage\nB) oven\nC) bathtub",
    "commonsenseqa/validation/c2": "What do you use to cut paper?\n\nA) spoon\nB) scissors\nC) pillow",
}
# A few-shot CoT prompt whose worked example shows the keyword line (as a CSQA run would configure).
CSQA_PROMPT = {
    "template": "plain",
    "instruction": "Answer the multiple-choice question. Reason step by step, then end with 'The answer is <letter>.'",
    "examples": [
        {
            "question": "Where do you store milk?\n\nA) fridge\nB) drawer\nC) roof\n\n" + KEYWORDS_REQUEST,
            "answer": "Milk spoils when warm, so it is kept cold.\nKeywords: milk, store\nThe answer is A.",
        }
    ],
}


@pytest.mark.slow
def test_rationales_with_keywords(tmp_path, smollm2):
    write_rows(CSQA_ROWS, tmp_path / "d" / "benchmarks" / "commonsenseqa" / "validation.jsonl")
    cfg = RationalesConfig(
        data={"name": "commonsenseqa", "split": "validation", "data_dir": str(tmp_path / "d")},
        keywords=True,
        prompt=CSQA_PROMPT,
        sampling={"max_tokens": 60},
        grading={"mode": "choice", "workers": 1},
        engine="hf",
        out=str(tmp_path / "out"),
        tracking={"mode": "disabled"},
    )
    summary = run_rationales(cfg, progress=False)
    generated = {}
    for phase in ("phase1", "phase2"):
        if (tmp_path / "out" / phase).exists():
            for r in RolloutStore.open_existing(tmp_path / "out" / phase).read():
                assert KEYWORDS_REQUEST in r.prompt  # asked in the same call, in both phases
                generated[(r.problem_id, int(phase[-1]))] = r
    assert len([k for k in generated if k[1] == 1]) == 2
    kept = read_rows(tmp_path / "out" / RATIONALES_NAME)
    for row in kept:
        rollout = generated[(row["id"], row["phase"])]
        assert rollout.extra["correct"] and (row["rationale"], row["keywords"]) == parse_keywords(
            rollout.text
        )
        assert row["problem"] == QUESTIONS[row["id"]]  # the question as loaded, without the request
    assert any(row["keywords"] for row in kept), "the teacher listed keywords for no kept item"
    assert summary["kept"] == len(kept)
    assert summary["kept_without_keyword_line"] == sum(r["keywords"] is None for r in kept)
    assert summary["kept_with_no_keyword"] == sum(r["keywords"] == [] for r in kept)


def test_teacher_targets_on_keyword_units(tiny_model_dir, tmp_path):
    rows = [
        {"id": "c1", "problem": QUESTION, "rationale": RATIONALE, "answer": "A", "keywords": list(KEYWORDS)},
        {
            "id": "c2",
            "problem": "Where is a rod kept?",
            "rationale": "In a shed.",
            "answer": "A",
            "keywords": None,
        },
    ]
    write_rows(rows, tmp_path / "rationales.jsonl")
    model_dir = tiny_model_dir("llama")
    cfg = TeacherTargetsConfig(
        teacher={"name": str(model_dir), "device": "cpu"},
        input={"path": str(tmp_path / "rationales.jsonl")},
        critical=LISTED,
        out=str(tmp_path / "t"),
    )
    summary = run_teacher_targets(cfg, progress=False)
    assert (summary.examples, summary.with_target) == (2, 1) and summary.skipped == {"no_critical_units": 1}
    targets = TeacherTargets(tmp_path / "t", rules_hash(TaskFormat(), LISTED))
    tok = load_tokenizer(str(model_dir))

    def student_hash(keywords: tuple[str, ...]) -> str:
        """The alignment hash of the student's example of c1 with these keywords."""
        return student_example(
            tok, "c1", QUESTION, RATIONALE, "A", TaskFormat(), LISTED, keywords=keywords
        ).alignment_hash

    # One column per keyword occurrence on the teacher side too, under the student's alignment hash.
    assert targets.get("c1", student_hash(KEYWORDS)).target.shape[1] == 8
    # A student cutting numbers (or no keywords) cannot read these targets.
    with pytest.raises(UserError, match="rules hash"):
        TeacherTargets(tmp_path / "t", rules_hash(TaskFormat(), CriticalConfig()))
    with pytest.raises(UserError, match="alignment hash"):
        targets.get("c1", student_hash(("garage", "river")))
    # Training reads the keywords from the rationales file: the same inputs digest, the same units.
    train_cfg = TrainConfig(
        student={"name": str(model_dir)},
        rationales=str(tmp_path / "rationales.jsonl"),
        teacher_targets=str(tmp_path / "t"),
        critical=LISTED,
    )
    train_rows = read_rationales(train_cfg.rationales)
    data = build_items(train_cfg, tok, train_rows, open_teacher(train_cfg, train_rows))
    assert data.with_attention == 1 and [i.example.unit_count for i in data.items] == [8, 0]
    # A keywords field that is not a list of strings is a one-line error naming the row.
    write_rows([{**rows[0], "keywords": "river, garage"}], tmp_path / "bad.jsonl")
    with pytest.raises(UserError, match=r"bad.jsonl: row 1 has keywords that are not a list of strings"):
        read_rationales(tmp_path / "bad.jsonl")
