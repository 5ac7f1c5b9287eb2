"""Fixtures of the cotattn tests: one thread (the machine is shared), a small rationales file."""

from __future__ import annotations

import pytest

from attncore.data import write_rows

RATIONALE_ROWS = [
    {
        "id": "mail",
        "problem": "A mailman has 1,000 letters and delivers 48 letters each hour. How many are left after 4 hours?",
        "rationale": "He delivers 4 * 48 = 192 letters. So 1,000 - 192 = 808 letters are left.",
        "answer": "808",
    },
    {
        "id": "apples",
        "problem": "Tom has 3 apples. He buys 5 more. How many apples does he have?",
        "rationale": "He has 3 + 5 = 8 apples.",
        "answer": "8",
    },
    {"id": "one", "problem": "Ann has 7 pens.", "rationale": "Nothing to add.", "answer": "7"},
    {"id": "none", "problem": "Is the sky blue?", "rationale": "Yes it is.", "answer": "yes"},
]


@pytest.fixture(autouse=True)
def _single_threaded(one_thread):
    """Every test here runs on one thread; tests elsewhere keep their setting."""


@pytest.fixture
def rationales_file(tmp_path):
    path = tmp_path / "rationales.jsonl"
    write_rows(RATIONALE_ROWS, path)
    return path
