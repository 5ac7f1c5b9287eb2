"""Step scores of every (layer, query head) for the probe responses, stored batch by batch.

Responses are grouped by length (`attncore.store.extract.plan_batches`); each batch is scored from the
answer rows F of every head in one forward (`attncore.scores.batch_step_scores`) and written as one checksummed shard (`attncore.shards`): a table of ids
and a safetensors part holding one (layers, heads, steps) tensor per response. A killed run resumes
from the shards on disk; a shard that fails its checksum is reported, never read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
from torch import Tensor

from attncore.attention import AttentionCapture
from attncore.errors import UserError
from attncore.models import LoadedModel
from attncore.padding import pad_batch
from attncore.scores import batch_step_scores
from attncore.shards import ShardedTable
from attncore.store.extract import plan_batches
from attnpo.probe import ProbeItem


def tokens_digest(item: ProbeItem) -> str:
    """Identifies the token sequence a response's scores were computed on."""
    r = item.rollout
    return hashlib.sha256(f"{r.prompt_ids}|{r.completion_ids}".encode()).hexdigest()[:16]


class HeadScoreStore:
    """Per-response (layers, heads, steps) scores in a resumable folder tied to one model and probe setup."""

    def __init__(self, root: Path, meta: dict, overwrite: bool = False):
        self.table = ShardedTable(root, {"kind": "head-scores", **meta}, overwrite=overwrite)

    @classmethod
    def read_only(cls, root: Path) -> HeadScoreStore:
        """Open a scores folder written earlier, for reading only."""
        store = cls.__new__(cls)
        store.table = ShardedTable.read_only(root)
        return store

    def done(self) -> set[str]:
        return {i for _, t in self.table.iter_tables() for i in t.column("id").to_pylist()}

    def read(self, items: list[ProbeItem]) -> dict[str, Tensor]:
        """The stored scores of `items` (checksums verified); scores stored for other tokens under the same
        id are refused."""
        wanted = {item.rollout.rollout_id: tokens_digest(item) for item in items}
        out: dict[str, Tensor] = {}
        for entry, table in self.table.iter_tables():
            tensors = self.table.read_part(entry, "scores")
            rows = zip(table.column("id").to_pylist(), table.column("tokens").to_pylist(), strict=True)
            for index, (rid, digest) in enumerate(rows):
                if rid not in wanted:
                    continue
                if digest != wanted[rid]:
                    raise UserError(
                        f"{self.table.root}: the stored scores of {rid!r} belong to other tokens; "
                        "choose another output folder or pass --overwrite"
                    )
                out[rid] = tensors[str(index)]
        return out

    def append(self, items: list[ProbeItem], scores: list[Tensor]) -> None:
        table = pa.table(
            {
                "id": pa.array([i.rollout.rollout_id for i in items], pa.string()),
                "tokens": pa.array([tokens_digest(i) for i in items], pa.string()),
                "steps": pa.array([int(s.shape[-1]) for s in scores], pa.int32()),
            }
        )
        self.table.append(table, parts={"scores": {str(i): s.contiguous() for i, s in enumerate(scores)}})


def score_probe(
    loaded: LoadedModel,
    items: list[ProbeItem],
    store: HeadScoreStore,
    batch_size: int,
    max_batch_tokens: int | None,
    capture_mb: int,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Score every item the store lacks, one shard per batch; returns how many were scored now."""
    done = store.done()
    todo = [item for item in items if item.rollout.rollout_id not in done]
    if not todo:
        return 0
    text = loaded.model.config.get_text_config()
    layers, heads = text.num_hidden_layers, text.num_attention_heads
    lengths = [len(i.rollout.prompt_ids) + len(i.rollout.completion_ids) for i in todo]
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    device = next(loaded.model.parameters()).device
    scored = 0
    with AttentionCapture(loaded.model, chunk_bytes=capture_mb * 2**20) as capture:
        for batch in plan_batches(lengths, batch_size, max_batch_tokens):
            items = [todo[i] for i in batch]
            ids, mask, _ = pad_batch(
                [[*i.rollout.prompt_ids, *i.rollout.completion_ids] for i in items], pad, device=device
            )
            prompts = [len(i.rollout.prompt_ids) for i in items]
            scores = batch_step_scores(capture, ids, mask, [i.segmented for i in items], prompts)
            store.append(items, [s.per_head.reshape(layers, heads, -1).cpu() for s in scores])
            scored += len(batch)
            if on_batch is not None:
                on_batch(len(batch))
    return scored
