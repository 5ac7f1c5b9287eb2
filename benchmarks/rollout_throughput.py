"""Rollout and grading throughput on the embedded model.

Generation: tokens/s of batched Hugging Face `generate` (left-padded, batch 8) against one-by-one
generation of the same prompts, greedy, measured in the same run (target: >= 3x at batch 8).
Grading: answers/s of the 2-worker grading pool on 1,000 MATH500-style answers, against serial
math-verify in the main thread (see grading_throughput.py).

    uv run python benchmarks/rollout_throughput.py [--problems 8] [--max-tokens 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from attncore.data import DataConfig, load_problems_or_bundled
from attncore.models import load_model
from attncore.prompts import PromptConfig
from attncore.rollout.hf import HFEngine
from attncore.rollout.types import SamplingConfig

sys.path.insert(0, str(Path(__file__).parent))
import grading_throughput


def time_generation(engine: HFEngine, problems, sampling: SamplingConfig) -> tuple[int, float]:
    """Completion tokens generated and seconds taken."""
    started = time.perf_counter()
    rollouts = engine.generate(problems, sampling)
    return sum(r.n_completion_tokens for r in rollouts), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--grading-answers", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    problems, _ = load_problems_or_bundled(DataConfig(name="gsm8k", limit=args.problems))
    started = time.perf_counter()
    loaded = load_model()
    load_s = time.perf_counter() - started
    prompt = PromptConfig(template="plain")
    sampling = SamplingConfig(max_tokens=args.max_tokens)
    batched = HFEngine(loaded, prompt, batch_size=args.batch_size)
    single = HFEngine(loaded, prompt, batch_size=1)
    time_generation(batched, problems[:2], SamplingConfig(max_tokens=4))  # warm-up

    one_tokens, one_s = time_generation(single, problems, sampling)
    batch_tokens, batch_s = time_generation(batched, problems, sampling)
    one_rate, batch_rate = one_tokens / one_s, batch_tokens / batch_s

    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; model load {load_s:.2f} s"
    )
    print()
    print("| generation (SmolLM2-135M, fp32, greedy) | tokens | seconds | tokens/s |")
    print("|---|---:|---:|---:|")
    print(f"| one by one (baseline) | {one_tokens} | {one_s:.1f} | {one_rate:.1f} |")
    print(f"| batched, batch {args.batch_size} | {batch_tokens} | {batch_s:.1f} | {batch_rate:.1f} |")
    print()
    print(f"batched / one-by-one: {batch_rate / one_rate:.2f}x (target >= 3x)")
    print()
    print(grading_throughput.markdown_table(grading_throughput.measure(args.grading_answers, workers=2)))


if __name__ == "__main__":
    main()
