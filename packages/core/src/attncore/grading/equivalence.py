"""Whether a predicted final answer equals the gold one: normalised strings first, then math-verify.

math-verify's own timeouts rely on SIGALRM, which fails outside the main thread, so they are switched off
here: grade untrusted text through `Grader`, whose parent process enforces a wall-clock limit.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from math_verify import parse, verify

from attncore.grading.normalize import UNREADABLE, flatten_base_subscripts, normalize_answer, parse_number


class _DropTimeoutDisabledNotice(logging.Filter):
    """math-verify warns once per process that its timeouts are off; here that is deliberate."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledNotice())


def _parse_latex(answer: str) -> list[Any]:
    # math-verify drops a subscript on a number, which would make 4210_5 equal 4210_6.
    return parse(f"${flatten_base_subscripts(answer)}$", parsing_timeout=None)


# A prompt's group of responses shares one gold answer, so its normal form and parse are cached.
_gold_normal = lru_cache(maxsize=4096)(normalize_answer)


@lru_cache(maxsize=4096)
def _gold_parsed(gold: str) -> tuple[Any, ...]:
    return tuple(_parse_latex(gold))


def answers_equivalent(gold: str, pred: str) -> bool:
    """True when `pred` is the same answer as `gold`: equal normal forms, equal plain numbers, or math-verify.

    Two plain decimals are compared exactly, not with math-verify's 6-decimal rounding (which would make
    .0000672 equal .0000673); an approximation such as 0.333333 for \\frac{1}{3} still goes to math-verify.
    """
    gold_normal = _gold_normal(gold)
    pred_normal = normalize_answer(pred)
    if gold_normal == pred_normal:
        return True
    if UNREADABLE in pred_normal:  # math-verify would read `4\x002` as 4
        return False
    gold_value, pred_value = parse_number(gold_normal), parse_number(pred_normal)
    if gold_value is not None and pred_value is not None:
        return gold_value == pred_value
    gold_parsed = _gold_parsed(gold)
    pred_parsed = _parse_latex(pred)
    if not gold_parsed or not pred_parsed:
        return False
    return verify(list(gold_parsed), pred_parsed, timeout_seconds=None)


def extract_final_answer(text: str) -> str | None:
    """math-verify's own extraction (answer phrases, boxes, the last expression) as a string, or None."""
    found = parse(text, parsing_timeout=None)
    strings = [item for item in found if isinstance(item, str)]
    if strings:
        return strings[-1]
    return str(found[0]) if found else None
