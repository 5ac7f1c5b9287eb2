"""Cost of selective attention capture on the embedded model (SmolLM2-135M-Instruct, fp32, CPU).

Compares, per sequence length T (batch 1, random token ids, full logits, no KV cache, torch.no_grad,
2 threads):
  (a) a plain SDPA forward,
  (b) the same forward through `attncore.attention.AttentionCapture`, capturing 3 (layer, head) pairs
      for the last 64 query rows (the AttnPO use),
  (c) eager attention with `output_attentions=True`, where its 30 × 9 × T² fp32 maps fit
      `--eager-budget-mib` (8 GiB by default; T = 4096 would need 18 GiB).

Method, per T:
- Memory: each mode runs in a fresh subprocess, so its peak RSS is its own. The child loads the model,
  runs a 64-token warm-up forward, resets the kernel's peak-RSS counter (writing 5 to
  /proc/self/clear_refs; Linux only), runs one forward and reports the peak RSS (VmHWM) and the RSS just
  before the forward (weights plus runtime). "forward MiB" is the difference.
- Time: one subprocess loads a model per mode, warms each up, then runs the modes round-robin and keeps
  each mode's best of `--repeats` rounds, in wall time and in process CPU time. Interleaving keeps the
  comparison fair when other processes share the cores; CPU time is less inflated by them than wall
  time, and the load average is printed so disturbed runs can be recognised and rerun.

    python benchmarks/attention_capture.py [--lengths 512 1024 2048 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial

from _children import add_child_options, best_times, measure_modes, ratio, run_as_child
from _memory import step_memory

HEADS = [(16, 2), (20, 8), (23, 2)]
QUERY_ROWS = 64
WARMUP_TOKENS = 64
THREADS = 2
MODES = ("sdpa", "capture", "eager")


def build_forward(mode: str, stack: ExitStack) -> tuple[Callable, int]:
    """Load a fresh model for `mode`; return a no-grad forward over (1, T) token ids and the vocab size."""
    import torch

    from attncore.attention import AttentionCapture, HeadRows
    from attncore.models import ModelConfig, load_model

    model = load_model(ModelConfig(attn_implementation="eager" if mode == "eager" else "sdpa")).model
    if mode == "capture":
        capture = stack.enter_context(AttentionCapture(model))

        def forward(ids: torch.Tensor) -> object:
            last_rows = range(max(0, ids.shape[1] - QUERY_ROWS), ids.shape[1])
            return capture.run(HeadRows(HEADS, [last_rows]), ids)

        return forward, model.config.vocab_size

    def forward(ids: torch.Tensor) -> object:
        with torch.no_grad():
            return model(input_ids=ids, use_cache=False, output_attentions=mode == "eager")

    return forward, model.config.vocab_size


def token_ids(length: int, vocab_size: int):
    import torch

    return torch.randint(0, vocab_size, (1, length), generator=torch.Generator().manual_seed(0))


def child_memory(mode: str, length: int) -> dict:
    """Peak RSS of one forward in this (fresh) process."""
    with ExitStack() as stack:
        forward, vocab_size = build_forward(mode, stack)
        ids = token_ids(length, vocab_size)
        forward(ids[:, :WARMUP_TOKENS])
        return step_memory(lambda: forward(ids))


def child_timing(modes: list[str], length: int, repeats: int) -> dict:
    """Best-of-`repeats` wall and CPU time of a forward per mode, the modes run round-robin."""
    with ExitStack() as stack:
        built = {mode: build_forward(mode, stack) for mode in modes}
        ids = token_ids(length, built[modes[0]][1])
        for forward, _ in built.values():
            forward(ids[:, :WARMUP_TOKENS])
        return best_times({mode: partial(forward, ids) for mode, (forward, _) in built.items()}, repeats)


def eager_maps_mib(length: int) -> float:
    """Memory of the attention maps that eager `output_attentions=True` returns (30 layers × 9 heads)."""
    return 30 * 9 * length**2 * 4 / 2**20


def cell(results: dict, mode: str, key: str, fmt: str) -> str:
    return format(results[mode][key], fmt) if mode in results else "skipped"


def table(results: dict[int, dict[str, dict]]) -> str:
    """Markdown table: best wall times, peak RSS, the forward's own RSS increase, and the ratios
    (CPU-time ratios too: they are less disturbed than wall time when other processes share the cores)."""
    header = (
        "| T | (a) SDPA s | (b) capture s | (c) eager s | (b)/(a) time | (c)/(b) time "
        "| (b)/(a) CPU time | (c)/(b) CPU time "
        "| (a) peak MiB | (b) peak MiB | (c) peak MiB | (b)/(a) peak | (c)/(b) peak "
        "| (a) forward MiB | (b) forward MiB | (c) forward MiB |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for length, by_mode in results.items():
        times = " | ".join(cell(by_mode, mode, "seconds", ".2f") for mode in MODES)
        peaks = " | ".join(cell(by_mode, mode, "peak_mib", ".0f") for mode in MODES)
        forwards = " | ".join(cell(by_mode, mode, "step_mib", ".0f") for mode in MODES)
        lines.append(
            f"| {length} | {times} | {ratio(by_mode, 'capture', 'sdpa', 'seconds')} "
            f"| {ratio(by_mode, 'eager', 'capture', 'seconds')} "
            f"| {ratio(by_mode, 'capture', 'sdpa', 'cpu_seconds')} | {ratio(by_mode, 'eager', 'capture', 'cpu_seconds')} "
            f"| {peaks} "
            f"| {ratio(by_mode, 'capture', 'sdpa', 'peak_mib')} | {ratio(by_mode, 'eager', 'capture', 'peak_mib')} "
            f"| {forwards} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed rounds per T (each mode's best is kept)"
    )
    parser.add_argument(
        "--eager-budget-mib",
        type=float,
        default=8192,
        help="run eager only where its returned attention maps take at most this much memory",
    )
    add_child_options(parser, MODES)
    args = parser.parse_args()
    if run_as_child(args, THREADS, child_memory, child_timing):
        return

    load_before = os.getloadavg()[0]
    results: dict[int, dict[str, dict]] = {}
    for length in args.lengths:
        modes = [m for m in MODES if m != "eager" or eager_maps_mib(length) <= args.eager_budget_mib]
        results[length] = measure_modes(__file__, length, modes, args.repeats, THREADS)
    print(table(results))
    print(f"\n1-minute load average: {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.")


if __name__ == "__main__":
    main()
