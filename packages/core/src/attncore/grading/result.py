"""What grading one response produces, and the rule sets it can be graded under."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from attncore.errors import UserError


class GradingMode(StrEnum):
    """Which rule turns a response into a verdict.

    - `math`: the last `\\boxed{}` after the last `</think>` (or math-verify's own extraction when there is
      no box), compared with normalised strings, then math-verify.
    - `attnpo`: AttnPO's correctness rule (spec §2): no `<think>`, exactly one `</think>`, and the last
      `\\boxed{}` after it equal to the gold answer.
    - `gsm8k`: the number on the last `#### N` line, compared exactly with a numeric gold answer.
    - `choice`: the option letter after the last `</think>` (a boxed letter, else an "answer is X" phrase,
      else a last line holding only a letter), compared with a gold letter.
    - `code`: the last fenced code block after the last `</think>`, run on the test cases of a JSON gold
      specification (`attncore.grading.code`); correct when every test passes.
    """

    MATH = "math"
    ATTNPO = "attnpo"
    GSM8K = "gsm8k"
    CHOICE = "choice"
    CODE = "code"


class Reason(StrEnum):
    """Why a verdict is what it is; `ok` means the answer was extracted and compared."""

    OK = "ok"
    NO_ANSWER = "no_answer"
    MALFORMED_THINK = "malformed_think"
    TIMEOUT = "timeout"
    ERROR = "error"
    CRASHED = "crashed"


@dataclass(frozen=True)
class GradeResult:
    """Verdict on one response: `pred` is the extracted answer (None when there is none)."""

    correct: bool
    pred: str | None
    reason: Reason


def as_mode(mode: GradingMode | str) -> GradingMode:
    """Validate a mode given as a string (from a config or the command line)."""
    try:
        return GradingMode(mode)
    except ValueError:
        choices = ", ".join(m.value for m in GradingMode)
        raise UserError(f"unknown grading mode {mode!r}; choose one of: {choices}") from None
