"""The training bar's log line: the headline figures of a step, not the ~80 keys TRL and AttnPO log.

transformers' `ProgressCallback` prints every logged key under the bar; with the γ, score-ratio and
position histograms and the score quantiles that is a wall of text per step. The bar keeps the figures a
researcher watches; `metrics.jsonl` and wandb keep everything.
"""

from __future__ import annotations

from transformers.trainer_callback import ProgressCallback

HEADLINE = (
    "loss",
    "attnpo/reward",
    "attnpo/accuracy",
    "attnpo/thinking_tokens",
    "attnpo/share_rescaled",
    "attnpo/share_steps_attenuated",
    "attnpo/oracle/attenuated_redundant_share",
    "step_time",
)


def headline(step: int, logs: dict) -> str:
    """`step N: loss …, reward …, …` from the logged keys in `HEADLINE` that this step has."""
    shown = [
        f"{key.split('/')[-1]} {logs[key]:.4g}"
        for key in HEADLINE
        if isinstance(logs.get(key), int | float) and not isinstance(logs.get(key), bool)
    ]
    return f"step {step}: " + ", ".join(shown)


class HeadlineProgress(ProgressCallback):
    """`ProgressCallback` whose log line is `headline` (the bars themselves are transformers')."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(headline(state.global_step, logs))


def use_headline_progress(trainer) -> None:
    """Swap the trainer's progress callback for `HeadlineProgress`; no bar (quiet runs) stays no bar."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(HeadlineProgress())
