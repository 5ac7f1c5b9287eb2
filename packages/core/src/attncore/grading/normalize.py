"""String normal form of a final answer, in the spirit of the MATH / DeepScaleR "mathd" normaliser.

Two answers with the same normal form are the same answer; the grader only calls math-verify when the
forms differ. Each step drops notation that does not change the value (spacing macros, `\\left`,
`\\dfrac`, degree, dollar and percent signs, trailing `\\text{ units}`, an `x =` prefix, text wrappers)
or spells a shorthand one way (`\\frac12`, `\\sqrt3`, `.5`, `14/3`, `10,000`, `(C)`). Numbers in another
base are flattened (`52_8` -> `528`), because that is how the MATH answer key writes them.

Control and format characters (NUL, zero-width space, ...) are dropped at the ends of an answer, but one
inside an answer becomes U+FFFD instead of vanishing: `4\x002` must not read as 42. Such an answer equals
only the same string.

Every step is a linear scan, so a megabyte of adversarial text normalises in milliseconds.
"""

from __future__ import annotations

import re
from fractions import Fraction

from attncore.errors import UserError

# Unicode categories Cc and Cf (Unicode 14), except tab, newline and carriage return.
_CONTROL_CLASS = (
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
_CONTROL = re.compile(f"[{_CONTROL_CLASS}]")
UNREADABLE = "\ufffd"
_WHITESPACE_CHARACTERS = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())  # U+3000 is the last
_SPACING = re.compile(r"(?<!\\)\\[!,;:> ]|\\q?quad(?![A-Za-z])|\\displaystyle|\\(?:left|right)(?![A-Za-z])")
_FRAC_VARIANT = re.compile(r"\\[dtc]frac(?![A-Za-z])")
_DEGREES = re.compile(r"\^\s*(?:\{\s*\\circ\s*\}|\\circ)|°|\\degree(?![A-Za-z])")
_DOLLAR_PERCENT = re.compile(r"\\?[$%]")
_TEXT_MACRO = r"\\(?:text|textbf|textrm|textit|mathrm|mathbf|mbox)"
_TRAILING_UNITS = re.compile(_TEXT_MACRO + r"\{\s[^{}]*\}(?:\^\{?\d\}?)?\s*$")
_TEXT_WRAPPER = re.compile(_TEXT_MACRO + r"\{([^{}]*)\}")
_CHOICE = re.compile(r"\(([A-Z])\)")
_SHORT_LHS = re.compile(r"[A-Za-z](?:_\{?\w\}?)?")
_BASE_SUBSCRIPT = re.compile(r"(\d)_(?:\{(\d+)\}|(\d+))")
_BARE_SQRT = re.compile(r"\\sqrt\s*([^{\[\s\\])")
_WHITESPACE = re.compile(r"\s+")
_FRAC_TWO_DIGITS = re.compile(r"\\frac(\d)(\d)")
_FRAC_DIGIT_FIRST = re.compile(r"\\frac(\d)\{")
_FRAC_DIGIT_SECOND = re.compile(r"\\frac\{([^{}]*)\}(\d)")
_BARE_DECIMAL = re.compile(r"(^|[^\d])\.(\d)")
_SLASH_FRACTION = re.compile(r"(-?\d+)/(\d+)")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?")


def _strip_assignment(text: str) -> str:
    """`x = 3` -> `3` and `a_1 = 5` -> `5`; a longer left side (`x + y = 3`) is part of the answer."""
    lhs, sep, rhs = text.partition("=")
    if sep and "=" not in rhs and _SHORT_LHS.fullmatch(lhs.strip()):
        return rhs
    return text


def flatten_base_subscripts(text: str) -> str:
    """`52_8` and `4210_{5}` -> `528` and `42105`, the MATH answer key's spelling of a base-b numeral."""
    return _BASE_SUBSCRIPT.sub(lambda m: m.group(1) + (m.group(2) or m.group(3)), text)


def mark_control_characters(text: str) -> str:
    """`text` without whitespace and control characters at its ends, and each control character inside
    it replaced by `UNREADABLE`, so that no later step can join the parts around it."""
    return _CONTROL.sub(UNREADABLE, text).strip(_WHITESPACE_CHARACTERS + UNREADABLE)


def has_inner_control_characters(text: str) -> bool:
    """Whether a control character stands inside `text` (not only at its ends)."""
    return UNREADABLE in mark_control_characters(text)


def normalize_answer(answer: str) -> str:
    """Normal form used for string equality of two final answers (see the module docstring)."""
    text = mark_control_characters(answer)
    text = _SPACING.sub("", text)
    text = _FRAC_VARIANT.sub(r"\\frac", text)
    text = _DEGREES.sub("", text)
    text = _DOLLAR_PERCENT.sub("", text)
    text = _TRAILING_UNITS.sub("", text)
    text = _TEXT_WRAPPER.sub(r"\1", text)
    text = _strip_assignment(text)
    text = flatten_base_subscripts(text)
    text = _BARE_SQRT.sub(r"\\sqrt{\1}", text)
    text = _WHITESPACE.sub("", text)
    text = _FRAC_TWO_DIGITS.sub(r"\\frac{\1}{\2}", text)
    text = _FRAC_DIGIT_FIRST.sub(r"\\frac{\1}{", text)
    text = _FRAC_DIGIT_SECOND.sub(r"\\frac{\1}{\2}", text)
    text = _BARE_DECIMAL.sub(r"\g<1>0.\2", text)
    if len(text) > 1 and text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    if match := _SLASH_FRACTION.fullmatch(text):
        text = f"\\frac{{{match.group(1)}}}{{{match.group(2)}}}"
    if match := _CHOICE.fullmatch(text):
        text = match.group(1)
    return text


def parse_number(text: str) -> Fraction | None:
    """Exact value of a plain number (`18`, `-3.50`, `.5`, `3/4`); None for anything else (`1,000`, `x`)."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):  # 4300+ digit integers, `1/0`
        return None


def numeric_gold(gold: str) -> Fraction:
    """Value of a gold answer graded by number (GSM8K mode); a UserError names a gold that is not one."""
    value = parse_number(gold.replace(",", "").replace("$", ""))
    if value is None:
        raise UserError(f"gsm8k grading needs numeric gold answers, got {gold!r}")
    return value


def choice_gold(gold: str) -> str:
    """A multiple-choice gold answer as its upper-case letter; a UserError names one that is not a letter."""
    letter = gold.strip().strip("()").upper()
    if len(letter) != 1 or not "A" <= letter <= "Z":
        raise UserError(f"choice grading needs option letters as gold answers, got {gold!r}")
    return letter
