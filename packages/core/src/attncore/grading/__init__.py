"""Answer grading shared by rollouts, evaluation and RL rewards.

`Grader` / `grade_answers` grade in worker processes with a hard per-answer timeout; the extraction and
normalisation helpers are pure functions. `attncore.grading.rules.grade_response` grades one answer in
the calling process without a timeout (it loads math-verify and sympy, which this package does not).
"""

from attncore.grading.extract import extract_boxed, extract_gsm8k
from attncore.grading.normalize import normalize_answer, parse_number
from attncore.grading.pool import Grader, grade_answers
from attncore.grading.result import GradeResult, GradingMode, Reason
from attncore.think import ThinkingSplit, split_thinking

__all__ = [
    "GradeResult",
    "Grader",
    "GradingMode",
    "Reason",
    "ThinkingSplit",
    "extract_boxed",
    "extract_gsm8k",
    "grade_answers",
    "normalize_answer",
    "parse_number",
    "split_thinking",
]
