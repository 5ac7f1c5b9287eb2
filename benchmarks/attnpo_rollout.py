"""The CPU rollout phase of an AttnPO training step: the core's slot-refilling engine against TRL's stock
generation on the same prompts (target: >= 2x tokens/s).

Both run inside an `AttnPOTrainer` built as `attnpo train` builds it, through TRL's own generation entry
point (`GRPOTrainer._generate`, what a training step calls): baseline `rollout.engine=trl` (TRL's
`generate` on the whole rollout batch in one static, left-padded batch), measured `rollout.engine=refill`
(`attnpo.train.refill_rollout`: `--slots` sequences decode together, each finished one replaced by the
next). Same model, same prompts (testbed problems, `--prompts` x `--group` rollouts), temperature 1.0,
top-p 1.0, `--max-tokens` new tokens at most. Samples differ between engines, so lengths do too: the
ratio is of completion tokens per second, with each engine's phase seconds and token count beside it.

Method: the engines alternate for `--rounds` rounds (the first to start alternates too), after an
untimed warm-up on one group each; reported are the medians over rounds and the load average before and
after. `--slots` is the training config's `rollout.slots`.

    uv run python benchmarks/attnpo_rollout.py [--model smollm2-135m-instruct] [--prompts 8] [--group 8]
        [--max-tokens 256] [--slots 8] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import os
import statistics
import time

import attnpo_setup

from attncore.grading import Grader
from attncore.rollout.hf import eos_token_ids
from attnpo.train import refill_rollout


def main() -> None:
    parser = attnpo_setup.bench_arguments(__doc__, prompts=8, rounds=3)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--slots", type=int, default=8)
    args = parser.parse_args()
    loaded, _, problems, prompt_ids = attnpo_setup.bench_inputs(args)
    tok = loaded.tokenizer
    batch = [text for text in prompt_ids for _ in range(args.group)]  # TRL's order: each prompt G times
    trainers = {}
    with Grader(mode="attnpo", workers=1, timeout_s=5.0) as grader:
        for engine in ("trl", "refill"):
            cfg = attnpo_setup.bench_config(args.model, args.prompts, args.group, args.max_tokens, 1, engine)
            cfg.rollout.slots = args.slots
            rollout = None
            if engine == "refill":
                eos = set(eos_token_ids(loaded))
                rollout = refill_rollout(prompt_ids, cfg.rollout, eos, tok.pad_token_id, cfg.seed)
            trainers[engine] = attnpo_setup.attnpo_trainer(cfg, loaded, problems, grader, rollout)
            trainers[engine].model.train()  # as in a training step

        def phase(engine: str) -> tuple[float, int]:
            start = time.perf_counter()
            completions = trainers[engine]._generate(batch)[1]
            return time.perf_counter() - start, sum(len(c) for c in completions)

        load_before = os.getloadavg()
        for engine in trainers:  # warm-up on one group
            trainers[engine]._generate(batch[: args.group])
        runs: dict[str, list[tuple[float, int]]] = {"trl": [], "refill": []}
        for r in range(args.rounds):
            for engine in ("trl", "refill") if r % 2 == 0 else ("refill", "trl"):
                seconds, tokens = phase(engine)
                runs[engine].append((seconds, tokens))
                print(f"round {r + 1} {engine}: {tokens} tokens in {seconds:.2f} s", flush=True)
        load_after = os.getloadavg()

    def rate(engine: str) -> float:
        return statistics.median(tokens / seconds for seconds, tokens in runs[engine])

    print("\n" + attnpo_setup.machine_line(args.threads, load_before, load_after))
    print(
        f"model {args.model}; {args.prompts} prompts x {args.group} rollouts, <= {args.max_tokens} new tokens, "
        f"T = 1.0; refill slots {args.slots}; {args.rounds} rounds"
    )
    print("| engine | median phase s | median tokens | median tokens/s |")
    print("|---|---|---|---|")
    for engine, name in (("trl", "TRL stock generate (baseline)"), ("refill", "core refill engine")):
        seconds = statistics.median(s for s, _ in runs[engine])
        tokens = statistics.median(t for _, t in runs[engine])
        print(f"| {name} | {seconds:.2f} | {tokens:.0f} | {rate(engine):.1f} |")
    print(f"refill / TRL: {rate('refill') / rate('trl'):.2f}x tokens/s (target >= 2)")


if __name__ == "__main__":
    main()
