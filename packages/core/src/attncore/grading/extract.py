"""Pulling the final answer out of a model response: `\\boxed{}`, GSM8K `#### N`, multiple-choice
letters (the `</think>` split is `attncore.think.split_thinking`).

Every function here is linear in the input length and returns None instead of raising on malformed
text (a truncated generation with unbalanced braces is an ordinary input, not an error).
"""

from __future__ import annotations

import re
from collections import deque

from attncore.grading.normalize import UNREADABLE, mark_control_characters

# `\boxed` or `\fbox`, but not a longer macro name such as `\boxedanswer`.
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# `\boxed 5`: the argument is the next whitespace-free token.
_BARE_ARGUMENT = re.compile(r"\s*([^\s${}]+)")
_SPACES = re.compile(r"\s*")
_GSM8K_MARKER = "####"
_GSM8K_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?")


def _braced_argument(text: str, open_at: int) -> str | None:
    """Content of the brace group opening at `text[open_at]`, or None when it never closes.

    Escaped braces (`\\{`, `\\}`) do not count, so set notation such as `\\{1, 2\\}` stays intact.
    """
    depth = 0
    i = open_at
    end = len(text)
    while i < end:
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
        i += 1
    return None


def extract_boxed(text: str) -> str | None:
    """Argument of the last `\\boxed{...}` / `\\fbox{...}` (or `\\boxed 5`); None if absent or unbalanced.

    Only the last box counts: when it is truncated the answer is missing, even if an earlier box closed.
    """
    last = deque(_BOX_COMMAND.finditer(text), maxlen=1)
    if not last:
        return None
    rest = last[0].end()
    open_at = _SPACES.match(text, rest).end()
    if text.startswith("{", open_at):
        return _braced_argument(text, open_at)
    bare = _BARE_ARGUMENT.match(text, rest)
    if bare is None:
        return None
    token = bare.group(1).rstrip(".,;")
    return token or None


def extract_gsm8k(text: str) -> str | None:
    """The number on the last `#### ...` line, without `$`, thousands commas, units or a final period.

    `#### $1,234.50 dollars.` -> "1234.50"; `#### 3/4` -> "3/4"; None when the line holds no number.
    """
    at = text.rfind(_GSM8K_MARKER)
    if at < 0:
        return None
    line = text[at + len(_GSM8K_MARKER) :].split("\n", 1)[0]
    line = mark_control_characters(line.replace("$", "").replace(",", ""))
    match = _GSM8K_NUMBER.search(line)
    if match is None or UNREADABLE in line[max(match.start() - 1, 0) : match.end() + 1]:
        return None  # a control character touching the number: `4\x002` is neither 4 nor 42
    number = match.group(0)
    return number[:-1] if number.endswith(".") else number


# A box holding a letter, possibly wrapped: `B`, `(B)`, `\text{B}`, `\textbf{(B)}`, `B) 42`, `B.`.
_BOXED_CHOICE = re.compile(r"^\s*(?:\\text(?:bf)?\s*\{\s*)?\(?\s*([A-J])\s*\)?\s*\}?\s*(?:$|[.:)]|\s)", re.S)
# "the answer is (B)", "Answer: B", "correct option is **C**"; the letter must stand alone.
_ANSWER_PHRASE = re.compile(
    r"(?i:answer|choice|option)\s*(?i:is|:|=)?\s*:?\s*[*(\[]*\s*([A-J])(?![A-Za-z0-9])"
)
# A final line that is only a letter: "C", "(C)", "**C**".
_LAST_LINE_CHOICE = re.compile(r"^[\s*(\[]*([A-J])[\s*)\].]*$")


def extract_choice(text: str) -> str | None:
    """The option letter a response chose: the last `\\boxed{}` if it holds a letter, else the last
    "answer is X" phrase, else a final line holding only a letter; None otherwise.

    Letters inside prose ("A train leaves...") never count: they need a box, an answer phrase or a line
    of their own.
    """
    boxed = extract_boxed(text)
    if boxed is not None:
        match = _BOXED_CHOICE.match(boxed)
        return match.group(1) if match else None
    phrases = deque(_ANSWER_PHRASE.finditer(text), maxlen=1)
    if phrases:
        return phrases[0].group(1)
    lines = text.strip().splitlines()
    if lines:
        match = _LAST_LINE_CHOICE.match(lines[-1])
        if match:
            return match.group(1)
    return None
