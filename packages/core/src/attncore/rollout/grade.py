"""Grade a rollout folder in place: each shard gains correctness and token-count columns.

Shards are rewritten one at a time (atomically, see `attncore.shards`) and their manifest entry
records the grading mode and `GRADE_VERSION`, so an interrupted grading run resumes with the shards
not yet graded, and shards graded by an older version gain the columns added since.

Thinking and answer tokens are counted on the generated ids, never on a re-tokenization, by the one
rule of `attncore.think.thinking_token_count` (thinking ends with the last `</think>`), so
`n_thinking_tokens + n_answer_tokens == n_completion_tokens` for every rollout.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field
from tqdm.auto import tqdm

from attncore.config import Config
from attncore.errors import UserError
from attncore.grading import Grader, GradingMode
from attncore.models import load_tokenizer, resolve_model_source
from attncore.rollout.store import RolloutStore
from attncore.think import prompt_opens_thinking, thinking_token_count

GRADE_COLUMNS = (
    "correct",
    "pred",
    "grade_reason",
    "grade_mode",
    "n_completion_tokens",
    "n_thinking_tokens",
    "n_answer_tokens",
)
GRADE_VERSION = 2  # 2: thinking / answer token counts


MAX_WORKERS = 256  # each is a process; workers=100000 would exhaust the machine


class GradingConfig(Config):
    """How rollouts are graded; `auto` picks `gsm8k` for the plain template and `math` otherwise."""

    mode: Literal["auto", "math", "attnpo", "gsm8k", "choice", "code"] = "auto"
    workers: int = Field(2, ge=1, le=MAX_WORKERS, description="grading worker processes")
    timeout_s: float = Field(5.0, gt=0.0, allow_inf_nan=False, description="seconds allowed per answer")


def resolve_grading_mode(mode: str, template: str) -> GradingMode:
    if mode == "auto":
        return GradingMode.GSM8K if template == "plain" else GradingMode.MATH
    return GradingMode(mode)


def with_grades(table: pa.Table, grader: Grader, mode: GradingMode, tokenizer: Callable[[], Any]) -> pa.Table:
    """`table` plus the grade columns (replacing any from an earlier grading); `tokenizer` returns the
    generating tokenizer (see `thinking_token_count`)."""
    results = grader.grade(table.column("text").to_pylist(), table.column("gold").to_pylist(), mode)
    keep = [name for name in table.column_names if name not in GRADE_COLUMNS]
    out = table.select(keep)
    lengths = pc.list_value_length(table.column("completion_ids")).cast(pa.int32())
    thinking = [
        thinking_token_count(ids, text, prompt_opens_thinking(prompt), tokenizer)
        for ids, text, prompt in zip(
            table.column("completion_ids").to_pylist(),
            table.column("text").to_pylist(),
            table.column("prompt").to_pylist(),
            strict=True,
        )
    ]
    n_thinking = pa.array(thinking, pa.int32())
    columns = {
        "correct": pa.array([r.correct for r in results], pa.bool_()),
        "pred": pa.array([r.pred for r in results], pa.string()),
        "grade_reason": pa.array([str(r.reason) for r in results], pa.string()),
        "grade_mode": pa.array([str(mode)] * len(results), pa.string()),
        "n_completion_tokens": lengths,
        "n_thinking_tokens": n_thinking,
        "n_answer_tokens": pc.subtract(lengths, n_thinking),
    }
    for name, column in columns.items():
        out = out.append_column(name, column)
    return out


def store_tokenizer(store: RolloutStore):
    """The tokenizer of the model that wrote `store`, from the model recorded in its metadata."""
    model = store.meta.get("model")
    if not isinstance(model, dict) or "name" not in model:
        raise UserError(f"{store.root} does not record its model, so its thinking tokens cannot be counted")
    source, _ = resolve_model_source(model["name"])
    return load_tokenizer(source, model.get("revision"))


def grade_store(
    store: RolloutStore,
    cfg: GradingConfig,
    template: str,
    progress: bool = True,
    tokenizer=None,
    grader: Grader | None = None,
) -> int:
    """Grade every shard of `store` not yet graded in this mode and version; returns the rows graded.

    `tokenizer` is the generating model's tokenizer; when not given it is loaded from the model recorded
    in the store, and only if some completion holds a `</think>`. `grader` is a started pool to grade
    with (kept open) instead of starting one from `cfg`.
    """
    mode = resolve_grading_mode(cfg.mode, template)
    pending = [
        entry
        for entry in store.table.shards
        if entry.get("graded") != str(mode) or entry.get("grade_version") != GRADE_VERSION
    ]
    if not pending:
        return 0
    given = tokenizer
    tokenizer_once = functools.cache(lambda: given if given is not None else store_tokenizer(store))
    graded = 0
    pool = Grader(mode, cfg.workers, cfg.timeout_s) if grader is None else contextlib.nullcontext(grader)
    with pool as grader:
        for entry in tqdm(pending, desc="grading", unit="shard", disable=not progress):
            table = with_grades(store.table.read_shard(entry), grader, mode, tokenizer_once)
            store.table.replace(entry, table, graded=str(mode), grade_version=GRADE_VERSION)
            graded += table.num_rows
    return graded
