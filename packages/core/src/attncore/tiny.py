"""Tiny random decoder models with their own small tokenizer, for tests and quick experiments.

Each model is saved as an ordinary Hugging Face folder and loaded back through `models.load_model`,
so tests exercise the same code path as real checkpoints. The tokenizer is a byte-level BPE trained
in-process on a fixed corpus (a fraction of a second), with a ChatML-style template and `<think>` tags.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from attncore.padding import pad_batch
from attncore.think import THINK_TAGS

Arch = Literal["llama", "qwen2", "qwen3", "gemma3"]

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = """\
Question: A shop sells 12 apples and 7 pears. How many fruits does it sell in total?
Let me think step by step. First, 12 + 7 = 19. Wait, let me double-check: 12 plus 7 is 19.
So the answer is 19. Therefore the final answer is \\boxed{19}. #### 19
Hmm, however, but, alternatively, another approach, let's verify. Now we know the total.
Okay, so we have 3 * 4 = 12 and 48 / 6 = 8 and 50 - 20 = 30. The train travels 60 miles per hour.
**Final Answer** The numbers 0 1 2 3 4 5 6 7 8 9 10 100 1,000 2.5 are values. Is that right? Yes.
Given that she has twice as many sheep, the rest take the bus. Since he saves $5 every week.
"""


def train_tokenizer(vocab_size: int = 384, corpus: Iterable[str] | None = None, split_digits: bool = False):
    """A byte-level BPE tokenizer (any text round-trips) with chat and think tokens.

    `corpus` defaults to a small built-in text; `split_digits` makes every digit its own token, which
    lets small models trained from scratch learn arithmetic digit by digit.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS.splitlines() * 4 if corpus is None else corpus, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|bos|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tok.add_tokens(list(THINK_TAGS))  # added but not special: decoding keeps them, as in R1 tokenizers
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_config(
    arch: Arch,
    vocab_size: int,
    *,
    layers: int = 4,
    heads: int = 4,
    kv_heads: int = 2,
    head_dim: int = 16,
    hidden: int = 64,
    intermediate: int | None = None,
    bos_id: int = 1,
    eos_id: int = 3,
    pad_id: int = 0,
):
    """A grouped-query-attention config of the given architecture (Gemma3 alternates sliding windows)."""
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config, Qwen3Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=4096,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=True,
    )
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "qwen3":
        return Qwen3Config(**common)
    if arch == "gemma3":
        pattern = ["sliding_attention", "full_attention"] * ((layers + 1) // 2)
        return Gemma3TextConfig(**common, sliding_window=8, layer_types=pattern[:layers])
    raise ValueError(f"unknown tiny architecture {arch!r}")


def make_tiny_model(out_dir: str | Path, arch: Arch = "llama", seed: int = 0, **sizes: int) -> Path:
    """Build and save a random tiny model with its tokenizer; returns the folder."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = Path(out_dir)
    tok = train_tokenizer()
    config = tiny_config(
        arch,
        len(tok),
        bos_id=tok.bos_token_id,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        **sizes,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def random_padded_batch(
    lengths: Sequence[int], vocab: int, generator: torch.Generator, side: Literal["left", "right"] = "left"
) -> tuple[Tensor, Tensor]:
    """(B, W) random token ids (from 5 up, clear of the special tokens) for sequences of `lengths` padded
    on `side` to the longest, and their attention mask: inputs on which to compare attention paths.
    Padding slots hold random ids too, which the mask must hide; the ids are the generator's first draw."""
    ids = torch.randint(5, vocab, (len(lengths), max(lengths)), generator=generator)
    return ids, pad_batch([[1] * n for n in lengths], 0, side).attention_mask
