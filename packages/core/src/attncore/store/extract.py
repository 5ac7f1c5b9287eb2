"""Attention extraction: examples in, an attention store out, resumable and data-parallel.

Each process (rank r of W under `accelerate launch` or torchrun; r = 0, W = 1 otherwise) takes the
examples whose input index is r mod W, drops those any writer has stored already, groups the rest by
length (longest first, left padding) and writes one shard per batch as writer `rank{r}`. A killed run
therefore resumes where it stopped, and readers merge the ranks' manifests into one store.

Per batch, one no-grad forward through `AttentionCapture` (SDPA output; fp32 probabilities computed
for the selection only, in chunks of at most `capture_mb`, and reduced inside the forward), by the
library functions of `attncore.scores`:
- AttnPO: `batch_step_scores`, the answer rows F reduced to `S^{l,h}_k` for every requested head.
- MoLSAKI: `batch_stepwise_matrices`, `A_l = S · Ī_l · Cᵀ` for every layer.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from attncore.alignment import decode, encode_text, token_ranges_by_start
from attncore.attention import AttentionCapture
from attncore.config import save_resolved
from attncore.critical import CriticalConfig, alignment_hash, find_critical_units, unit_token_sets
from attncore.errors import UserError
from attncore.models import LoadedModel, ModelConfig, load_model, resolve_device
from attncore.padding import pad_batch
from attncore.scores import TextLayout, batch_step_scores, batch_stepwise_matrices
from attncore.shards import file_sha256
from attncore.steps import (
    SegmentedResponse,
    StepSegmenterConfig,
    segment_response,
    sentence_spans,
    unscored_reason,
)
from attncore.store.config import ExtractConfig, TextFormat
from attncore.store.inputs import (
    RationaleExample,
    ResponseExample,
    input_source,
    inputs_digest,
    load_rationales,
    load_responses,
)
from attncore.store.store import AttentionStore, ExampleMatrices, RolloutScores, store_meta

SUMMARY_NAME = "summary.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
IDENTITY_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


# --- batches ----------------------------------------------------------------------------------------


def plan_batches(lengths: list[int], batch_size: int, max_batch_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (so memory peaks early).

    A batch holds at most `batch_size` sequences and, with `max_batch_tokens`, at most that many padded
    tokens (a single longer sequence still gets a batch of its own).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        fits = (
            current is not None
            and len(current) < batch_size
            and (max_batch_tokens is None or (len(current) + 1) * lengths[current[0]] <= max_batch_tokens)
        )
        if fits:
            current.append(i)
        else:
            batches.append([i])
    return batches


# --- AttnPO -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedResponse:
    """A response that segments, with its (skeleton) record."""

    example: ResponseExample
    record: RolloutScores
    segmented: SegmentedResponse


def prepare_response(
    tokenizer, example: ResponseExample, segmenter: StepSegmenterConfig
) -> PreparedResponse | RolloutScores:
    """Segment a response on its own ids; one that cannot be scored comes back as a skipped record."""
    segmented = segment_response(tokenizer, example.completion_ids, segmenter, truncated=example.truncated)
    reason = unscored_reason(segmented)
    answer = segmented.answer_span() if segmented.think_end is not None else (0, 0)
    record = RolloutScores(
        example.id,
        example.problem_id,
        "skipped" if reason else "ok",
        reason,
        len(example.prompt_ids),
        len(example.completion_ids),
        answer[1] - answer[0],
        example.correct,
        decode(tokenizer, example.completion_ids),
        steps=segmented.steps if reason is None else (),
    )
    return record if reason else PreparedResponse(example, record, segmented)


def score_responses(
    capture: AttentionCapture, batch: list[PreparedResponse], heads: list[tuple[int, int]], pad_id: int
) -> list[Tensor]:
    """Per response, the `(heads, steps)` step scores `S^{l,h}_k` from the answer rows F."""
    device = next(capture.model.parameters()).device
    sequences = [[*p.example.prompt_ids, *p.example.completion_ids] for p in batch]
    ids, mask, _ = pad_batch(sequences, pad_id, device=device)
    scores = batch_step_scores(
        capture,
        ids,
        mask,
        [p.segmented for p in batch],
        [len(p.example.prompt_ids) for p in batch],
        heads,
    )
    return [s.per_head.cpu() for s in scores]


def extract_responses(
    capture: AttentionCapture,
    tokenizer,
    examples: list[ResponseExample],
    cfg: ExtractConfig,
    heads: list[tuple[int, int]],
) -> list[RolloutScores]:
    """One batch of AttnPO records, scored or skipped, in input order."""
    prepared = [prepare_response(tokenizer, e, cfg.segmenter) for e in examples]
    ready = [p for p in prepared if isinstance(p, PreparedResponse)]
    scored = {}
    if ready:
        scores = score_responses(capture, ready, heads, tokenizer.pad_token_id)
        for p, s in zip(ready, scores, strict=True):
            scored[p.example.id] = replace(p.record, heads=tuple(heads), scores=s)
    return [scored[p.example.id] if isinstance(p, PreparedResponse) else p for p in prepared]


# --- MoLSAKI ----------------------------------------------------------------------------------------


def special_prefix(tokenizer) -> list[int]:
    """The special tokens (BOS) the tokenizer puts before a text; the model reads the canonical text
    in its native format, so they stay in the softmax but belong to no step or unit."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


@dataclass(frozen=True)
class PreparedText:
    """A canonical text with its steps and units on the tokens; `ids` include the special prefix."""

    record: ExampleMatrices
    ids: tuple[int, ...]


def prepare_text(
    tokenizer,
    example: RationaleExample,
    text_format: TextFormat,
    critical: CriticalConfig,
    prefix: list[int],
) -> PreparedText | ExampleMatrices:
    """Cut the canonical text into sentence steps and critical units (molsaki-spec §2-3) and map both
    to tokens; a text that cannot be used comes back as a skipped record."""
    text, border = text_format.render(example.question, example.rationale)
    spans = tuple(sentence_spans(text, [(0, border), (border, len(text))]))
    critical = critical.for_example(example.keywords)
    units = tuple(find_critical_units(text, critical))
    skipped = ExampleMatrices(example.id, "skipped", None, text, border, len(prefix), 0)
    if not spans:
        return replace(skipped, reason="no_steps")
    if not units:
        return replace(skipped, reason="no_critical_units")
    try:
        encoded = encode_text(tokenizer, text)
    except UserError:
        return replace(skipped, reason="text_not_reproduced")
    record = ExampleMatrices(
        example.id,
        "ok",
        None,
        text,
        border,
        len(prefix),
        len(encoded.ids),
        spans,
        tuple(token_ranges_by_start(spans, encoded.ends)),
        units,
        tuple(unit_token_sets(units, encoded.ends)),
        alignment_hash(text, spans, units, critical),
    )
    return PreparedText(record, (*prefix, *encoded.ids))


def stepwise_matrices(capture: AttentionCapture, batch: list[PreparedText], pad_id: int) -> list[Tensor]:
    """Per text, the `(L, S, C)` stepwise matrices `A_l[s, c] = Σ_{i∈s} Σ_{j∈c} Ī_l(i→j)`."""
    device = next(capture.model.parameters()).device
    ids, mask, _ = pad_batch([p.ids for p in batch], pad_id, device=device)
    layouts = [TextLayout(p.record.step_tokens, p.record.unit_tokens, p.record.prefix_tokens) for p in batch]
    matrices = batch_stepwise_matrices(capture, ids, mask, layouts)
    return [m.cpu() for m in matrices]


def extract_texts(
    capture: AttentionCapture,
    tokenizer,
    examples: list[RationaleExample],
    cfg: ExtractConfig,
    prefix: list[int],
) -> list[ExampleMatrices]:
    """One batch of MoLSAKI records, with matrices or skipped, in input order."""
    prepared = [prepare_text(tokenizer, e, cfg.text_format, cfg.critical, prefix) for e in examples]
    ready = [p for p in prepared if isinstance(p, PreparedText)]
    done = {}
    if ready:
        for p, m in zip(ready, stepwise_matrices(capture, ready, tokenizer.pad_token_id), strict=True):
            done[p.record.example_id] = replace(p.record, matrices=m)
    return [done[p.record.example_id] if isinstance(p, PreparedText) else p for p in prepared]


# --- the job ----------------------------------------------------------------------------------------


def model_identity(loaded: LoadedModel, cfg: ModelConfig) -> dict[str, Any]:
    """Name, revision and dtype, plus a SHA-256 of the weights, config and tokenizer files of a local
    folder, or the commit of the cached snapshot for a hub id."""
    identity: dict[str, Any] = {"name": cfg.name, "revision": cfg.revision, "dtype": cfg.dtype}
    source = Path(loaded.source)
    if source.is_dir():
        digest = hashlib.sha256()
        for path in sorted(
            p for p in source.iterdir() if p.suffix in WEIGHT_SUFFIXES or p.name in IDENTITY_FILES
        ):
            digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
        identity["weights_sha256"] = digest.hexdigest()
    else:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            snapshot = snapshot_download(loaded.source, revision=cfg.revision, local_files_only=True)
            identity["commit"] = Path(snapshot).name
        except LocalEntryNotFoundError:  # loaded without a cached snapshot: the revision is all we know
            identity["commit"] = None
    return identity


def resolve_heads(cfg: ExtractConfig, model: torch.nn.Module) -> list[tuple[int, int]]:
    """The configured (layer, query head) pairs, or every pair for 'all'; checked against the model."""
    text = model.config.get_text_config()
    layers, heads = text.num_hidden_layers, text.num_attention_heads
    if cfg.heads == "all":
        return [(layer, head) for layer in range(layers) for head in range(heads)]
    bad = [pair for pair in cfg.heads if not (0 <= pair[0] < layers and 0 <= pair[1] < heads)]
    if bad:
        raise UserError(
            f"heads {bad} are outside the model's {layers} layers × {heads} query heads (0-based)"
        )
    if len(set(cfg.heads)) != len(cfg.heads):
        raise UserError(f"heads {cfg.heads} name a (layer, head) pair twice")
    return [tuple(pair) for pair in cfg.heads]


@dataclass
class ExtractSummary:
    """Headline numbers of an extraction: the merged store, and what this process did now."""

    kind: str
    processes: int
    stored: int
    scored: int
    skipped: dict[str, int] = field(default_factory=dict)
    extracted_now: int = 0
    tokens_now: int = 0
    seconds: float = 0.0

    def table(self) -> str:
        skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items())) or "0"
        rate = f"{self.tokens_now / self.seconds:.0f}" if self.seconds > 0 else "-"
        rows = [
            ("kind", self.kind),
            ("processes", str(self.processes)),
            ("examples stored", str(self.stored)),
            ("with scores / matrices", str(self.scored)),
            ("skipped", skipped),
            ("extracted now (this process)", str(self.extracted_now)),
            ("tokens/s now (this process)", rate),
            ("extraction time (this process)", f"{self.seconds:.1f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"| {'metric'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
        return "\n".join(lines + [f"| {k.ljust(width)} | {v} |" for k, v in rows])


def _forward_tokens(record: RolloutScores | ExampleMatrices) -> int:
    if isinstance(record, RolloutScores):
        return record.total_tokens
    return record.prefix_tokens + record.text_tokens


def summarise(store: AttentionStore, processes: int, now: int, tokens: int, seconds: float) -> ExtractSummary:
    statuses = store.summary_table().select(["status", "reason"]).to_pylist()
    skipped = Counter(r["reason"] for r in statuses if r["status"] == "skipped")
    scored = sum(r["status"] == "ok" for r in statuses)
    return ExtractSummary(store.kind, processes, len(statuses), scored, dict(skipped), now, tokens, seconds)


def run_extraction(cfg: ExtractConfig, progress: bool = True) -> ExtractSummary:
    """Extract into `cfg.out` (resuming what any writer stored), then summarise the merged store.

    Under a multi-process launch every process runs this; only the main process shows progress and
    writes the resolved config and the summary.
    """
    from accelerate import PartialState

    start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    state = PartialState(cpu=cfg.model.device == "cpu" or not torch.cuda.is_available())
    device = state.device if cfg.model.device == "auto" else resolve_device(cfg.model.device)
    input_source(cfg.input)  # a missing input is reported before the model loads
    loaded = load_model(cfg.model.model_copy(update={"device": str(device)}))
    tokenizer = loaded.tokenizer
    text_config = loaded.model.config.get_text_config()
    if cfg.kind == "attnpo":
        examples = load_responses(cfg.input, tokenizer, cfg.prompt)
        heads = resolve_heads(cfg, loaded.model)
        extra = {"heads": heads}
        segmentation = cfg.segmenter
    else:
        examples = load_rationales(cfg.input)
        prefix = special_prefix(tokenizer)
        extra = {"layers": text_config.num_hidden_layers, "critical": cfg.critical}
        segmentation = cfg.text_format
    if not examples:
        raise UserError(f"input {cfg.input.path} holds no examples")
    inputs = {"count": len(examples), "sha256": inputs_digest(examples)}
    meta = store_meta(cfg.kind, model_identity(loaded, cfg.model), segmentation, inputs, **extra)

    writer = f"rank{state.process_index}"
    # the main process clears (overwrite) or checks and repairs the folder before any other opens it
    with state.main_process_first():
        main = state.is_main_process
        store = AttentionStore.create(cfg.out, meta, writer, overwrite=cfg.overwrite and main, repair=main)
    if state.is_main_process:
        save_resolved(cfg, cfg.out)
    done = store.done_ids()
    mine = [e for i, e in enumerate(examples) if i % state.num_processes == state.process_index]
    todo = [e for e in mine if e.id not in done]

    if cfg.kind == "attnpo":
        lengths = [e.n_tokens for e in todo]
    else:
        texts = [cfg.text_format.render(e.question, e.rationale)[0] for e in todo]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        lengths = [len(prefix) + len(ids) for ids in encoded]
    batches = plan_batches(lengths, cfg.batch_size, cfg.max_batch_tokens)
    rank = f" [rank {state.process_index}/{state.num_processes}]" if state.num_processes > 1 else ""
    bar = tqdm(
        total=len(todo),
        desc=f"extract {cfg.kind}{rank}",
        unit="ex",
        disable=not (progress and state.is_main_process),
    )
    tokens = 0
    compute_start = time.perf_counter()
    with AttentionCapture(loaded.model, chunk_bytes=cfg.capture_mb * 2**20) as capture:
        for batch in batches:
            items = [todo[i] for i in batch]
            if cfg.kind == "attnpo":
                records = extract_responses(capture, tokenizer, items, cfg, heads)
            else:
                records = extract_texts(capture, tokenizer, items, cfg, prefix)
            store.append(records)
            tokens += sum(_forward_tokens(r) for r in records if r.status == "ok")
            bar.update(len(items))
    bar.close()
    compute_seconds = time.perf_counter() - compute_start
    state.wait_for_everyone()
    merged = AttentionStore.open(cfg.out)
    summary = summarise(merged, state.num_processes, len(todo), tokens, compute_seconds)
    if state.is_main_process:
        summary_path = Path(cfg.out) / SUMMARY_NAME
        record = {**summary.__dict__, "total_seconds": time.perf_counter() - start}
        summary_path.write_text(json.dumps(record, indent=1))
    return summary
