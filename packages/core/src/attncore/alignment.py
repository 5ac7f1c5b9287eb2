"""Characters <-> tokens: which token ids hold which characters of a text.

Characters are mapped to the token ids themselves, never to a re-tokenization of the decoded text
(AttnPO pitfall 3): `token_char_ends` decodes the ids and finds, token by token, how many characters of
the decoded text are settled. The same method serves generated responses and texts we tokenize
ourselves (`encode_text`), so step segmentation, critical units, grading and the attention store
never disagree about a boundary.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from attncore.errors import UserError


def decode(tokenizer, ids: Iterable[int]) -> str:
    """The one decode used for texts and offsets: special tokens kept, no space clean-up."""
    return tokenizer.decode(
        [int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )


def _common_prefix_len(a: str, text: str, origin: int) -> int:
    """Length of the common prefix of `a` and `text[origin:]`."""
    n = min(len(a), len(text) - origin)
    if text.startswith(a[:n], origin):
        return n
    lo, hi = 0, n  # a[:lo] matches, a[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if text.startswith(a[:mid], origin):
            lo = mid
        else:
            hi = mid
    return lo


def token_char_ends(tokenizer, ids: Sequence[int], window: int = 8) -> list[int]:
    """`ends[k]`: how many characters of `decode(ids)` are settled once tokens `0..k` are read.

    Exactly, `ends[k] = min_{j>=k} lcp(decode(ids[:j+1]), decode(ids))`. Token k covers the characters
    `[ends[k-1], ends[k])`. A token holding only the leading bytes of a multi-byte character owns no
    character; its empty range sits at that character, with which it goes (see `token_at_char`).

    Computed incrementally: each token is decoded together with `window` to `2 * window` tokens of
    left context that start right after a settled character, and the result is checked against the
    decoded text. Only tokens that leave a character unsettled fall back to decoding the whole prefix.
    The final `min` only matters for byte-fallback decoders, which print an unfinished byte sequence as
    one replacement character per byte.
    """
    ids = [int(i) for i in ids]
    text = decode(tokenizer, ids)
    last_window: tuple[int, int, str] = (0, 0, "")

    def decode_window(lo: int, hi: int) -> str:
        nonlocal last_window
        if last_window[:2] != (lo, hi):
            last_window = (lo, hi, decode(tokenizer, ids[lo:hi]))
        return last_window[2]

    settled: list[int] = []
    syncs: list[int] = []  # tokens after which the decoded prefix is exactly text[:settled[k]]
    lo = 0  # the context starts at 0 or right after a sync token
    for k in range(len(ids)):
        j = syncs[-1] if syncs else -1
        if j + 1 - lo > 2 * window:
            i = bisect_right(syncs, j - window)
            lo = syncs[i - 1] + 1 if i else 0
        base = decode_window(lo, j + 1)
        origin = (settled[j] if j >= 0 else 0) - len(base)
        cur = decode_window(lo, k + 1)
        m = _common_prefix_len(cur, text, origin) if origin >= 0 and text.startswith(base, origin) else -1
        if m < 0 or (m < len(cur) and lo > 0):  # misaligned context or an unsettled character
            origin, cur = 0, decode(tokenizer, ids[: k + 1])
            m = _common_prefix_len(cur, text, 0)
        settled.append(origin + m)
        if m == len(cur):
            syncs.append(k)
    ends = settled
    for k in range(len(ends) - 2, -1, -1):
        ends[k] = min(ends[k], ends[k + 1])
    if ends and ends[-1] != len(text):
        raise UserError(
            f"cannot map characters to tokens: decoding {len(ids)} ids token by token does not rebuild "
            f"the decoded text ({ends[-1]} of {len(text)} characters)"
        )
    return ends


def token_at_char(ends: Sequence[int], c: int) -> int:
    """The token in which character `c` begins (AttnPO: `t_k` = the token covering `c_k`).

    Tokens with an empty range at `c` (leading bytes of the character at `c`) come first, so the
    first of them is returned. `c = len(text)` gives the index after the last token that holds text.
    """
    j = bisect_left(ends, c)
    if j < len(ends) and ends[j] == c and (ends[j - 1] if j > 0 else 0) < c:
        return j + 1  # token j ends right before c
    return j


def first_token_from(ends: Sequence[int], c: int) -> int:
    """The first token whose first character is at or after `c` (MoLSAKI: a token joins the step in
    which its first character lies). A token straddling `c` stays on the left."""
    return 0 if c <= 0 else bisect_left(ends, c) + 1


def single_token_id(tokenizer, text: str) -> int | None:
    """The id of `text` when the tokenizer has it as one added token, else None."""
    token_id = tokenizer.get_added_vocab().get(text)
    if token_id is None or tokenizer.encode(text, add_special_tokens=False) != [token_id]:
        return None
    return token_id


def token_ranges_by_start(spans: Sequence[tuple[int, int]], ends: Sequence[int]) -> list[tuple[int, int]]:
    """Token ranges of character spans under the first-character rule (molsaki-spec §3).

    A range may be empty when one token straddles a span's whole text; its row is then zero.
    """
    return [(first_token_from(ends, a), first_token_from(ends, b)) for a, b in spans]


@dataclass(frozen=True)
class EncodedText:
    """A text, its token ids (no special tokens) and each token's character end (`token_char_ends`)."""

    text: str
    ids: tuple[int, ...]
    ends: tuple[int, ...]


def encode_text(tokenizer, text: str) -> EncodedText:
    """Tokenize a canonical text (teacher-forced MoLSAKI input) and map its characters to the tokens.

    Character ends come from decoding the ids (`token_char_ends`), not from the tokenizer's offset
    mapping: byte-level offset mappings give both halves of a split character the full character and
    trim spaces differently across tokenizers, while decoding means the same thing for every model.
    The decoded ids must reproduce the text exactly.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoded = decode(tokenizer, ids)
    if decoded != text:
        at = _common_prefix_len(decoded, text, 0)
        raise UserError(
            f"the tokenizer does not reproduce the text when decoding (first difference at character {at}: "
            f"{text[at : at + 20]!r} became {decoded[at : at + 20]!r})"
        )
    return EncodedText(text, tuple(ids), tuple(token_char_ends(tokenizer, ids)))
