"""Row files: the one reader and writer of JSON-lines and Parquet rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from attncore.data import read_rows, write_rows
from attncore.errors import UserError

ROWS = [
    {"id": "a/0", "problem": "2 + 3?", "steps": [{"text": "2 + 3 = 5", "label": "essential"}], "n": 5},
    {"id": "a/1", "problem": "Café ½", "steps": [], "n": -1},
]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_rows_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / "nested" / f"rows{suffix}"
    write_rows(ROWS, path)
    assert read_rows(path) == ROWS
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "no temporary file left"


def test_row_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unsupported file type '\.csv' \(use \.jsonl or \.parquet\)"):
        read_rows(tmp_path / "rows.csv")
    with pytest.raises(UserError, match=r"unsupported file type '\.csv'"):
        write_rows(ROWS, tmp_path / "rows.csv")
    with pytest.raises(UserError, match=r"file not found: .*absent\.parquet"):
        read_rows(tmp_path / "absent.parquet")
