"""The training bar prints one headline line per logged step, not every key."""

from __future__ import annotations

from transformers import TrainerControl, TrainerState, TrainingArguments

from attnpo.progress import HeadlineProgress, headline


def test_headline_keeps_the_watched_figures_in_order():
    logs = {
        "attnpo/accuracy": 0.5,
        "loss": 0.0123456,
        "attnpo/gamma_hist/0.1": 3,
        "attnpo/step_score/q50": 0.014,
        "attnpo/reward": 0.25,
        "attnpo/share_rescaled": True,  # a bool is not a figure
        "step_time": 61.04,
    }
    assert headline(3, logs) == "step 3: loss 0.01235, reward 0.25, accuracy 0.5, step_time 61.04"


def test_the_bar_writes_the_headline_only(tmp_path, capsys):
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    state = TrainerState(max_steps=2)
    state.is_world_process_zero = True
    bar = HeadlineProgress()
    bar.on_train_begin(args, state, TrainerControl())
    state.global_step = 1
    bar.on_log(args, state, TrainerControl(), logs={"loss": 0.5, "attnpo/position_hist/0.7": 1, "epoch": 0.1})
    bar.on_train_end(args, state, TrainerControl())
    out = capsys.readouterr().out
    assert "step 1: loss 0.5" in out.splitlines()
    assert "position_hist" not in out and "epoch" not in out
