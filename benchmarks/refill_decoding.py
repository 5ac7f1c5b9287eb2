"""Slot-refilling decoding against HF `generate`'s static batches, on the same prompts and sampling.

Baseline: `HFEngine` in static batches of 16 (the testbed evaluation before refilling). Measured: the
refilling engine with 16 and with 32 slots. Same problems, temperature 0.6, top-p 0.95; tokens/s counts
the completion tokens each produced (their samples differ, so their lengths do too).

    uv run python benchmarks/refill_decoding.py [--model testbed-mini] [--data testbed] [--problems 64]

`--model` is anything the model loader takes (the default testbed model is built by `uv run attncore
synth train-model`); `--data testbed` uses the testbed evaluation's held-out problems and prompt,
`--data gsm8k` GSM8K with the plain template (for the embedded model: `--model smollm2-135m-instruct`).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from attncore.data import DataConfig, load_problems_or_bundled
from attncore.models import load_model
from attncore.prompts import PromptConfig
from attncore.rollout.hf import HFEngine
from attncore.rollout.types import SamplingConfig
from attncore.synthetic.dataset import generate_examples
from attncore.synthetic.evaluation import TESTBED_PROMPT
from attncore.synthetic.testbed_model import EvaluationConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="testbed-mini")
    parser.add_argument("--data", choices=["testbed", "gsm8k"], default="testbed")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = load_model(args.model)
    if args.data == "testbed":
        data = EvaluationConfig().data.model_copy(update={"count": args.problems})
        problems, prompt = [e.to_problem() for e in generate_examples(data)], TESTBED_PROMPT
    else:
        problems, _ = load_problems_or_bundled(DataConfig(name="gsm8k", limit=args.problems))
        prompt = PromptConfig(template="plain")
    sampling = SamplingConfig(temperature=0.6, top_p=0.95, max_tokens=args.max_tokens)
    engines = {
        "static batches of 16 (baseline)": HFEngine(loaded, prompt, batch_size=16),
        "refilled, 16 slots": HFEngine(loaded, prompt, batch_size=16, refill=True),
        "refilled, 32 slots": HFEngine(loaded, prompt, batch_size=32, refill=True),
    }
    HFEngine(loaded, prompt, batch_size=2, refill=True).generate(problems[:2], SamplingConfig(max_tokens=4))

    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; model {args.model}, {len(problems)} problems, "
        f"max {args.max_tokens} tokens, T 0.6, top-p 0.95"
    )
    print()
    print("| decoding | tokens | seconds | tokens/s | truncated | ratio vs baseline |")
    print("|---|---:|---:|---:|---:|---:|")
    baseline = None
    for label, engine in engines.items():
        started = time.perf_counter()
        rollouts = engine.generate(problems, sampling)
        seconds = time.perf_counter() - started
        tokens = sum(r.n_completion_tokens for r in rollouts)
        rate = tokens / seconds
        baseline = baseline or rate
        truncated = sum(r.finish_reason == "length" for r in rollouts)
        print(f"| {label} | {tokens} | {seconds:.1f} | {rate:.1f} | {truncated} | {rate / baseline:.2f}x |")


if __name__ == "__main__":
    main()
