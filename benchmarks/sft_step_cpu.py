"""Testbed SFT step time on CPU: the dense loss with logits for the supervised positions only against
logits for every position (prompts included), on batches of the default testbed recipe.

Both modes run forward + backward of the embedded SmolLM2-135M (think tokens added) in bf16 autocast on
the same right-padded batches, grouped by length as the trainer groups them; the loss they compute must
agree. The baseline is the full-logits loss the trainer used before.

    uv run python benchmarks/sft_step_cpu.py [--batches 4] [--batch-size 8] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from attncore.synthetic.dataset import generate_examples
from attncore.synthetic.testbed_model import (
    TestbedModelConfig,
    base_model_and_tokenizer,
    dense_completion_loss,
    tokenize_examples,
)


def full_logits_loss(model, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
    """The baseline: logits at every position, then the same masked cross-entropy."""
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()
    labels = labels[:, 1:]
    summed = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return summed / (labels != -100).sum().clamp(min=1)


def batches(rows: list[dict], size: int, pad: int) -> list[tuple[dict, torch.Tensor]]:
    """Batches of rows sorted by length, padded by TRL's own collator as in training; labels -100 on
    prompt and padding."""
    collate = DataCollatorForLanguageModeling(pad_token_id=pad)
    rows = sorted(rows, key=lambda r: len(r["input_ids"]))
    out = []
    for start in range(0, len(rows) - size + 1, size):
        batch = collate(
            [
                {
                    "input_ids": r["input_ids"],
                    "labels": [
                        t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"], strict=True)
                    ],
                }
                for r in rows[start : start + size]
            ]
        )
        labels = batch.pop("labels")
        out.append((batch, labels))
    return out


def step(model, inputs: dict, labels: torch.Tensor, trimmed: bool) -> tuple[float, float]:
    """Seconds for forward + backward, and the loss."""
    model.zero_grad(set_to_none=True)
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = (
            dense_completion_loss(model, inputs, labels)[0]
            if trimmed
            else full_logits_loss(model, inputs, labels)
        )
    loss.backward()
    return time.perf_counter() - started, float(loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = TestbedModelConfig()
    # Every 8th batch's worth of the recipe's examples, so lengths span the recipe's range.
    examples = generate_examples(cfg.data.model_copy(update={"count": 8 * args.batches * args.batch_size}))
    model, tokenizer = base_model_and_tokenizer(cfg, examples)
    model.train()
    rows = tokenize_examples(examples, tokenizer, cfg.training.max_length)
    work = batches(rows, args.batch_size, tokenizer.pad_token_id)[::8][: args.batches]
    step(model, *work[0], trimmed=True)  # warm-up

    times = {False: [], True: []}
    tokens = supervised = 0
    for inputs, labels in work:
        tokens += int(inputs["attention_mask"].sum())
        supervised += int((labels != -100).sum())
        losses = {}
        for _ in range(args.repeats):
            for trimmed in (False, True):
                seconds, losses[trimmed] = step(model, inputs, labels, trimmed)
                times[trimmed].append(seconds)
        assert abs(losses[True] - losses[False]) < 1e-2 * max(1.0, losses[False]), losses

    per_step = {mode: statistics.median(ts) for mode, ts in times.items()}
    print(
        f"machine: {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}"
    )
    print(
        f"{len(work)} batches of {args.batch_size}, {tokens} tokens "
        f"({supervised} supervised), {args.repeats} repeats; median seconds per step\n"
    )
    print("| loss | s / step | tokens/s | ratio vs full logits |")
    print("|---|---:|---:|---:|")
    for mode, name in ((False, "full logits (baseline)"), (True, "supervised positions only")):
        rate = tokens / len(work) / per_step[mode]
        print(f"| {name} | {per_step[mode]:.2f} | {rate:.0f} | {per_step[False] / per_step[mode]:.2f}x |")


if __name__ == "__main__":
    main()
