"""Slot-refilling decoding for Hugging Face models: `slots` sequences decode together and a finished one
is replaced by the next prompt at once.

HF `generate` keeps a static batch running until its longest row ends, so short rows idle (41% of the
token slots of the testbed evaluation). Here a finished row's slot takes a new prompt: the prompt is
prefilled on its own and its keys and values are copied into the slot. Keys and values live in
preallocated buffers written in place (the dynamic cache concatenates, copying the whole cache every
step), and the attention window spans only the columns of the oldest running row.

Each sequence samples from its own generator seeded per rollout, so what a sequence generates does not
depend on which others share its steps (up to the float rounding of batched matmuls).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from attncore.padding import pad_batch
from attncore.rollout.types import SamplingConfig

PREFILL_ROWS = 8  # prompts prefilled per forward: bounds the prefill's activations
CANDIDATES = (
    256  # top-p looks among this many most likely tokens, the whole vocabulary only if they hold < top_p
)
DECODE_ATTENTION = "attncore_grouped_decode"


def nucleus(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens that temperature, then top-k, then top-p (the order of HF's warpers) leave to sample
    from, most likely first: (token ids, probabilities renormalised over the kept ones, 0 elsewhere),
    each [rows, candidates]. A token survives top-p when the tokens more likely than it hold < top_p."""
    logits = logits.float() / temperature
    vocab = logits.shape[-1]
    if top_p >= 1.0 and not 0 < top_k < vocab:  # plain sampling: no order needed
        return torch.arange(vocab, device=logits.device).expand_as(logits), logits.softmax(dim=-1)
    kept = top_k if 0 < top_k < vocab else vocab
    # probabilities are over the top-k set, or over the whole vocabulary when top-k is off
    normaliser = (logits if kept == vocab else torch.topk(logits, kept, dim=-1).values).logsumexp(
        -1, keepdim=True
    )

    def likeliest(width: int) -> tuple[torch.Tensor, torch.Tensor]:
        values, ids = torch.topk(logits, width, dim=-1)
        return ids, (values - normaliser).exp()

    width = kept if top_p >= 1.0 else min(kept, CANDIDATES)
    ids, probs = likeliest(width)
    if width < kept and not bool((probs.sum(-1) >= top_p).all()):  # the nucleus may reach past them
        ids, probs = likeliest(kept)
    if top_p < 1.0:
        probs = probs * ((probs.cumsum(dim=-1) - probs) < top_p)
    return ids, probs / probs.sum(dim=-1, keepdim=True)


def sample_tokens(
    logits: torch.Tensor, sampling: SamplingConfig, generators: Sequence[torch.Generator]
) -> list[int]:
    """One token per row of `logits` [rows, vocab]: argmax at temperature 0, else a draw from the
    row's nucleus with that row's generator."""
    if sampling.temperature == 0.0:
        return logits.argmax(dim=-1).tolist()
    ids, probs = nucleus(logits, sampling.temperature, sampling.top_k, sampling.top_p)
    return [
        int(row_ids[torch.multinomial(row, 1, generator=g)])
        for row_ids, row, g in zip(ids, probs, generators, strict=True)
    ]


def grouped_decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """SDPA for one decoded token that never copies keys per query head: the query heads sharing a
    key-value head become that head's query rows (HF's SDPA path repeats the keys of every step on
    CPU when a mask is given). Prefills and models without grouped heads go to HF's SDPA."""
    groups = getattr(module, "num_key_value_groups", 1)
    if query.shape[2] != 1 or groups == 1:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    rows, heads, _, dim = query.shape
    grouped = query.reshape(rows, heads // groups, groups, dim)
    out = torch.nn.functional.scaled_dot_product_attention(
        grouped, key, value, attn_mask=attention_mask, scale=scaling
    )
    return out.reshape(rows, heads, 1, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(DECODE_ATTENTION, grouped_decode_attention)
AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)


@contextmanager
def decode_attention(model: torch.nn.Module) -> Iterator[None]:
    """Run `model` with the grouped decode attention, restoring its own implementation afterwards."""
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = DECODE_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = previous


class WindowLayer(DynamicLayer):
    """One layer's keys and values in [slots, kv_heads, capacity, head_dim] buffers; the model sees the
    columns `start:end` of its cache, and `update` writes the step's columns in place."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, cache: SlotCache):
        super().__init__()
        self.key_buffer, self.value_buffer, self.cache = keys, values, cache
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self.show(cache.start, cache.end)

    def show(self, start: int, end: int) -> None:
        self.keys = self.key_buffer[:, :, start:end]
        self.values = self.value_buffer[:, :, start:end]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.cache.end + key_states.shape[-2]
        self.key_buffer[:, :, self.cache.end : end] = key_states
        self.value_buffer[:, :, self.cache.end : end] = value_states
        self.show(self.cache.start, end)
        return self.keys, self.values


class SlotCache(Cache):
    """The KV cache of the running slots: every slot's columns share one write position `end`; a row
    occupies the columns from its own start to `end`, and its attention mask hides the rest."""

    def __init__(self, like: DynamicCache, slots: int, capacity: int, end: int):
        self.start = self.end = end
        shapes = [(layer.keys.shape[1], layer.keys.shape[3]) for layer in like.layers]
        dtype, device = like.layers[0].keys.dtype, like.layers[0].keys.device
        layers = [
            WindowLayer(
                torch.zeros(slots, heads, capacity, dim, dtype=dtype, device=device),
                torch.zeros(slots, heads, capacity, dim, dtype=dtype, device=device),
                self,
            )
            for heads, dim in shapes
        ]
        super().__init__(layers=layers)
        self.capacity = capacity

    def show(self, start: int) -> None:
        self.start = start
        for layer in self.layers:
            layer.show(start, self.end)

    def advance(self, columns: int) -> None:
        self.end += columns
        self.show(self.start)

    def place(self, slot: int, prompt: DynamicCache, row: int, length: int) -> None:
        """Copy the last `length` columns of `prompt`'s row `row` into `slot`, ending at `end`."""
        for layer, source in zip(self.layers, prompt.layers, strict=True):
            layer.key_buffer[slot, :, self.end - length : self.end] = source.keys[row, :, -length:]
            layer.value_buffer[slot, :, self.end - length : self.end] = source.values[row, :, -length:]

    def move(self, keep: torch.Tensor, offset: int, capacity: int) -> None:
        """Keep the slots `keep`, with the live columns moved to begin at `offset` in buffers of
        `capacity` columns (a new allocation when the slots or the capacity change)."""
        width = self.end - self.start
        for layer in self.layers:
            for name in ("key_buffer", "value_buffer"):
                old = getattr(layer, name)
                new = old.new_zeros(len(keep), old.shape[1], capacity, old.shape[3])
                new[:, :, offset : offset + width] = old[keep, :, self.start : self.end]
                setattr(layer, name, new)
        self.capacity, self.end = capacity, offset + width
        self.show(offset)


class SlotDecoder:
    """Decodes prompts through `slots` refilled slots; one instance per `decode` call's state."""

    def __init__(
        self,
        model: torch.nn.Module,
        sampling: SamplingConfig,
        eos: set[int],
        pad_id: int,
        slots: int,
        capacity: int | None,
    ):
        self.model, self.sampling, self.eos, self.pad_id = model, sampling, eos, pad_id
        self.slots, self.capacity = slots, capacity
        self.device = next(model.parameters()).device
        self.cache: SlotCache | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)  # [slots, capacity], 1 on each row's columns
        self.row: list[int | None] = [None] * slots  # the prompt index each slot decodes, None if idle
        self.starts = [0] * slots  # each slot's first live column
        self.positions = [0] * slots  # position id of the token each slot feeds next
        self.feed = [pad_id] * slots  # the token each slot feeds next
        self.generated: dict[int, list[int]] = {}
        self.generators: dict[int, torch.Generator] = {}
        self.results: dict[int, tuple[list[int], str]] = {}
        self.on_finish: Callable[[int, list[int], str], None] | None = None
        self.longest_prompt = 0

    def decode(
        self,
        prompts: Sequence[list[int]],
        seeds: Sequence[int],
        on_finish: Callable[[int, list[int], str], None] | None = None,
    ) -> list[tuple[list[int], str]]:
        """(completion ids with their EOS, finish reason) per prompt, in prompt order; `on_finish` sees
        each completion as it ends."""
        self.longest_prompt = max(len(p) for p in prompts)
        self.on_finish = on_finish
        queue = deque(range(len(prompts)))
        while queue or self.running():
            idle = [slot for slot in range(len(self.row)) if self.row[slot] is None]
            if queue and idle and (not self.running() or len(idle) >= min(self.refill_at(), len(queue))):
                self.admit(queue, prompts, seeds)
                continue
            if not queue and len(idle) >= max(1, len(self.row) // 4):
                self.drop_idle()
            self.step()
        return [self.results[i] for i in range(len(prompts))]

    def running(self) -> bool:
        return any(r is not None for r in self.row)

    def refill_at(self) -> int:
        """Idle slots that trigger a refill: a few at a time, so prompts share a prefill forward."""
        return min(PREFILL_ROWS, max(1, self.slots // 8))

    def finish(self, index: int, reason: str) -> None:
        self.results[index] = (self.generated.pop(index), reason)
        self.generators.pop(index)
        if self.on_finish is not None:
            self.on_finish(index, *self.results[index])

    def admit(self, queue: deque[int], prompts: Sequence[list[int]], seeds: Sequence[int]) -> None:
        """Prefill the next prompts (at most PREFILL_ROWS) into idle slots."""
        idle = [slot for slot in range(len(self.row)) if self.row[slot] is None]
        take = [queue.popleft() for _ in range(min(len(idle), len(queue), PREFILL_ROWS))]
        ids, mask, positions = pad_batch([prompts[i] for i in take], self.pad_id, device=self.device)
        with torch.no_grad():
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=DynamicCache(),
                use_cache=True,
                logits_to_keep=1,
            )
        for i in take:
            self.generators[i] = torch.Generator(self.device).manual_seed(seeds[i])
            self.generated[i] = []
        first = sample_tokens(out.logits[:, -1], self.sampling, [self.generators[i] for i in take])
        if self.cache is None:
            capacity = self.capacity or self.longest_prompt + min(self.sampling.max_tokens, 1024)
            capacity = max(capacity, self.longest_prompt + 1)
            self.cache = SlotCache(out.past_key_values, self.slots, capacity, end=self.longest_prompt)
            self.mask = torch.zeros(self.slots, capacity, dtype=torch.long)
        for r, (i, token) in enumerate(zip(take, first, strict=True)):
            if not self.accept(i, token):
                continue
            slot, length = idle.pop(0), len(prompts[i])
            self.cache.place(slot, out.past_key_values, r, length)
            self.row[slot], self.feed[slot], self.positions[slot] = i, token, length
            self.starts[slot] = self.cache.end - length
            self.mask[slot] = 0
            self.mask[slot, self.cache.end - length : self.cache.end] = 1
        self.show_live()

    def accept(self, index: int, token: int) -> bool:
        """Record a sampled token; False (and the completion finished) when it ends the sequence."""
        self.generated[index].append(token)
        if token in self.eos:
            self.finish(index, "stop")
        elif len(self.generated[index]) >= self.sampling.max_tokens:
            self.finish(index, "length")
        else:
            return True
        return False

    def show_live(self) -> None:
        """Start the attention window at the oldest running row's first column."""
        live = [self.starts[s] for s in range(len(self.row)) if self.row[s] is not None]
        self.cache.show(min(live) if live else self.cache.end)

    def step(self) -> None:
        """Feed every slot its next token and sample the one after it."""
        cache = self.cache
        if cache.end == cache.capacity:
            self.make_room()
        self.mask[:, cache.end] = 1  # idle slots attend to their own column, never to nothing
        with torch.no_grad():
            out = self.model(
                input_ids=torch.tensor(self.feed, device=self.device)[:, None],
                attention_mask=self.mask[:, cache.start : cache.end + 1].to(self.device),
                position_ids=torch.tensor(self.positions, device=self.device)[:, None],
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        cache.advance(1)
        live = [s for s in range(len(self.row)) if self.row[s] is not None]
        tokens = sample_tokens(
            out.logits[live, -1], self.sampling, [self.generators[self.row[s]] for s in live]
        )
        for slot, token in zip(live, tokens, strict=True):
            if self.accept(self.row[slot], token):
                self.feed[slot] = token
                self.positions[slot] += 1
            else:
                self.row[slot] = None
        self.show_live()

    def make_room(self) -> None:
        """The write position reached the buffers' end: move the live window back to column
        `longest_prompt` (so any prompt still fits before the write position), doubling the buffers
        when that would leave less than a quarter of them free."""
        cache = self.cache
        offset, width = self.longest_prompt, cache.end - cache.start
        capacity = cache.capacity
        while capacity - (offset + width) < capacity // 4:
            capacity *= 2
        shift = offset - cache.start
        cache.move(torch.arange(len(self.row)), offset, capacity)
        mask = self.mask.new_zeros(len(self.row), capacity)
        mask[:, offset : offset + width] = self.mask[:, offset - shift : offset - shift + width]
        self.mask = mask
        self.starts = [s + shift for s in self.starts]

    def drop_idle(self) -> None:
        """No prompt is left to refill with: remove the idle slots from the batch."""
        keep = [s for s in range(len(self.row)) if self.row[s] is not None]
        cache = self.cache
        cache.move(torch.tensor(keep), cache.start, cache.capacity)
        self.mask = self.mask[keep]
        for name in ("row", "starts", "positions", "feed"):
            values = getattr(self, name)
            setattr(self, name, [values[s] for s in keep])


def decode_refilling(
    model: torch.nn.Module,
    prompts: Sequence[list[int]],
    seeds: Sequence[int],
    sampling: SamplingConfig,
    eos: set[int],
    pad_id: int,
    slots: int,
    on_finish: Callable[[int, list[int], str], None] | None = None,
    capacity: int | None = None,
) -> list[tuple[list[int], str]]:
    """Complete `prompts` (token ids) through `slots` refilled slots, the i-th with its own generator
    seeded `seeds[i]`; returns (completion ids, "stop" or "length") in prompt order. `capacity` is the
    buffers' first width in columns (default: longest prompt + max_tokens, at most 1,024 new); they
    grow when the running rows need more."""
    if not prompts:
        return []
    with decode_attention(model):
        return SlotDecoder(model, sampling, eos, pad_id, slots, capacity).decode(prompts, seeds, on_finish)
