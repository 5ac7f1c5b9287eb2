"""Rollouts with Hugging Face models: static batches through `generate`, or slots refilled as
sequences finish (`refill`, see `attncore.rollout.refill`), on CPU or GPU.

Sampling is reproducible for a fixed seed. Static batches seed torch from the run seed and the ids of
the rollouts a batch holds, so a resumed run regenerates exactly what the interrupted one would have;
refilled slots seed each rollout from the run seed and its id, so a rollout does not depend on which
others ran beside it (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from attncore.data import Problem
from attncore.models import LoadedModel
from attncore.padding import pad_batch
from attncore.prompts import PromptConfig, encode_prompt
from attncore.rollout.refill import decode_refilling
from attncore.rollout.types import Rollout, SamplingConfig, derive_seed, rollout_id


def eos_token_ids(loaded: LoadedModel) -> list[int]:
    """Every id that ends a completion: the generation config's EOS ids and the tokenizer's."""
    ids: set[int] = set()
    configured = getattr(loaded.model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return sorted(ids)


def trim_completion(ids: Sequence[int], eos: set[int]) -> tuple[list[int], str]:
    """Cut a generated row after its first EOS (kept: it is part of the response length)."""
    out: list[int] = []
    for token in ids:
        out.append(int(token))
        if token in eos:
            return out, "stop"
    return out, "length"


class HFEngine:
    """An `Engine` on a loaded transformers model; `batch_size` sequences decode together, in static
    batches or, with `refill`, in slots refilled as sequences finish."""

    name = "hf"

    def __init__(self, loaded: LoadedModel, prompt: PromptConfig, batch_size: int = 8, refill: bool = False):
        self.loaded = loaded
        self.prompt = prompt
        self.batch_size = batch_size
        self.refill = refill
        self.eos = eos_token_ids(loaded)

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    def reconfigured(self, prompt: PromptConfig, batch_size: int, refill: bool) -> HFEngine:
        return HFEngine(self.loaded, prompt, batch_size, refill)

    def generate_ids(
        self, prompt_ids: list[list[int]], sampling: SamplingConfig, seed: int
    ) -> list[tuple[list[int], str]]:
        """Complete one batch of tokenized prompts; returns (completion ids, finish reason) per row."""
        model, tok = self.loaded.model, self.loaded.tokenizer
        device = next(model.parameters()).device
        pad = tok.pad_token_id
        input_ids, mask, _ = pad_batch(prompt_ids, pad, device=device)
        width = input_ids.shape[1]
        greedy = sampling.temperature == 0.0
        options = dict(
            max_new_tokens=sampling.max_tokens,
            do_sample=not greedy,
            eos_token_id=self.eos,
            pad_token_id=pad,
        )
        if not greedy:
            options.update(
                temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or None
            )
        else:  # neutralise sampling defaults a checkpoint's generation config may carry
            options.update(temperature=None, top_p=None, top_k=None)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=mask, **options)
        eos = set(self.eos)
        return [trim_completion(row[width:].tolist(), eos) for row in out.cpu()]

    def generate(
        self,
        problems: Sequence[Problem],
        sampling: SamplingConfig,
        skip: set[str] | None = None,
        on_batch: Callable[[list[Rollout]], None] | None = None,
    ) -> list[Rollout]:
        """n samples per problem; `on_batch` sees the rollouts `batch_size` at a time as they finish."""
        tok = self.loaded.tokenizer
        skip = skip or set()
        todo = [(p, i) for p in problems for i in range(sampling.n) if rollout_id(p.id, i) not in skip]
        encoded = {p.id: encode_prompt(p, tok, self.prompt) for p in {p.id: p for p, _ in todo}.values()}
        if self.refill:
            return self.generate_refilling(todo, encoded, sampling, on_batch)
        results: list[Rollout] = []
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            ids = [rollout_id(p.id, i) for p, i in batch]
            seed = derive_seed(sampling.seed, *ids)
            outputs = self.generate_ids([encoded[p.id][1] for p, _ in batch], sampling, seed)
            rollouts = [
                Rollout.sampled(
                    p,
                    i,
                    encoded[p.id],
                    (completion, tok.decode(completion, skip_special_tokens=True), reason),
                    self.loaded.name,
                    seed,
                    sampling,
                )
                for (p, i), (completion, reason) in zip(batch, outputs, strict=True)
            ]
            if on_batch is not None:
                on_batch(rollouts)
            results.extend(rollouts)
        return results

    def generate_refilling(
        self,
        todo: list[tuple[Problem, int]],
        encoded: dict[str, tuple[str, list[int]]],
        sampling: SamplingConfig,
        on_batch: Callable[[list[Rollout]], None] | None,
    ) -> list[Rollout]:
        """The rollouts of `todo` through refilled slots, each seeded from the run seed and its id."""
        tok = self.loaded.tokenizer
        seeds = [derive_seed(sampling.seed, rollout_id(p.id, i)) for p, i in todo]
        unreported: list[Rollout] = []  # finished, not yet passed to on_batch
        in_order: list[Rollout | None] = [None] * len(todo)

        def on_finish(index: int, completion: list[int], reason: str) -> None:
            problem, sample = todo[index]
            text = tok.decode(completion, skip_special_tokens=True)
            rollout = Rollout.sampled(
                problem,
                sample,
                encoded[problem.id],
                (completion, text, reason),
                self.loaded.name,
                seeds[index],
                sampling,
            )
            in_order[index] = rollout
            unreported.append(rollout)
            if on_batch is not None and len(unreported) == self.batch_size:
                on_batch(unreported[:])
                unreported.clear()

        decode_refilling(
            self.loaded.model,
            [encoded[p.id][1] for p, _ in todo],
            seeds,
            sampling,
            set(self.eos),
            tok.pad_token_id,
            self.batch_size,
            on_finish,
        )
        if on_batch is not None and unreported:
            on_batch(unreported)
        return [r for r in in_order if r is not None]
