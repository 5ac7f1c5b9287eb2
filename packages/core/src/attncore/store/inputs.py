"""Examples an extraction reads: generated responses (AttnPO) or questions with rationales (MoLSAKI).

A rollout folder gives both: its prompt and completion ids exactly as generated, or its problem and
decoded text. A problems file (`.jsonl`/`.parquet` with `id`, `problem`, `rationale`) gives rationales,
and for AttnPO a teacher-forced response: the rendered prompt followed by the rationale's tokens.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from attncore.data import Problem, check_row_file, read_rows
from attncore.errors import UserError
from attncore.prompts import PromptConfig, encode_prompt
from attncore.rollout.store import rerun_command
from attncore.rollout.types import Rollout
from attncore.shards import ShardedTable
from attncore.store.config import InputConfig
from attncore.think import THINK_OPEN_LINE


@dataclass(frozen=True)
class ResponseExample:
    """A prompt and a response in token ids, with what AttnPO needs to know about how it ended."""

    id: str
    problem_id: str
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    truncated: bool
    correct: bool | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


@dataclass(frozen=True)
class RationaleExample:
    """A question and a rationale, read teacher-forced as MoLSAKI's canonical text; `keywords` are the
    ones the teacher listed (CSQA), the units under `CriticalConfig.listed_keywords`."""

    id: str
    question: str
    rationale: str
    keywords: tuple[str, ...] = ()


Example = ResponseExample | RationaleExample


def _rollouts(path: Path) -> list[Rollout]:
    table = ShardedTable.read_only(path, rerun=rerun_command(path)).read_all()
    return [] if table is None else [Rollout.from_row(row) for row in table.to_pylist()]


def _field(row: dict[str, Any], names: tuple[str, ...], path: Path, number: int) -> Any:
    for name in names:
        if row.get(name) is not None:
            return row[name]
    raise UserError(f"{path}: row {number} has no {' or '.join(names)}")


def row_keywords(row: dict[str, Any], path: Path, number: int) -> tuple[str, ...]:
    """The keywords a rationales row lists (CSQA; absent or null: none); anything but a list of strings
    is an error naming the row."""
    keywords = row.get("keywords") or []
    if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
        raise UserError(f"{path}: row {number} has keywords that are not a list of strings")
    return tuple(keywords)


def _check_unique(examples: list[Example], path: Path) -> None:
    seen: set[str] = set()
    for example in examples:
        if example.id in seen:
            raise UserError(f"{path}: example id {example.id!r} occurs twice; ids key the store")
        seen.add(example.id)


def input_source(cfg: InputConfig) -> Path:
    """The input path, checked (before any model is loaded for it) to be a rollout folder or a file of
    a supported type."""
    path = Path(cfg.path)
    if not path.exists():
        raise UserError(f"input not found: {path}")
    if path.is_dir():
        ShardedTable.read_only(path)
    else:
        check_row_file(path)
    return path


def teacher_forced_response(
    example_id: str, question: str, rationale: str, tokenizer, prompt: PromptConfig
) -> ResponseExample:
    """The response a model would have generated if it had written `rationale`: the prompt rendered
    as for sampling, then the rationale's tokens and EOS (a leading `<think>` that the prompt already
    opens is not repeated)."""
    prompt_text, prompt_ids = encode_prompt(
        Problem(example_id, question, "", "teacher-forced"), tokenizer, prompt
    )
    if prompt_text.endswith(THINK_OPEN_LINE) and rationale.startswith(THINK_OPEN_LINE):
        rationale = rationale[len(THINK_OPEN_LINE) :]
    completion = list(tokenizer(rationale, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        completion.append(tokenizer.eos_token_id)
    return ResponseExample(example_id, example_id, tuple(prompt_ids), tuple(completion), truncated=False)


def load_responses(cfg: InputConfig, tokenizer, prompt: PromptConfig) -> list[ResponseExample]:
    """AttnPO inputs: a rollout folder's responses as generated, or a problems file teacher-forced."""
    path = input_source(cfg)
    if path.is_dir():
        examples = [
            ResponseExample(
                r.rollout_id,
                r.problem_id,
                tuple(r.prompt_ids),
                tuple(r.completion_ids),
                truncated=r.finish_reason == "length",
                correct=r.extra.get("correct"),
            )
            for r in _rollouts(path)[: cfg.limit]
        ]
    else:
        examples = []
        for number, row in enumerate(read_rows(path)[: cfg.limit], 1):
            example_id = str(_field(row, ("id", "problem_id"), path, number))
            question = _field(row, ("problem",), path, number)
            rationale = _field(row, ("rationale",), path, number)
            examples.append(teacher_forced_response(example_id, question, rationale, tokenizer, prompt))
    _check_unique(examples, path)
    return examples


def load_rationales(cfg: InputConfig) -> list[RationaleExample]:
    """MoLSAKI inputs: (problem, rationale) of a problems file, or (problem, text) of a rollout folder."""
    path = input_source(cfg)
    if path.is_dir():
        examples = [RationaleExample(r.rollout_id, r.problem, r.text) for r in _rollouts(path)[: cfg.limit]]
    else:
        examples = []
        for number, row in enumerate(read_rows(path)[: cfg.limit], 1):
            examples.append(
                RationaleExample(
                    str(_field(row, ("id", "problem_id"), path, number)),
                    _field(row, ("problem",), path, number),
                    _field(row, ("rationale",), path, number),
                    row_keywords(row, path, number),
                )
            )
    _check_unique(examples, path)
    return examples


def inputs_digest(examples: list[Example]) -> str:
    """SHA-256 of every field of every example, in order: the content the store was computed from."""
    digest = hashlib.sha256()
    for example in examples:
        fields = asdict(example)
        if fields.get("keywords") == ():
            del fields["keywords"]  # examples without keywords digest as before they could have them
        digest.update(json.dumps(fields, sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()
