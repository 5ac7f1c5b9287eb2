"""Answer extraction: last `\\boxed{}` and GSM8K `#### N`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attncore.grading import extract_boxed, extract_gsm8k

# Text with every character that matters to brace matching, but no `\boxed` / `\fbox` command.
_PLAIN = st.text(alphabet=st.sampled_from(list("ab1 +=$.{}\\\n")), max_size=40).filter(
    lambda s: "\\boxed" not in s and "\\fbox" not in s
)
_BRACE_FREE = st.text(alphabet=st.sampled_from(list("xy12 +-^_.,()")), max_size=8)
_BALANCED = st.recursive(
    _BRACE_FREE,
    lambda inner: st.tuples(inner, inner, _BRACE_FREE).map(lambda t: f"{t[0]}{{{t[1]}}}{t[2]}"),
    max_leaves=10,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is $\\boxed{5}$.", "5"),
        ("$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
        ("first \\boxed{1}, then \\boxed{2}", "2"),
        ("\\fbox{7}", "7"),
        ("\\boxed {8}", "8"),
        ("the answer is $\\boxed 5$.", "5"),
        ("the answer is \\boxed 12.", "12"),
        ("$\\boxed{\\{1, 2\\}}$", "\\{1, 2\\}"),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\\boxed{}", ""),
        ("\\boxed{\\boxed{4}}", "4"),
    ],
)
def test_extract_boxed_cases(text: str, expected: str) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "no box here",
        "\\boxed{\\frac{1}{2}",  # truncated generation
        "\\boxed{3} and later \\boxed{4",  # the last box is the answer, and it never closes
        "\\boxedanswer{3}",  # another macro
        "\\boxed",
        "\\boxed{" * 10_000,
    ],
)
def test_extract_boxed_missing_or_unbalanced_is_none(text: str) -> None:
    assert extract_boxed(text) is None


@given(_PLAIN, _BALANCED, _PLAIN)
def test_extract_boxed_recovers_any_balanced_argument(prefix: str, content: str, suffix: str) -> None:
    suffix = suffix.replace("\\", "")  # a trailing backslash would escape the closing brace
    assert extract_boxed(f"{prefix}\\boxed{{{content}}}{suffix}") == content


@given(st.text(max_size=200))
def test_extract_boxed_never_raises(text: str) -> None:
    result = extract_boxed(text + "\\boxed{" + text)
    assert result is None or isinstance(result, str)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She pays 18 dollars.\n#### 18", "18"),
        ("#### $1,234.50.", "1234.50"),
        ("#### 18 dollars", "18"),
        ("#### -3", "-3"),
        ("#### 3/4", "3/4"),
        ("#### .5", ".5"),
        ("#### 7.", "7"),
        ("#### 1\nwait, recount\n#### 2\nThat is all.", "2"),
    ],
)
def test_extract_gsm8k_cases(text: str, expected: str) -> None:
    assert extract_gsm8k(text) == expected


@pytest.mark.parametrize("text", ["The answer is 18.", "#### unknown", "####", ""])
def test_extract_gsm8k_without_a_number_is_none(text: str) -> None:
    assert extract_gsm8k(text) is None


@given(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.sampled_from(["", "$"]),
    st.sampled_from(["", ".", " eggs"]),
)
def test_extract_gsm8k_reads_formatted_integers(value: int, prefix: str, suffix: str) -> None:
    sign = "-" if value < 0 else ""
    assert extract_gsm8k(f"Work.\n#### {sign}{prefix}{abs(value):,}{suffix}") == str(value)
