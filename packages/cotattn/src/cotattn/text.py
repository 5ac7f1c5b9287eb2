"""The student's two tasks on any tokenizer, and the canonical text's steps and critical units.

Per kept example (question q, teacher rationale r, answer a = gold), two sequences (molsaki-spec §7):
- answer task (L_pre): `Question: {q}\\nAnswer:` -> ` {a}`, cross-entropy on the answer tokens;
- rationale task (L_exp): the canonical text `Question: {q}\\nRationale:` -> ` {r}` (attncore's
  `TextFormat`), cross-entropy on the rationale tokens; the prompt is what `attncore eval` renders
  with `prompt.template=molsaki`. Its forward also gives the student's stepwise matrices.
Both start with the tokenizer's special prefix (BOS) and end with EOS, as the model reads text natively.

Steps, critical units and the alignment hash come from `attncore.store.extract.prepare_text`, the code
the teacher's extraction runs, so teacher and student cut the same string by the same rules; the hash
is compared with the teacher's at training time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from attncore.alignment import encode_text, token_at_char
from attncore.config import Config
from attncore.critical import CriticalConfig
from attncore.scores import TextLayout
from attncore.store.config import ANSWER_PREFIX, TextFormat
from attncore.store.extract import PreparedText, prepare_text, special_prefix
from attncore.store.inputs import RationaleExample
from attncore.store.store import segmentation_meta

IGNORE_INDEX = -100
"""Label of tokens outside a task's target (transformers' cross-entropy skips it)."""


class TaskFormat(Config):
    """How the two tasks are written: the canonical text (`text`) is the rationale task; the answer
    task replaces its rationale prefix by `answer_prefix`."""

    text: TextFormat = TextFormat()
    answer_prefix: str = ANSWER_PREFIX

    def answer_text(self, question: str, answer: str) -> tuple[str, int]:
        """The answer task's text and where its target begins: at the answer prefix's trailing spaces,
        as in the rationale task (`TextFormat.prompt_length`)."""
        prompt = f"{self.text.question_prefix}{question}{self.answer_prefix}"
        return prompt + answer, len(prompt.rstrip(" "))


def rules_hash(task_format: TaskFormat, critical: CriticalConfig) -> str:
    """SHA-256 of the step rules (as the attention store records them), the critical-unit rules and the
    task format: equal on the teacher's targets and the student's training, or the run is refused."""
    payload = {
        "segmentation": segmentation_meta(task_format.text),
        "critical": critical.rules(),
        "answer_prefix": task_format.answer_prefix,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class TaskSequence:
    """Token ids of one task (special prefix, text, EOS) and its labels (IGNORE_INDEX outside the target)."""

    ids: tuple[int, ...]
    labels: tuple[int, ...]


@dataclass(frozen=True)
class StudentExample:
    """One training example on the student's tokenizer.

    `layout` places the canonical text's steps and units on `rationale.ids` (offset = special prefix);
    it is None when the text has no step, no critical unit, or does not decode back to itself, and
    then `skip_reason` says which (the example still trains both cross-entropies).
    """

    id: str
    answer: TaskSequence
    rationale: TaskSequence
    layout: TextLayout | None
    alignment_hash: str | None
    skip_reason: str | None

    @property
    def unit_count(self) -> int:
        return 0 if self.layout is None else len(self.layout.units)


def _task(tokenizer, text: str, target_start: int, prefix: list[int]) -> TaskSequence:
    """Every token holding a character at or after `target_start` (the space before the answer or
    rationale) is a target, and so is EOS."""
    encoded = encode_text(tokenizer, text)
    first = token_at_char(encoded.ends, target_start)
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    ids = [*prefix, *encoded.ids, *eos]
    labels = [IGNORE_INDEX] * (len(prefix) + first) + [*encoded.ids[first:], *eos]
    return TaskSequence(tuple(ids), tuple(labels))


def student_example(
    tokenizer,
    example_id: str,
    question: str,
    rationale: str,
    answer: str,
    task_format: TaskFormat,
    critical: CriticalConfig,
    prefix: list[int] | None = None,
    keywords: tuple[str, ...] = (),
) -> StudentExample:
    """Both task sequences of one example, with the canonical text's layout (module doc).

    `prefix` is the tokenizer's special prefix (`special_prefix(tokenizer)` when None); `keywords` are
    the teacher's listed keywords (the units under `critical.listed_keywords`)."""
    prefix = special_prefix(tokenizer) if prefix is None else prefix
    answer_text, answer_start = task_format.answer_text(question, answer)
    answer_task = _task(tokenizer, answer_text, answer_start, prefix)
    prepared = prepare_text(
        tokenizer,
        RationaleExample(example_id, question, rationale, keywords),
        task_format.text,
        critical,
        prefix,
    )
    text, _ = task_format.text.render(question, rationale)
    rationale_task = _task(tokenizer, text, task_format.text.prompt_length(question), prefix)
    if not isinstance(prepared, PreparedText):
        return StudentExample(example_id, answer_task, rationale_task, None, None, prepared.reason)
    record = prepared.record
    layout = TextLayout(record.step_tokens, record.unit_tokens, record.prefix_tokens)
    return StudentExample(example_id, answer_task, rationale_task, layout, record.alignment_hash, None)
