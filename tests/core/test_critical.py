"""Critical units of MoLSAKI: numbers and keywords, their tokens, and the alignment hash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attncore.alignment import decode, encode_text
from attncore.config import load_config
from attncore.critical import (
    CriticalConfig,
    CriticalUnit,
    alignment_hash,
    find_critical_units,
    unit_token_sets,
)
from attncore.errors import ConfigError
from attncore.steps import sentence_spans
from attncore.tiny import train_tokenizer

# A hand-counted MoLSAKI example: 5 steps (2 question sentences, 3 rationale sentences) x 12 numbers.
TEXT = (
    "Question: A mailman has 1,000 letters and delivers 2.5 bags of 48 letters each hour. "
    "How many letters are left after 4 hours?\n"
    "Rationale: He delivers 2.5 * 48 = 120 letters per hour. "
    "In 4 hours that is 480 letters. So 1,000 - 480 = 520 letters are left."
)


@pytest.fixture(scope="module")
def tiny_tok():
    return train_tokenizer()


def labels(units: list[CriticalUnit]) -> list[str]:
    return [u.label for u in units]


def test_numbers_one_unit_per_occurrence_in_text_order():
    units = find_critical_units(TEXT)
    assert labels(units) == ["1,000", "2.5", "48", "4", "2.5", "48", "120", "4", "480", "1,000", "480", "520"]
    assert all(TEXT[a:b] == u.label for u in units for a, b in u.spans)
    border = TEXT.index("\nRationale:")
    steps = sentence_spans(TEXT, [(0, border), (border, len(TEXT))])
    assert len(steps) == 5 and len(units) == 12


def test_number_rule_excludes_the_sentence_period():
    units = find_critical_units("It was 12. Then 3.75, then 1,000.\nAnd 7,5 or 1.2.3!")
    assert [(u.label, u.spans) for u in units] == [
        ("12", ((7, 9),)),
        ("3.75", ((16, 20),)),
        ("1,000", ((27, 32),)),
        ("7,5", ((38, 41),)),
        ("1.2.3", ((45, 50),)),
    ]


def test_keywords_per_occurrence_and_per_keyword():
    text = "The bank by the river bank. Banks hold money; an embankment holds water. Money talks."
    config = CriticalConfig(numbers=False, keywords=["bank", "money", "river bank"])
    units = find_critical_units(text, config)
    # Whole words only, case-insensitive, longest keyword first ("river bank" over "bank").
    assert [(u.label, u.spans) for u in units] == [
        ("bank", ((4, 8),)),
        ("river bank", ((16, 26),)),
        ("money", ((39, 44),)),
        ("money", ((73, 78),)),
    ]
    per_keyword = find_critical_units(text, config.model_copy(update={"keyword_units": "keyword"}))
    assert [(u.label, u.spans) for u in per_keyword] == [
        ("bank", ((4, 8),)),
        ("river bank", ((16, 26),)),
        ("money", ((39, 44), (73, 78))),
    ]
    strict = find_critical_units(text, config.model_copy(update={"ignore_case": False}))
    assert [u.spans[0][0] for u in strict] == [4, 16, 39]


def test_numbers_and_keywords_together_sorted_by_position():
    config = CriticalConfig(keywords=["apples"])
    units = find_critical_units("3 apples and 4 apples", config)
    assert labels(units) == ["3", "apples", "4", "apples"]


def test_config_validation():
    with pytest.raises(ConfigError, match="number_pattern"):
        load_config(CriticalConfig, overrides=["number_pattern=(\\d"])
    with pytest.raises(ConfigError, match="keywords"):
        load_config(CriticalConfig, overrides=["keywords=[' ']"])
    with pytest.raises(ConfigError, match="keyword_units"):
        load_config(CriticalConfig, overrides=["keyword_units=words"])


def test_units_map_to_every_overlapping_token(tiny_tok):
    encoded = encode_text(tiny_tok, TEXT)
    sets = unit_token_sets(find_critical_units(TEXT), encoded.ends)
    pieces = ["".join(decode(tiny_tok, [encoded.ids[k]]) for k in s) for s in sets]
    assert [p.strip() for p in pieces] == labels(find_critical_units(TEXT))
    assert any(len(s) > 1 for s in sets)  # "1,000" is several tokens of the tiny vocabulary


def reference_unit_tokens(unit: CriticalUnit, ends: list[int]) -> tuple[int, ...]:
    """Brute force: a token joins if its range overlaps a span; an empty token joins the character at
    its position."""
    starts = [0, *ends[:-1]]
    return tuple(
        k
        for k in range(len(ends))
        if any(
            (starts[k] < b and ends[k] > a) or (starts[k] == ends[k] and a <= starts[k] < b)
            for a, b in unit.spans
        )
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["12", "1,000", "2.5", "é", "😀", " x", ". ", "7", "ab", "中"]), max_size=25))
def test_unit_tokens_against_brute_force(tiny_tok, pieces):
    text = "".join(pieces)
    encoded = encode_text(tiny_tok, text)
    config = CriticalConfig(keywords=["é", "ab"], keyword_units="keyword")
    units = find_critical_units(text, config)
    ends = list(encoded.ends)
    assert unit_token_sets(units, ends) == [reference_unit_tokens(u, ends) for u in units]


def test_alignment_hash_is_stable_and_sensitive():
    config = CriticalConfig()
    border = TEXT.index("\nRationale:")
    steps = sentence_spans(TEXT, [(0, border), (border, len(TEXT))])
    units = find_critical_units(TEXT, config)
    digest = alignment_hash(TEXT, steps, units, config)
    # A fixed value: the digest must not change across runs, processes or library versions.
    assert digest == "3096cceee2fa00be9b52874b4f57f839957b3314669661ab9eac0e71921e41fd"
    assert alignment_hash(TEXT + " ", steps, units, config) != digest
    assert alignment_hash(TEXT, steps[:-1], units, config) != digest
    assert alignment_hash(TEXT, steps, units[:-1], config) != digest
    assert alignment_hash(TEXT, steps, units, CriticalConfig(keywords=["x"])) != digest
