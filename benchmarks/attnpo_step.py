"""AttnPO training step against a plain GRPO step on the same batch (target: ratio <= 1.05).

Both trainers get the same fixed rollout batch at every step (`attnpo_setup.replay_rollout`: responses
built from testbed traces, half right and half wrong per group, so rescaling has correct multi-step
responses to work on) and the same GRPOConfig (`attnpo.train.grpo_settings`); generation is a lookup,
so the step time is what the method costs: grading, rewards and advantages, step segmentation, the loss
forward with the key-focus-head capture armed, backward, optimizer. Baseline: TRL's `GRPOTrainer` with
the same correctness reward. Measured: `AttnPOTrainer` (AttnPO defaults, 3 heads, every correct
response eligible for rescaling).

Method: the two trainers alternate, `--rounds` times each (`--first` starts round 1, then the first to
start alternates), each round a fresh copy of the model trained for `--steps` steps; the first step of
every round is a warm-up and is dropped. Reported: the median wall and process-CPU time per step of
each, and their ratios; the machine's load average before and after, since other jobs inflate wall time.

    uv run python benchmarks/attnpo_step.py [--model smollm2-135m-instruct] [--prompts 4] [--group 8]
        [--steps 4] [--rounds 2] [--first grpo] [--threads 2]
"""

from __future__ import annotations

import os
import statistics
import time

import attnpo_setup
from transformers import TrainerCallback

from attncore.grading import Grader


class StepClock(TrainerCallback):
    """Wall and process-CPU seconds of each optimizer step."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = (time.perf_counter(), time.process_time())

    def on_step_end(self, args, state, control, **kwargs):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def main() -> None:
    parser = attnpo_setup.bench_arguments(__doc__, prompts=4, rounds=2)
    parser.add_argument("--steps", type=int, default=4, help="per round, the first one a warm-up")
    parser.add_argument(
        "--first", choices=("grpo", "attnpo"), default="grpo", help="the trainer that starts round 1"
    )
    args = parser.parse_args()
    loaded, examples, problems, prompt_ids = attnpo_setup.bench_inputs(args)
    tok = loaded.tokenizer
    completions = {
        text: [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
               for r in attnpo_setup.replayed_completions(e, args.group)]
        for e, text in zip(examples, prompt_ids, strict=True)
    }  # fmt: skip
    longest = max(len(c) for cs in completions.values() for c in cs)
    cfg = attnpo_setup.bench_config(args.model, args.prompts, args.group, longest, args.steps)
    rollout = attnpo_setup.replay_rollout(completions)
    tokens = sum(len(c) for cs in completions.values() for c in cs)
    load_before = os.getloadavg()

    clocks: dict[str, list[StepClock]] = {"grpo": [], "attnpo": []}
    rescaled: list[float] = []
    with Grader(mode="attnpo", workers=1, timeout_s=5.0) as grader:
        first_order = (args.first, "attnpo" if args.first == "grpo" else "grpo")
        for r in range(args.rounds):
            order = first_order if r % 2 == 0 else first_order[::-1]
            for kind in order:
                clock = StepClock()
                if kind == "grpo":
                    trainer = attnpo_setup.grpo_trainer(cfg, loaded, problems, grader, rollout, [clock])
                else:
                    trainer = attnpo_setup.attnpo_trainer(
                        cfg,
                        loaded,
                        problems,
                        grader,
                        rollout,
                        on_step_batch=lambda t, b: rescaled.append(
                            b.rescaled.factors.touched.double().mean().item()
                        ),
                        callbacks=[clock],
                    )
                trainer.train()
                clocks[kind].append(clock)
                print(
                    f"round {r + 1} {kind}: " + " ".join(f"{s:.2f}" for s in clock.wall) + " s/step",
                    flush=True,
                )
    load_after = os.getloadavg()

    def median(kind: str, attr: str) -> float:
        return statistics.median(x for c in clocks[kind] for x in getattr(c, attr)[1:])

    print("\n" + attnpo_setup.machine_line(args.threads, load_before, load_after))
    print(
        f"model {args.model}; batch {args.prompts} prompts x {args.group} = {args.prompts * args.group} "
        f"responses, {tokens} completion tokens; {args.rounds} rounds x {args.steps - 1} timed steps each; "
        f"AttnPO rescaled {statistics.mean(rescaled):.2f} of the responses per step"
    )
    print("| trainer | median s/step (wall) | median CPU s/step |")
    print("|---|---|---|")
    for kind, name in (("grpo", "GRPO (TRL, baseline)"), ("attnpo", "AttnPO")):
        print(f"| {name} | {median(kind, 'wall'):.3f} | {median(kind, 'cpu'):.3f} |")
    print(
        f"AttnPO / GRPO: {median('attnpo', 'wall') / median('grpo', 'wall'):.3f} wall, "
        f"{median('attnpo', 'cpu') / median('grpo', 'cpu'):.3f} CPU time (target <= 1.05)"
    )


if __name__ == "__main__":
    main()
