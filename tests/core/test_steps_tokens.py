"""Characters <-> tokens: exact character ends, step token spans of generated responses, and MoLSAKI
sentence steps on texts we tokenize."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attncore.alignment import (
    decode,
    encode_text,
    first_token_from,
    single_token_id,
    token_at_char,
    token_char_ends,
    token_ranges_by_start,
)
from attncore.errors import UserError
from attncore.steps import (
    CONFUSED,
    PROGRESSION,
    SUMMARY,
    StepKind,
    StepSegmenterConfig,
    segment_response,
    segment_thinking,
    sentence_spans,
)
from attncore.think import THINK_CLOSE
from attncore.tiny import train_tokenizer

from .test_steps import RELEASE_SAMPLE

C, P = StepKind.CONFUSED, StepKind.PROGRESSION


@pytest.fixture(scope="module")
def tiny_tok():
    return train_tokenizer()


def fallback_tokenizer(pieces: list[str], think_token: bool = True):
    """A Llama/Gemma-style decoder: `▁` is a space, `<0xNN>` byte tokens, leading space stripped.

    Only decoding matters here; ids are chosen by the tests.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    core.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>")
    if think_token:
        tok.add_tokens([THINK_CLOSE])
    return tok


FALLBACK_PIECES = ["▁Wait", "▁the", "a", "b", "▁", ".", "No,Wait", "Wait</", "think>", "Okay", "▁then."]


@pytest.fixture(scope="module")
def fallback_tok():
    return fallback_tokenizer(FALLBACK_PIECES)


def byte_ids(tok, text: str) -> list[int]:
    """Ids of `text` spelled as byte tokens of the fallback tokenizer."""
    return [tok.convert_tokens_to_ids(f"<0x{b:02X}>") for b in text.encode()]


def piece_ids(tok, *pieces: str) -> list[int]:
    return [tok.convert_tokens_to_ids(p) for p in pieces]


def common_prefix_len(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def reference_ends(tok, ids: list[int]) -> list[int]:
    """The definition, by brute force: characters settled after token k and never unsettled later."""
    full = decode(tok, ids)
    settled = [common_prefix_len(decode(tok, ids[: k + 1]), full) for k in range(len(ids))]
    return [min(settled[k:]) for k in range(len(ids))]


# --- token_char_ends ------------------------------------------------------------------------------------

_TEXT_PIECES = [
    "Wait",
    " the",
    "\n",
    "😀",
    "中文",
    "é",
    "2.5",
    "1,000",
    "</think>",
    "**Final Answer",
    " ",
    "ab",
]
mixed_texts = st.lists(
    st.one_of(st.sampled_from(_TEXT_PIECES), st.text(st.characters(codec="utf-8"), max_size=5)), max_size=25
).map("".join)


def test_char_ends_hand_example_with_split_characters(tiny_tok):
    # The tiny tokenizer knows no non-ASCII character: 'é' is 2 byte tokens, '😀' 4.
    ids = tiny_tok("aé😀b", add_special_tokens=False)["input_ids"]
    assert len(ids) == 1 + 2 + 4 + 1
    # The leading bytes own no character; the token that completes a character owns it.
    assert token_char_ends(tiny_tok, ids) == [1, 1, 2, 2, 2, 2, 3, 4]


def test_char_ends_byte_fallback_runs(fallback_tok):
    euro = byte_ids(fallback_tok, "€")
    ids = piece_ids(fallback_tok, "▁Wait") + euro + euro + piece_ids(fallback_tok, "a") + euro[:2]
    ids += piece_ids(fallback_tok, "▁the")
    assert decode(fallback_tok, ids) == "Wait€€a\ufffd\ufffd the"
    # A byte-fallback decoder prints "€" + an unfinished byte run as 4 replacement characters, so the
    # first "€" is settled only with the second; the two stray bytes at the end stay replacement chars.
    assert token_char_ends(fallback_tok, ids) == [4, 4, 4, 4, 4, 4, 6, 7, 8, 9, 13]
    assert token_char_ends(fallback_tok, ids) == reference_ends(fallback_tok, ids)


def test_char_ends_equal_prefix_decoding_on_plain_text(tiny_tok):
    ids = tiny_tok(RELEASE_SAMPLE, add_special_tokens=False)["input_ids"]
    ends = token_char_ends(tiny_tok, ids)
    assert ends == [len(decode(tiny_tok, ids[: k + 1])) for k in range(len(ids))]
    assert ends[-1] == len(RELEASE_SAMPLE)


@settings(max_examples=60, deadline=None)
@given(mixed_texts)
def test_char_ends_match_definition_on_encoded_text(tiny_tok, text):
    ids = tiny_tok(text, add_special_tokens=False)["input_ids"]
    assert token_char_ends(tiny_tok, ids) == reference_ends(tiny_tok, ids)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_char_ends_match_definition_on_arbitrary_ids(tiny_tok, fallback_tok, data):
    # Arbitrary id sequences: special tokens, stray continuation bytes, unfinished characters.
    tok = data.draw(st.sampled_from([tiny_tok, fallback_tok]))
    ids = data.draw(st.lists(st.integers(0, len(tok) - 1), max_size=30))
    assert token_char_ends(tok, ids) == reference_ends(tok, ids)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.sampled_from(["€", "😀", "é", "a", "b", "▁", "▁the", "."]), max_size=20), st.integers(1, 4)
)
def test_char_ends_byte_fallback_texts(fallback_tok, pieces, window):
    ids = []
    for piece in pieces:
        ids += byte_ids(fallback_tok, piece) if len(piece.encode()) > 1 else piece_ids(fallback_tok, piece)
    assert token_char_ends(fallback_tok, ids, window=window) == reference_ends(fallback_tok, ids)


# --- characters -> tokens -------------------------------------------------------------------------------


def _starts(ends: list[int]) -> list[int]:
    return [0, *ends[:-1]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=12), st.integers(0, 40))
def test_char_to_token_rules_against_brute_force(steps_, c):
    ends = [sum(steps_[: k + 1]) for k in range(len(steps_))]  # non-decreasing, some empty tokens
    starts = _starts(ends)
    n = len(ends)
    c = min(c, ends[-1] if ends else 0)
    covering = next((k for k in range(n) if ends[k] > c or starts[k] >= c), n)
    assert token_at_char(ends, c) == covering
    assert first_token_from(ends, c) == next((k for k in range(n) if starts[k] >= c), n)


def test_char_to_token_hand_example():
    ends = [3, 5, 5, 6]  # token 2 holds the leading bytes of character 5
    assert [token_at_char(ends, c) for c in range(7)] == [0, 0, 0, 1, 1, 2, 4]
    assert [first_token_from(ends, c) for c in range(7)] == [0, 1, 1, 1, 2, 2, 4]


# --- AttnPO: segmenting generated responses -------------------------------------------------------------


def check_response(tok, ids: list[int], result, config=None) -> None:
    """Invariants of an `ok` result, checked with brute-force character ends."""
    assert result.ok and result.reason is None
    ends = reference_ends(tok, ids)
    text = decode(tok, ids)
    t_end, t_after = result.think_end
    c_end = text.index(THINK_CLOSE)
    assert THINK_CLOSE in decode(tok, ids[t_end:t_after])  # the fewest tokens that hold `</think>`
    assert THINK_CLOSE not in decode(tok, ids[t_end + 1 : t_after])
    assert THINK_CLOSE not in decode(tok, ids[t_end : t_after - 1])
    steps = result.steps
    assert steps[0].tokens[0] == 0 and steps[-1].tokens[1] == t_end  # every thinking token, once
    assert all(a.tokens[1] == b.tokens[0] for a, b in pairwise(steps))
    assert all(s.tokens[1] > s.tokens[0] for s in steps)
    assert steps[0].chars[0] == 0 and steps[-1].chars[1] == c_end
    assert all(a.chars[1] == b.chars[0] for a, b in pairwise(steps))
    for s in steps:  # a step's first token is the one in which its first character begins
        starts = _starts(ends)
        assert s.tokens[0] == next(
            k for k in range(len(ids)) if ends[k] > s.chars[0] or starts[k] >= s.chars[0]
        )
    assert result.answer_span() == (t_after, len(ids))
    assert result.answer_span(offset=7) == (t_after + 7, len(ids) + 7)
    assert result.step_spans(offset=7) == [(s.tokens[0] + 7, s.tokens[1] + 7) for s in steps]
    boundaries = {s.chars[0] for s in steps}
    assert boundaries <= {s.start for s in segment_thinking(text[:c_end], config)}


def test_release_sample_on_tiny_tokenizer(tiny_tok):
    answer = "\n\nShe needs \\boxed{20} cups."
    ids = tiny_tok(RELEASE_SAMPLE + THINK_CLOSE + answer, add_special_tokens=False)["input_ids"]
    ids.append(tiny_tok.eos_token_id)
    result = segment_response(tiny_tok, ids)
    check_response(tiny_tok, ids, result)
    think_id = single_token_id(tiny_tok, THINK_CLOSE)
    assert ids[result.think_end[0]] == think_id and result.think_end[1] == result.think_end[0] + 1
    assert [s.chars[1] - s.chars[0] for s in result.steps] == [219, 539, 369, 396, 258, 90]
    assert decode(tiny_tok, ids[result.think_end[1] :]) == answer + tiny_tok.eos_token
    for s in result.steps:  # here every step starts on a token boundary
        assert decode(tiny_tok, ids[s.tokens[0] : s.tokens[1]]) == RELEASE_SAMPLE[s.chars[0] : s.chars[1]]


def test_untouched_responses(tiny_tok):
    def seg(text, **kw):
        return segment_response(tiny_tok, tiny_tok(text, add_special_tokens=False)["input_ids"], **kw)

    long_thought = "Okay, let me add the 12 apples and the 7 pears to get the total number of fruits.\n"
    assert len(long_thought) >= 80
    two_steps = long_thought + "Wait, let me double-check that sum once more to be completely sure of it.\n"
    assert seg(two_steps + THINK_CLOSE + " 19").ok
    assert seg(two_steps + THINK_CLOSE + " 19", truncated=True).reason == "truncated"
    assert seg(two_steps + " 19").reason == "no_think_end"
    assert seg(THINK_CLOSE + " 19").reason == "empty_thinking"
    assert seg(long_thought + THINK_CLOSE + " 19").reason == "single_step"
    several = seg(two_steps + THINK_CLOSE + " 19" + THINK_CLOSE)
    assert several.reason == "several_think_ends" and not several.ok
    relaxed = seg(two_steps + THINK_CLOSE + " 19" + THINK_CLOSE, single_think_end=False)
    assert relaxed.ok and len(relaxed.steps) == 2
    # `</think>` spelled with ordinary tokens is not the `</think>` token of this tokenizer.
    spelled = []
    for piece in ("</", "think", ">"):
        spelled += tiny_tok(piece, add_special_tokens=False)["input_ids"]
    ids = tiny_tok(two_steps, add_special_tokens=False)["input_ids"] + spelled
    assert decode(tiny_tok, ids).endswith(THINK_CLOSE)
    assert segment_response(tiny_tok, ids).reason == "think_end_spelled_out"
    with pytest.raises(ValueError, match="no final-answer span"):
        seg(two_steps).answer_span()


def test_segment_that_owns_no_token_joins_the_next(fallback_tok):
    config = StepSegmenterConfig(min_chars=1)  # no merging: every phrase opens a step
    ids = piece_ids(fallback_tok, "Okay", "▁then.", "<0x0A>", "No,Wait", "▁the", THINK_CLOSE, "a")
    assert decode(fallback_tok, ids) == "Okay then.\nNo,Wait the</think>a"
    assert [(s.start, s.trigger) for s in segment_thinking("Okay then.\nNo,Wait the", config)] == [
        (0, None),
        (11, "No,"),
        (14, "Wait"),
    ]
    result = segment_response(fallback_tok, ids, config)
    check_response(fallback_tok, ids, result, config)
    assert [(s.chars, s.tokens, s.kind, s.trigger) for s in result.steps] == [
        ((0, 11), (0, 3), P, None),
        ((11, 22), (3, 5), C, "Wait"),
    ]


def test_last_segment_inside_the_think_end_token_joins_the_previous():
    tok = fallback_tokenizer(FALLBACK_PIECES, think_token=False)
    assert single_token_id(tok, THINK_CLOSE) is None
    config = StepSegmenterConfig(min_chars=1)
    ids = piece_ids(tok, "Okay", "▁then.", "<0x0A>", "No,Wait", "▁the", "<0x0A>", "Wait</", "think>", "a")
    text = decode(tok, ids)
    assert text == "Okay then.\nNo,Wait the\nWait</think>a"
    result = segment_response(tok, ids, config)
    check_response(tok, ids, result, config)
    assert result.think_end == (6, 8)  # located by characters, two tokens
    assert [(s.chars, s.tokens, s.trigger) for s in result.steps] == [
        ((0, 11), (0, 3), None),
        ((11, 27), (3, 6), "Wait"),
    ]


phrases = st.sampled_from([*CONFUSED, *PROGRESSION, *SUMMARY, "**Final Answer", "No,Let me double-check"])
filler = st.sampled_from(["\n", "\n\n", " ", " the sum 12 + 7 = 19", "é", "😀 ", " Butane", "中", "Some"])
thinking_texts = st.lists(
    st.tuples(st.sampled_from(["\n", "\n\n", " ", ""]), phrases, st.one_of(filler, st.text(max_size=4))),
    max_size=12,
).map(lambda parts: "".join(sep + phrase + rest for sep, phrase, rest in parts))


def split_encode(tok, text: str, cuts: list[int]) -> list[int]:
    """Encode `text` in pieces: a valid but non-canonical tokenization, as sampling can produce."""
    ids, prev = [], 0
    for cut in [*sorted({min(c, len(text)) for c in cuts}), len(text)]:
        ids += tok(text[prev:cut], add_special_tokens=False)["input_ids"] if cut > prev else []
        prev = cut
    return ids


def response_ids(tok, thinking: str, cuts: list[int]) -> list[int]:
    thinking = thinking.replace(THINK_CLOSE, "")
    ids = split_encode(tok, thinking, cuts)
    think = single_token_id(tok, THINK_CLOSE)
    ids += [think] if think is not None else tok(THINK_CLOSE, add_special_tokens=False)["input_ids"]
    return ids + tok(" so 19.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


@settings(max_examples=40, deadline=None)
@given(thinking_texts, st.lists(st.integers(0, 400), max_size=6), st.sampled_from(["faithful", "clean"]))
def test_response_steps_partition_thinking_tokens(tiny_tok, thinking, cuts, mode):
    config = StepSegmenterConfig(mode=mode, min_chars=20)
    ids = response_ids(tiny_tok, thinking, cuts)
    result = segment_response(tiny_tok, ids, config)
    if result.ok:
        check_response(tiny_tok, ids, result, config)
    else:
        assert result.reason in ("empty_thinking", "single_step")


# --- MoLSAKI: sentence steps on our own tokenization ----------------------------------------------------


def check_ranges_by_start(tok, encoded, spans) -> None:
    ends = reference_ends(tok, list(encoded.ids))
    assert list(encoded.ends) == ends
    starts = _starts(ends)
    for (a, b), (t0, t1) in zip(spans, token_ranges_by_start(spans, encoded.ends), strict=True):
        assert list(range(t0, t1)) == [k for k in range(len(ends)) if a <= starts[k] < b]


def test_sentence_token_ranges_hand_example(tiny_tok):
    text = "Question: A shop sells 12 apples. How many?\nRationale: 12 + 7 = 19. So 19."
    border = text.index("\nRationale:")
    spans = sentence_spans(text, [(0, border), (border, len(text))])
    encoded = encode_text(tiny_tok, text)
    check_ranges_by_start(tiny_tok, encoded, spans)
    ranges = token_ranges_by_start(spans, encoded.ends)
    assert [decode(tiny_tok, encoded.ids[t0:t1]) for t0, t1 in ranges] == [text[a:b] for a, b in spans]
    assert ranges[0][0] == 0 and ranges[-1][1] == len(encoded.ids)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from(["2.5", "1,000", ". ", "? ", " x", "é", "😀", "!\n", "ab", " "]), max_size=30)
)
def test_sentence_token_ranges_property(tiny_tok, pieces):
    text = "".join(pieces)
    spans = sentence_spans(text)
    check_ranges_by_start(tiny_tok, encode_text(tiny_tok, text), spans)


def test_encode_text_requires_a_round_trip():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")
    with pytest.raises(UserError, match="does not reproduce the text"):
        encode_text(tok, "a b")


# --- SmolLM2 tokenizer ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_char_ends_and_steps(smollm2):
    tok = smollm2.tokenizer
    assert single_token_id(tok, THINK_CLOSE) is None  # located by characters here
    for text in ["aé😀b 中文 ™ Ω", "Wait 😀😀 \u200d🙂 1,000.5", RELEASE_SAMPLE[:300] + "🙂\n\n"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert token_char_ends(tok, ids) == reference_ends(tok, ids)
    ids = tok(RELEASE_SAMPLE + THINK_CLOSE + "\n\n20", add_special_tokens=False)["input_ids"]
    result = segment_response(tok, ids)
    check_response(tok, ids, result)
    assert result.think_end[1] - result.think_end[0] > 1  # `</think>` spans several tokens
    assert decode(tok, ids[result.think_end[0] : result.think_end[1]]).strip() == THINK_CLOSE
    assert [s.chars[1] - s.chars[0] for s in result.steps] == [219, 539, 369, 396, 258, 90]


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(
    thinking_texts, st.lists(st.integers(0, 400), max_size=6), st.lists(st.integers(0, 49151), max_size=12)
)
def test_smollm2_response_steps_and_random_ids(smollm2, thinking, cuts, noise):
    tok = smollm2.tokenizer
    ids = response_ids(tok, thinking, cuts)
    result = segment_response(tok, ids, StepSegmenterConfig(min_chars=20))
    if result.ok:
        check_response(tok, ids, result, StepSegmenterConfig(min_chars=20))
    assert token_char_ends(tok, noise) == reference_ends(tok, noise)
