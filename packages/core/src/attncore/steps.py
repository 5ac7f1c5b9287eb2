"""Reasoning steps: where a chain of thought splits, and which tokens each step owns.

Two segmenters live here:

- AttnPO (attnpo-spec §3) splits the thinking part of a response at trigger phrases and merges short
  segments. `mode="faithful"` reproduces the released `segment_cot` (no word boundaries, the fused
  phrase `No,Let me double-check`); `mode="clean"` fixes both (spec §13, pitfalls 1-2).
- MoLSAKI (molsaki-spec §2) splits question + rationale into sentences.

Steps are placed on tokens with `attncore.alignment`, the one character <-> token mapping, so the
two methods never disagree about a boundary.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import Field

from attncore.alignment import decode, single_token_id, token_at_char, token_char_ends
from attncore.config import Config
from attncore.errors import UserError
from attncore.think import THINK_CLOSE

# --- AttnPO phrase classes (attnpo-spec §3.1) ------------------------------------------------------

_CHECK_LEADS = ("Let me", "Let me just", "Let's", "Let's just", "Just to")
_CHECK_VERBS = ("double-check", "verify", "confirm", "check", "recap")

CONFUSED: tuple[str, ...] = (
    "Wait",
    "But",
    "However",
    "Hold on",
    "Looking back",
    "I don't see any errors",
    "No,",
    "Hmm, wait",
    "Hmm, no",
    "Hmm, but",
    "Hmm, just",
    "Hmm, let me double-check",
    "Hmm, let me verify",
    "Hmm, let me make sure",
    "Hmm, let me check",
    *(f"{lead} {verb}" for verb in _CHECK_VERBS for lead in _CHECK_LEADS),
    "Let me make sure",
    "Let me just make sure",
    "Let's make sure",
    "Just to make sure",
    "So, is",
    "Is it",
    "Is that right?",
    "Is there",
    "Right?",
    "Alternatively",
    "Another approach",
    "Another way",
    "Another idea",
    "Another thought",
    "I guess another way",
    "I guess another approach",
    "Let me just think if there",
)
"""Class 1 (confused / reflection / alternative), as intended: `No,` and `Let me double-check` apart."""

RELEASE_FUSED_PHRASE = "No,Let me double-check"
CONFUSED_RELEASE: tuple[str, ...] = tuple(
    RELEASE_FUSED_PHRASE if p == "No," else p for p in CONFUSED if p != "Let me double-check"
)
"""Class 1 as released: a missing comma fused two phrases into one that never fires (pitfall 1)."""

PROGRESSION: tuple[str, ...] = (
    "Let me",
    "Let's",
    "I ",
    "We ",
    "Okay",
    "Hmm",
    "Now",
    "Alright",
    "First,",
    "First off,",
    "Second,",
    "Third,",
    "Starting",
    "Then",
    "Next",
    "Finally",
    "Similarly",
    "Again",
    "In this case",
    "Because",
    "Given that",
    "The problem gives",
    "To ",
    "Since",
)
"""Class 2 (progression); only at a line start. The trailing spaces of `I `, `We `, `To ` are intended."""

SUMMARY: tuple[str, ...] = (
    "So",
    "Therefore",
    "Thus",
    "Hence",
    "Hmm, so",
    "Okay, so",
    "Putting it all together",
)
"""Class 3 (summary); only at a line start."""

SPECIAL: tuple[str, ...] = ("**Final Answer",)
"""Class 4: its own step, never merged."""


class StepKind(IntEnum):
    """Phrase class of a step's trigger; the numbers are the spec's class numbers."""

    CONFUSED = 1
    PROGRESSION = 2
    SUMMARY = 3
    FINAL_ANSWER = 4


Phrase = Annotated[str, Field(min_length=1)]


class StepSegmenterConfig(Config):
    """Trigger phrases and merge thresholds of the AttnPO segmenter (attnpo-spec §3).

    `confused=None` selects the spec's class-1 list for the mode: `CONFUSED_RELEASE` in faithful mode,
    `CONFUSED` in clean mode. Phrases are case-sensitive.
    """

    mode: Literal["faithful", "clean"] = "clean"
    confused: list[Phrase] | None = None
    progression: list[Phrase] = Field(default_factory=lambda: list(PROGRESSION))
    summary: list[Phrase] = Field(default_factory=lambda: list(SUMMARY))
    special: list[Phrase] = Field(default_factory=lambda: list(SPECIAL))
    min_chars: int = Field(80, ge=1)
    min_other: int = Field(15, ge=0)

    def phrase_classes(self) -> tuple[tuple[str, ...], ...]:
        """The four phrase lists in lookup order (class 1, 2, 3, 4)."""
        confused = self.confused
        if confused is None:
            confused = list(CONFUSED_RELEASE if self.mode == "faithful" else CONFUSED)
        return tuple(map(tuple, (confused, self.progression, self.summary, self.special)))


@dataclass(frozen=True)
class Trigger:
    """A kept phrase match: where it starts, the phrase, and its class."""

    start: int
    phrase: str
    kind: StepKind


@dataclass(frozen=True)
class Segment:
    """A step in characters: `[start, end)` of the thinking text, with the phrase that opened it.

    `trigger` is None for a first segment that no phrase opens (its kind is then PROGRESSION).
    """

    start: int
    end: int
    kind: StepKind
    trigger: str | None


# A letter is a Unicode word character that is neither a digit nor an underscore (Python's `\w`, so
# it also counts the few numeric symbols such as '²' that `\w` includes).
_LETTER = r"[^\W\d_]"


@functools.lru_cache(maxsize=16)
def _phrase_matcher(
    classes: tuple[tuple[str, ...], ...], clean: bool
) -> tuple[re.Pattern, dict[str, StepKind]]:
    """One alternation over all phrases, longest first; in clean mode with word-boundary lookarounds."""
    kind_of: dict[str, StepKind] = {}
    for kind, phrases in zip(StepKind, classes, strict=True):
        for phrase in phrases:
            kind_of.setdefault(phrase, kind)  # lookup order: class 1, 2, 3, 4
    alternatives = []
    for phrase in sorted(kind_of, key=len, reverse=True):
        alt = re.escape(phrase)
        if clean and re.fullmatch(_LETTER, phrase[-1]):
            alt += f"(?!{_LETTER})"
        if clean and kind_of[phrase] == StepKind.CONFUSED:
            alt = f"(?<!{_LETTER})" + alt
        alternatives.append(alt)
    return re.compile("|".join(alternatives)), kind_of


def find_triggers(text: str, config: StepSegmenterConfig | None = None) -> list[Trigger]:
    """Kept phrase matches, scanned left to right (attnpo-spec §3.2).

    Class-2/3 matches count only right after a newline; a dropped match still consumes its characters.
    """
    config = config or StepSegmenterConfig()
    pattern, kind_of = _phrase_matcher(config.phrase_classes(), config.mode == "clean")
    kept = []
    for match in pattern.finditer(text):
        phrase, start = match.group(), match.start()
        kind = kind_of[phrase]
        at_line_start = start > 0 and text[start - 1] == "\n"
        if kind in (StepKind.PROGRESSION, StepKind.SUMMARY) and not at_line_start:
            continue
        kept.append(Trigger(start, phrase, kind))
    return kept


def _join(left: Segment, right: Segment) -> Segment:
    return Segment(left.start, right.end, left.kind, left.trigger)


def merge_short_segments(
    segments: Sequence[Segment], min_chars: int = 80, min_other: int = 15
) -> list[Segment]:
    """Merge segments shorter than `min_chars` into a neighbour (attnpo-spec §3.3, exactly its loop).

    A merged segment keeps the left part's trigger and kind and is examined again. A final-answer
    segment never merges and is never absorbed by its left neighbour; as in the release, a short
    summary or lead-in right after it may still join it.
    """
    seg = list(segments)
    final = StepKind.FINAL_ANSWER

    def length(s: Segment) -> int:
        return s.end - s.start

    i = 0
    while i < len(seg):
        s = seg[i]
        right = seg[i + 1] if i + 1 < len(seg) else None
        if length(s) >= min_chars or s.kind == final:
            i += 1
            continue
        if s.kind == StepKind.CONFUSED:
            if right is not None and right.kind != final:
                seg[i : i + 2] = [_join(s, right)]
                continue
        elif i + 2 < len(seg) and seg[i + 1].kind == StepKind.CONFUSED:  # right is not the last
            if i > 0:  # a short lead-in before a reflection joins the step before it
                seg[i - 1 : i + 1] = [_join(seg[i - 1], s)]
                i -= 1
                continue
        elif s.kind == StepKind.PROGRESSION:
            if right is not None and right.kind != final:
                seg[i : i + 2] = [_join(s, right)]
                continue
        else:  # SUMMARY
            if length(s) - len(s.trigger or "") <= min_other and right is not None and right.kind != final:
                seg[i : i + 2] = [_join(s, right)]
                continue
            if i > 0:
                seg[i - 1 : i + 1] = [_join(seg[i - 1], s)]
                i -= 1
                continue
        i += 1
    return seg


def segment_thinking(text: str, config: StepSegmenterConfig | None = None) -> list[Segment]:
    """Steps of a thinking text in characters; only the part before the first `</think>` is used.

    An empty thinking part gives no steps. Position 0 always opens a segment.
    """
    config = config or StepSegmenterConfig()
    thinking = text.split(THINK_CLOSE, 1)[0]
    if not thinking:
        return []
    triggers = find_triggers(thinking, config)
    if not triggers or triggers[0].start != 0:
        triggers.insert(0, Trigger(0, "", StepKind.PROGRESSION))
    bounds = [t.start for t in triggers[1:]] + [len(thinking)]
    segments = [
        Segment(t.start, end, t.kind, t.phrase or None) for t, end in zip(triggers, bounds, strict=True)
    ]
    return merge_short_segments(segments, config.min_chars, config.min_other)


# --- AttnPO: steps of a generated response ------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of a response: its characters, its tokens (response-relative, `[start, end)`), its kind."""

    chars: tuple[int, int]
    tokens: tuple[int, int]
    kind: StepKind
    trigger: str | None


UntouchedReason = Literal[
    "truncated",
    "no_think_end",
    "several_think_ends",
    "think_end_spelled_out",
    "empty_thinking",
    "single_step",
]


@dataclass(frozen=True)
class SegmentedResponse:
    """Steps of one response and its final-answer tokens F (attnpo-spec §3.4).

    `ok` is False when the response must keep its advantage on every token; `reason` says why. Only
    an `ok` result has steps for step treatment (a `single_step` result shows its one step);
    `think_end` is set whenever the `</think>` token was found. Token indices are response-relative;
    pass the valid (unpadded) prompt length as `offset` to get full-sequence coordinates.
    """

    ok: bool
    reason: UntouchedReason | None
    steps: tuple[Step, ...]
    think_end: tuple[int, int] | None
    n_tokens: int

    def step_spans(self, offset: int = 0) -> list[tuple[int, int]]:
        """Token spans `[start, end)` of the steps, shifted by `offset`."""
        return [(s.tokens[0] + offset, s.tokens[1] + offset) for s in self.steps]

    def answer_span(self, offset: int = 0) -> tuple[int, int]:
        """F = `[t_end + 1, len(response))`, the tokens after `</think>` (answer and EOS), shifted."""
        if self.think_end is None:
            raise ValueError("a response without `</think>` has no final-answer span")
        return (self.think_end[1] + offset, self.n_tokens + offset)


def unscored_reason(response: SegmentedResponse) -> str | None:
    """Why a response gets no AttnPO step scores: its segmentation's reason for leaving it untouched,
    or `empty_answer` when no token follows `</think>` (F is empty); None when it is scored."""
    if not response.ok:
        return response.reason
    start, end = response.answer_span()
    return "empty_answer" if start == end else None


def _steps_on_tokens(segments: Sequence[Segment], ends: Sequence[int], t_end: int) -> list[Step]:
    """Map segment starts to tokens; a segment whose characters all sit inside the token that opens
    the next segment joins that segment (or, for the last one, the segment before it)."""
    starts = [token_at_char(ends, s.start) for s in segments] + [t_end]
    steps: list[Step] = []
    pending_start: int | None = None  # chars of segments that own no token, carried to the next step
    for seg, t0, t1 in zip(segments, starts, starts[1:], strict=False):
        c0 = seg.start if pending_start is None else pending_start
        if t0 == t1:
            pending_start = c0
            continue
        pending_start = None
        steps.append(Step((c0, seg.end), (t0, t1), seg.kind, seg.trigger))
    if pending_start is not None and steps:
        last = steps[-1]
        steps[-1] = Step((last.chars[0], segments[-1].end), last.tokens, last.kind, last.trigger)
    return steps


def segment_response(
    tokenizer,
    response_ids: Sequence[int],
    config: StepSegmenterConfig | None = None,
    *,
    truncated: bool = False,
    single_think_end: bool = True,
) -> SegmentedResponse:
    """Segment a generated response (ids without padding) into steps on its own tokens.

    The `</think>` token is located by id when the tokenizer has `</think>` as one added token, else
    by the first `</think>` in the decoded text. `truncated` marks a response cut at the length limit;
    `single_think_end` requires exactly one `</think>`, as the AttnPO correctness check does.
    """
    config = config or StepSegmenterConfig()
    ids = [int(i) for i in response_ids]
    n = len(ids)

    def untouched(reason: UntouchedReason, steps=(), think_end=None) -> SegmentedResponse:
        return SegmentedResponse(False, reason, tuple(steps), think_end, n)

    if truncated:
        return untouched("truncated")
    ends = token_char_ends(tokenizer, ids)
    text = decode(tokenizer, ids)
    count = text.count(THINK_CLOSE)
    if count == 0:
        return untouched("no_think_end")
    think_id = single_token_id(tokenizer, THINK_CLOSE)
    if think_id is None:
        c_end = text.index(THINK_CLOSE)
        think_end = (token_at_char(ends, c_end), token_at_char(ends, c_end + len(THINK_CLOSE) - 1) + 1)
    elif think_id not in ids:
        return untouched("think_end_spelled_out")
    else:
        t = ids.index(think_id)
        think_end = (t, t + 1)
        c_end = ends[t - 1] if t > 0 else 0
    if count > 1 and single_think_end:
        return untouched("several_think_ends", think_end=think_end)
    if text.index(THINK_CLOSE) != c_end:  # ordinary tokens spell `</think>` before the real one
        return untouched("think_end_spelled_out", think_end=think_end)
    segments = segment_thinking(text[:c_end], config)
    steps = _steps_on_tokens(segments, ends, think_end[0])
    if not steps:  # no thinking characters, or none outside the `</think>` token
        return untouched("empty_thinking", think_end=think_end)
    if len(steps) < 2:
        return untouched("single_step", steps, think_end)
    return SegmentedResponse(True, None, tuple(steps), think_end, n)


# --- MoLSAKI: sentence steps of a text we tokenize ---------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.?!])(?=\s|\Z)")


def sentence_spans(text: str, parts: Sequence[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """Sentence steps `[start, end)` of `text` (molsaki-spec §2).

    A step ends right after `.`, `?` or `!` followed by whitespace or the end (so never inside `2.5`
    or `1,000`); the border between `parts` (question, rationale) is always a border, and characters
    outside the parts belong to no step. Whitespace after a sentence end opens the next step;
    whitespace-only pieces are dropped. Abbreviations such as `Mr. Smith` do split.
    """
    if parts is None:
        parts = [(0, len(text))]
    previous_end = 0
    for a, b in parts:
        if not previous_end <= a <= b <= len(text):
            raise UserError(f"step parts must be ordered, disjoint ranges inside the text; got {list(parts)}")
        previous_end = b
    spans = []
    for a, b in parts:
        piece = text[a:b]
        cuts = [0, *(m.start() for m in _SENTENCE_END.finditer(piece)), len(piece)]
        spans += [(a + s, a + e) for s, e in pairwise(cuts) if piece[s:e].strip()]
    return spans
