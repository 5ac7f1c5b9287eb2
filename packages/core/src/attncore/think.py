"""The think tags and what counts as thinking: one definition for prompts, traces, segmentation,
grading and token counts.

A reasoning model thinks between `<think>` and `</think>`, then answers. R1-style prompts open the
thinking themselves (they end with `THINK_OPEN_LINE`), so the response holds only the `</think>`.

- Thinking text ends at the **last** `</think>` (`split_thinking`); the answer is what follows it.
- Thinking tokens are the completion tokens up to and including the last `</think>`
  (`thinking_token_count`), so thinking + answer tokens = completion tokens.
- AttnPO's correctness check (attnpo-spec §2) needs the strict form (`ThinkingSplit.attnpo_form`): no
  `<think>` in the response and exactly one `</think>`, with the last `\\boxed{}` after it. Under that
  form the first and the last `</think>` coincide, so the step segmenter, which reads the thinking up
  to the first `</think>` (spec §3), sees the same thinking as the grader and the token counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from attncore.alignment import decode, single_token_id, token_at_char, token_char_ends

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
THINK_TAGS = (THINK_OPEN, THINK_CLOSE)
THINK_OPEN_LINE = THINK_OPEN + "\n"
"""How prompts and traces open the thinking (R1-Distill generation prompts end with it)."""


@dataclass(frozen=True)
class ThinkingSplit:
    """A response cut at its last `</think>`.

    `thinking` is everything before the last `</think>` ("" when there is none) and `answer` everything
    after it (the whole response when there is none). `close_count` and `has_open` let a strict rule
    demand exactly one `</think>` and no `<think>` (the template puts `<think>` in the prompt).
    """

    thinking: str
    answer: str
    close_count: int
    has_open: bool

    @property
    def attnpo_form(self) -> bool:
        """AttnPO's form rule: exactly one `</think>` and no `<think>` in the response."""
        return self.close_count == 1 and not self.has_open


def split_thinking(text: str) -> ThinkingSplit:
    """Split a response into thinking and answer at the last `</think>`."""
    cut = text.rfind(THINK_CLOSE)
    has_open = THINK_OPEN in text
    if cut < 0:
        return ThinkingSplit("", text, 0, has_open)
    return ThinkingSplit(text[:cut], text[cut + len(THINK_CLOSE) :], text.count(THINK_CLOSE), has_open)


def prompt_opens_thinking(prompt: str) -> bool:
    """True when the prompt leaves the model inside a thinking block (R1 templates end with `<think>`)."""
    return prompt.rstrip().endswith(THINK_OPEN)


def thinking_token_count(
    completion_ids: Sequence[int], text: str, thinking_opened: bool, tokenizer: Callable[[], Any]
) -> int:
    """How many leading tokens of a completion are thinking, counted on the generated ids.

    With a `</think>` in `text` (the decoded completion): every token up to and including the last
    `</think>` (`</think>` must survive decoding, as it does in R1 and Qwen3 tokenizers, where it is not
    a special token). Without one: all tokens when thinking was opened (by the prompt, `thinking_opened`,
    or by the completion) and never closed, whether the completion ran into the length limit or
    stopped early; otherwise none (a model that does not think). `tokenizer` returns the generating
    tokenizer and is only called when the text holds a `</think>`.
    """
    if THINK_CLOSE not in text:
        return len(completion_ids) if thinking_opened or THINK_OPEN in text else 0
    tok = tokenizer()
    ids = [int(i) for i in completion_ids]
    close_id = single_token_id(tok, THINK_CLOSE)
    if close_id is not None and close_id in ids:
        return len(ids) - ids[::-1].index(close_id)
    decoded = decode(tok, ids)
    at = decoded.rfind(THINK_CLOSE)
    if at < 0:
        raise ValueError("`</think>` is in the stored text but not in the decoded completion ids")
    # the token holding the last character of `</think>` closes the thinking
    return token_at_char(token_char_ends(tok, ids), at + len(THINK_CLOSE) - 1) + 1
