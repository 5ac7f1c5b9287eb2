"""Cost of the differentiable stepwise capture in a MoLSAKI student training step (SmolLM2-135M-Instruct,
fp32, CPU).

Compares, per sequence length T (batch 1, forward + backward, no optimizer step, `--threads` threads):
  (a) a plain SDPA training step: next-token cross-entropy on the whole text (the baseline),
  (b) the same step through `attncore.attention_grad.StepwiseGradCapture` on all 30 layers, the loss
      plus a MoLSAKI attention term built from the captured matrices and value projections,
  (c) eager attention with `output_attentions=True`, the same loss with the matrices computed from the
      returned (B, H, T, T) maps (`aggregate.stepwise_attention`) and the values from `v_proj` hooks.

The MoLSAKI shape: the text is GSM8K training items written as "Question: {q}\\nRationale: {r}" and
concatenated until T tokens; steps are its sentences (`steps.sentence_spans`), critical units its
number occurrences (`critical.find_critical_units`), both cut to the first T tokens. The attention term
is molsaki-spec §6-7 with a random fixed teacher matrix: `cotattn`'s MoL router mixes the layers
(`mix_layers`), then the per-step KL (`stepwise_kl`).

Method, per T:
- Memory: each mode runs in a fresh subprocess. The child loads the model, runs a 64-token warm-up
  step, then `_memory.step_memory` resets the kernel's peak-RSS counter (Linux only), runs one step and
  reports the peak RSS (VmHWM) and the RSS just before the step. "step MiB" is the difference.
- Time: one subprocess loads a model per mode, warms each up, then runs the modes round-robin and keeps
  each mode's best of `--repeats` rounds, in wall time and in process CPU time (less inflated when other
  processes share the cores). The load average is printed.

    python benchmarks/stepwise_capture_grad.py [--lengths 256 512 1024] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial

from _children import add_child_options, best_times, measure_modes, ratio, run_as_child
from _memory import step_memory

WARMUP_TOKENS = 64
MODES = ("sdpa", "capture", "eager")
CALCULATOR = re.compile(r"<<[^>]*>>")


def molsaki_text(tokenizer, length: int):
    """Token ids (1, T) of concatenated GSM8K items and their step (1, S, T) / unit (1, C, T) memberships."""
    import torch

    from attncore.aggregate import membership
    from attncore.alignment import encode_text, token_ranges_by_start
    from attncore.critical import find_critical_units, unit_token_sets
    from attncore.data import read_jsonl
    from attncore.paths import data_dir
    from attncore.steps import sentence_spans

    folder = data_dir()
    if folder is None:
        sys.exit("error: the reference data folder is missing (set ATTNCORE_DATA_DIR)")
    rows = read_jsonl(folder / "train" / "gsm8k" / "train.jsonl")
    text, parts = "", []
    for row in rows:
        question = f"Question: {row['question']}\nRationale:"
        parts += [(len(text), len(text) + len(question))]
        text += question
        worked = CALCULATOR.sub("", row["answer"].split("####")[0]).strip()  # GSM8K's <<48/2=24>> notes
        rationale = f" {worked}\n"
        parts += [(len(text), len(text) + len(rationale))]
        text += rationale
        if len(text) > 6 * length:  # GSM8K runs at about 4 characters per SmolLM2 token
            break
    encoded = encode_text(tokenizer, text)
    if len(encoded.ids) < length:
        raise RuntimeError(f"the text has {len(encoded.ids)} tokens, fewer than {length}")
    steps = [
        range(a, min(b, length)) for a, b in token_ranges_by_start(sentence_spans(text, parts), encoded.ends)
    ]
    units = [t for t in unit_token_sets(find_critical_units(text), encoded.ends) if t and t[-1] < length]
    ids = torch.tensor([encoded.ids[:length]])
    return ids, membership([s for s in steps if len(s)], length)[None], membership(units, length)[None]


def build_step(mode: str, length: int, stack: ExitStack) -> tuple[Callable[[int], None], object]:
    """Load a fresh model for `mode`; return a training step over the first n tokens of the text."""
    import torch

    from attncore.aggregate import stepwise_attention
    from attncore.attention_grad import StepwiseGradCapture
    from attncore.models import ModelConfig, load_model
    from cotattn import MoLRouter, mix_layers, stepwise_kl

    loaded = load_model(ModelConfig(attn_implementation="eager" if mode == "eager" else "sdpa"))
    model = loaded.model.train()
    ids, steps, units = molsaki_text(loaded.tokenizer, length)
    layers = model.config.num_hidden_layers
    d_v = model.config.num_key_value_heads * model.config.head_dim
    router = MoLRouter(layers, d_v)
    teacher = torch.randn(1, steps.shape[1], units.shape[1], generator=torch.Generator().manual_seed(0))
    capture = stack.enter_context(StepwiseGradCapture(model)) if mode == "capture" else None
    values: list[torch.Tensor] = []
    real_steps, real_units = (torch.ones(1, m.shape[1], dtype=torch.bool) for m in (steps, units))

    def attention_loss(matrices: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
        student = mix_layers(router(values, torch.ones(1, n)), matrices)
        return stepwise_kl(teacher, student, real_steps, real_units).mean()

    if mode == "eager":
        for layer in model.model.layers:
            layer.self_attn.v_proj.register_forward_hook(lambda m, args, out: values.append(out))

    def step(n: int) -> None:
        model.zero_grad(set_to_none=True)
        values.clear()
        x, s, c = ids[:, :n], steps[..., :n], units[..., :n]
        if capture is not None:
            capture.arm(s, c)
        out = model(x, labels=x, use_cache=False, output_attentions=mode == "eager")
        loss = out.loss
        if capture is not None:
            got = capture.collect()
            loss = loss + attention_loss(got.matrices, got.values, n)
        elif mode == "eager":
            matrices = torch.stack([stepwise_attention(a, s, c) for a in out.attentions], 1)
            loss = loss + attention_loss(matrices, torch.stack(values, 1), n)
        loss.backward()

    return step, (steps.shape[1], units.shape[1], int(units.ne(0).any(1).sum()))


def child_memory(mode: str, length: int) -> dict:
    """Peak RSS of one training step in this (fresh) process."""
    with ExitStack() as stack:
        step, shape = build_step(mode, length, stack)
        step(WARMUP_TOKENS)
        return {**step_memory(lambda: step(length)), "shape": shape}


def child_timing(modes: list[str], length: int, repeats: int) -> dict:
    """Best-of-`repeats` wall and CPU time of a training step per mode, the modes run round-robin."""
    with ExitStack() as stack:
        steps = {mode: build_step(mode, length, stack)[0] for mode in modes}
        for step in steps.values():
            step(WARMUP_TOKENS)
        return best_times({mode: partial(step, length) for mode, step in steps.items()}, repeats)


def table(results: dict[int, dict[str, dict]]) -> str:
    """Markdown table: best times, peak RSS, the step's own RSS increase, and the ratios."""
    header = (
        "| T | steps × units (unit tokens) | (a) SDPA s | (b) capture s | (c) eager s | (b)/(a) time | (c)/(b) time "
        "| (b)/(a) CPU time | (c)/(b) CPU time | (a) peak MiB | (b) peak MiB | (c) peak MiB "
        "| (b)/(a) peak | (c)/(b) peak | step MiB (a / b / c) | (b)/(a) step MiB |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for length, m in results.items():
        shape = "{} × {} ({})".format(*m["sdpa"]["shape"])
        times = " | ".join(f"{m[mode]['seconds']:.2f}" for mode in MODES)
        peaks = " | ".join(f"{m[mode]['peak_mib']:.0f}" for mode in MODES)
        own = " / ".join(f"{m[mode]['step_mib']:.0f}" for mode in MODES)
        lines.append(
            f"| {length} | {shape} | {times} | {ratio(m, 'capture', 'sdpa', 'seconds')} "
            f"| {ratio(m, 'eager', 'capture', 'seconds')} | {ratio(m, 'capture', 'sdpa', 'cpu_seconds')} "
            f"| {ratio(m, 'eager', 'capture', 'cpu_seconds')} | {peaks} "
            f"| {ratio(m, 'capture', 'sdpa', 'peak_mib')} | {ratio(m, 'eager', 'capture', 'peak_mib')} "
            f"| {own} | {ratio(m, 'capture', 'sdpa', 'step_mib')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed rounds per T (each mode's best is kept)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads per measurement (2 on a quiet 2-core machine; "
        "1 when other jobs share the cores, where idle-spinning threads inflate CPU time)",
    )
    add_child_options(parser, MODES)
    args = parser.parse_args()
    if run_as_child(args, args.threads, child_memory, child_timing):
        return

    load_before = os.getloadavg()[0]
    results = {
        length: measure_modes(
            __file__, length, MODES, args.repeats, args.threads, ["--threads", str(args.threads)]
        )
        for length in args.lengths
    }
    print(table(results))
    print(
        f"\n{args.threads} thread(s); 1-minute load average: {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end."
    )


if __name__ == "__main__":
    main()
