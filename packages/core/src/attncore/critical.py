"""Critical units of MoLSAKI (molsaki-spec §3): the numbers and keywords whose received attention is
distilled, found once on the canonical text and mapped through each model's tokens.

Teacher and student must see the same units in the same order (molsaki pitfall 1), so the rules live
in one config and `alignment_hash` condenses text, rules and spans into a digest that the teacher
cache stores and training checks.
"""

from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from attncore.alignment import token_at_char
from attncore.config import Config

NUMBER_PATTERN = r"\d+(?:[.,]\d+)*"
"""Digits with inner `.`/`,` groups: `2.5`, `1,000`; a sentence-final period is not part of it."""


class CriticalConfig(Config):
    """Which units count: numbers (math) and/or keywords (CSQA).

    `listed_keywords=True` (CSQA) makes each example's units the keywords it lists itself (the
    teacher's list, stored with its rationale) plus `keywords`, instead of numbers: `for_example`.

    `keyword_units="occurrence"` gives one unit per match in text order (the default);
    `"keyword"` gives one unit per keyword, gathering all its matches, ordered by first match.
    Keywords match whole words (no letter, digit or `_` glued to either end).
    """

    numbers: bool = True
    number_pattern: str = NUMBER_PATTERN
    keywords: list[str] = Field(default_factory=list)
    keyword_units: Literal["occurrence", "keyword"] = "occurrence"
    ignore_case: bool = True
    listed_keywords: bool = False

    @field_validator("number_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return pattern

    @field_validator("keywords")
    @classmethod
    def _non_blank(cls, keywords: list[str]) -> list[str]:
        if any(not k.strip() for k in keywords):
            raise ValueError("keywords must not be blank")
        return keywords

    def rules(self) -> dict:
        """The fields that define the units, as hashed: `listed_keywords` only when on, so hashes
        recorded before the field existed still hold for number units."""
        rules = self.model_dump(mode="json")
        if not self.listed_keywords:
            del rules["listed_keywords"]
        return rules

    def for_example(self, listed: Sequence[str]) -> CriticalConfig:
        """The rules for one example that lists `listed` as its keywords: itself unless
        `listed_keywords`, else keyword units only (`keywords` then the listed ones, blanks dropped)."""
        if not self.listed_keywords:
            return self
        keywords = [*self.keywords, *(k for k in listed if k.strip() and k not in self.keywords)]
        return self.model_copy(update={"numbers": False, "keywords": keywords})


@dataclass(frozen=True)
class CriticalUnit:
    """One column of the stepwise matrix: its label (the number as written, or the keyword) and the
    character spans `[start, end)` it covers (one, or every match of a keyword in per-keyword mode)."""

    label: str
    spans: tuple[tuple[int, int], ...]


def _keyword_pattern(keywords: Sequence[str], ignore_case: bool) -> re.Pattern:
    """Longest keyword first; group `k{i}` tells which keyword matched."""
    alternatives = []
    for i in sorted(range(len(keywords)), key=lambda i: len(keywords[i]), reverse=True):
        word = keywords[i]
        alt = re.escape(word)
        if re.match(r"\w", word[0]):
            alt = r"(?<!\w)" + alt
        if re.match(r"\w", word[-1]):
            alt += r"(?!\w)"
        alternatives.append(f"(?P<k{i}>{alt})")
    return re.compile("|".join(alternatives), re.IGNORECASE if ignore_case else 0)


def find_critical_units(text: str, config: CriticalConfig | None = None) -> list[CriticalUnit]:
    """Critical units of `text` in text order (by first character)."""
    config = config or CriticalConfig()
    units = []
    if config.numbers:
        units += [CriticalUnit(m.group(), (m.span(),)) for m in re.finditer(config.number_pattern, text)]
    if config.keywords:
        matches = list(_keyword_pattern(config.keywords, config.ignore_case).finditer(text))
        if config.keyword_units == "occurrence":
            units += [CriticalUnit(config.keywords[int(m.lastgroup[1:])], (m.span(),)) for m in matches]
        else:
            by_keyword: dict[int, list[tuple[int, int]]] = {}
            for m in matches:
                by_keyword.setdefault(int(m.lastgroup[1:]), []).append(m.span())
            units += [CriticalUnit(config.keywords[i], tuple(spans)) for i, spans in by_keyword.items()]
    return sorted(units, key=lambda u: u.spans[0])


def unit_token_sets(units: Sequence[CriticalUnit], ends: Sequence[int]) -> list[tuple[int, ...]]:
    """Token indices of each unit: every token whose characters overlap one of its spans.

    `ends` are token character ends (`alignment.token_char_ends`); a token that owns no character (the
    leading bytes of a split character) goes with the character it starts.
    """
    sets = []
    for unit in units:
        tokens: set[int] = set()
        for a, b in unit.spans:
            tokens.update(range(token_at_char(ends, a), bisect_right(ends, b - 1) + 1))
        sets.append(tuple(sorted(tokens)))
    return sets


def alignment_hash(
    text: str,
    step_spans: Sequence[tuple[int, int]],
    units: Sequence[CriticalUnit],
    config: CriticalConfig,
) -> str:
    """SHA-256 of (text, unit rules, step spans, unit spans): equal digests on the teacher and the
    student side mean both read the same text cut the same way."""
    payload = {
        "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "rules": config.rules(),
        "steps": [list(span) for span in step_spans],
        "units": [[u.label, [list(span) for span in u.spans]] for u in units],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
