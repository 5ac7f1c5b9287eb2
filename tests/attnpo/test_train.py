"""`attnpo train` on a tiny model that has memorised three answers to one question (two right answers of
different lengths, one wrong), so groups mix correct and wrong, long and short responses: the trainer's
token advantages must equal the pure functions' on the very batch, and a run stopped (or SIGKILLed) and
resumed must end with the uninterrupted run's weights, metrics and data order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from attncore.scores import batch_step_scores
from attncore.steps import unscored_reason
from attnpo.advantages import outcome_advantages
from attnpo.baseline_replay import replay_run
from attnpo.rescaled_log import read_rescaled
from attnpo.rescaling import rescale_advantages
from attnpo.rewards import group_rewards
from attnpo.train import keep_metrics_until, last_checkpoint, run_train
from attnpo.trainer import padded_steps


@pytest.mark.slow
def test_token_advantages_are_the_pure_functions_of_the_batch(memorised_model, train_config, tmp_path):
    model_dir, problems = memorised_model
    cfg = train_config(model_dir, problems, tmp_path / "run", "steps=2", "save_every=1", "log_rescaled=true")
    seen = []

    def check(trainer, batch):
        """Inside the loss forward: the step scores again, from a standalone forward with the same weights."""
        inputs = batch.inputs
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
        mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
        scored = [s if s is not None and unscored_reason(s) is None else None for s in batch.segments]
        prompts = inputs["prompt_mask"].sum(1).tolist()
        alone = batch_step_scores(trainer.capture, ids, mask, scored, prompts, trainer.heads)
        for got, want in zip(batch.scores, alone, strict=True):
            assert (got is None) == (want is None)
            if got is not None:
                assert torch.allclose(got.per_head, want.per_head, atol=1e-6)
        seen.append((batch, alone))

    run_train(cfg, progress=False, on_step_batch=check)
    assert len(seen) == 2
    touched_any, attenuated = False, 0
    treated = []  # (step, |F|, |o|, step token counts) of each response that went through step treatment
    for batch, alone in seen:
        inputs = batch.inputs
        correct, lengths = inputs["attnpo_correct"], inputs["completion_mask"].sum(1)
        # TRL shuffles the rows of a batch: regroup them by the group each came from
        groups = defaultdict(list)
        for row, group in enumerate(inputs["attnpo_group"].tolist()):
            groups[group].append(row)
        rows = list(groups.values())
        assert all(len(r) == 4 for r in rows)
        order = torch.tensor([r for group in rows for r in group])
        g_correct, g_lengths = correct[order].view(-1, 4), lengths[order].view(-1, 4)
        rewards = group_rewards(cfg.method.reward, g_correct, g_lengths, global_step=batch.global_step)
        expected = torch.empty(len(order), dtype=torch.float64)
        expected[order] = outcome_advantages(cfg.method.advantage, rewards).flatten()
        assert torch.allclose(inputs["attnpo_outcome"].double(), expected, atol=1e-6)
        accuracy = torch.empty(len(order), dtype=torch.float64)
        accuracy[order] = g_correct.double().mean(1).repeat_interleave(4)
        assert torch.equal(inputs["attnpo_accuracy"].double(), accuracy)
        # the token advantages TRL's loss read are rescale_advantages of these inputs
        values, spans, counts, answer = padded_steps(batch.segments, batch.scores)
        total = inputs["prompt_mask"].sum(1) + lengths
        want = rescale_advantages(
            inputs["attnpo_outcome"], values, spans, counts, correct, inputs["attnpo_accuracy"], answer, total,
            width=inputs["completion_ids"].shape[1], global_step=batch.global_step, config=cfg.method.rescaling,
        )  # fmt: skip
        assert torch.equal(inputs["advantages"], want.tokens.float())
        assert torch.equal(batch.rescaled.tokens, want.tokens)
        touched_any |= bool(want.factors.touched.any())
        lengths_k = (spans[..., 1] - spans[..., 0]).tolist()
        treated += [
            (batch.global_step, int(answer[b]), int(total[b]), lengths_k[b][: int(counts[b])])
            for b in want.factors.touched.nonzero().flatten().tolist()
        ]
        attenuated += int((want.factors.pos | want.factors.neg).sum())
        # and the same from the standalone scores, up to float rounding
        values_alone, *_ = padded_steps(batch.segments, alone)
        assert torch.allclose(values_alone, values, atol=1e-6)
    assert touched_any, "no response went through step treatment: the test lost its point"
    assert attenuated > 0, "no step was attenuated: the gamma path went untested"
    out = tmp_path / "run"
    # the rescaled log holds each treated response's |F|, |o| and step token counts, and replaying it
    # under the run's baseline gives the flags the trainer logged
    rescaled = read_rescaled(out)
    got = [
        (r["step"], r["answer_tokens"], r["total_tokens"], [s["tokens"] for s in r["steps"]])
        for r in rescaled
    ]
    assert sorted(got) == sorted(treated)
    assert replay_run(out)["reproduced"] == {"baseline": "uniform", "mismatched_steps": 0}
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in logged if "attnpo/reward" in row]
    assert [row["step"] for row in steps] == [1, 2]
    for key in ("attnpo/accuracy", "attnpo/thinking_tokens", "attnpo/share_rescaled", "attnpo/pos_steps",
                "attnpo/gamma_hist/0.9", "attnpo/share_steps_attenuated", "attnpo/neg_steps"):  # fmt: skip
        assert key in steps[0]
    assert 0 < steps[0]["attnpo/accuracy"] < 1
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["method"]["reward"]["kind"] == "traineff" and resolved["optim"]["dual_clip"] == 3.0
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-1",
        "checkpoint-2",
    ]
    assert (out / "final" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def ordered_problems(question_file):
    """Golds 5, 5, 6 and 7: which two problems a step draws shows in its accuracy, so equal per-step
    metrics mean the same data order."""
    return question_file(["5", "5", "6", "7"])


@pytest.fixture(scope="module")
def uninterrupted(memorised_model, ordered_problems, train_config, tmp_path_factory):
    """A 3-step run that nothing stopped: its final weights and its metrics rows."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = run_train(train_config(memorised_model[0], ordered_problems, out, *RESUME_RUN), progress=False)
    torch.set_num_threads(threads)
    assert result.steps == 3
    return out


RESUME_RUN = ("steps=3", "save_every=1")
TIMING = ("step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second")


def step_rows(out):
    """The metrics rows of the optimizer steps, without wall-clock timings."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows if "attnpo/reward" in row]


def assert_same_run(out, uninterrupted):
    a = load_file(uninterrupted / "final" / "model.safetensors")
    b = load_file(out / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    got, want = step_rows(out), step_rows(uninterrupted)
    assert [r["step"] for r in got] == [1, 2, 3]
    assert got == want
    assert len({r["attnpo/accuracy"] for r in want}) > 1, "the steps drew different problems"


@pytest.mark.slow
def test_a_resumed_run_ends_where_the_uninterrupted_one_does(
    memorised_model, ordered_problems, train_config, uninterrupted, tmp_path
):
    model_dir = memorised_model[0]
    out = tmp_path / "b"
    first = run_train(
        train_config(model_dir, ordered_problems, out, "steps=2", "save_every=1"), progress=False
    )
    assert first.steps == 2
    resumed = run_train(train_config(model_dir, ordered_problems, out, *RESUME_RUN), progress=False)
    assert (resumed.steps, resumed.resumed_from) == (3, 2)
    assert_same_run(out, uninterrupted)
    kept = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    assert kept == ["checkpoint-2", "checkpoint-3"], "save_total_limit 2: the oldest is deleted"
    a = load_file(uninterrupted / "final" / "model.safetensors")
    base = load_file(model_dir / "model.safetensors")
    assert any(not torch.equal(a[n], base[n]) for n in a)  # training moved the weights


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_run(
    memorised_model, ordered_problems, train_config, uninterrupted, tmp_path
):
    """`attnpo train` in a subprocess, SIGKILLed once its first checkpoint is complete, then rerun."""
    out = tmp_path / "killed"
    cfg = train_config(memorised_model[0], ordered_problems, out, *RESUME_RUN)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_unset=True)))
    command = [
        str(Path(sys.executable).parent / "attnpo"),
        "train",
        "--config",
        str(tmp_path / "run.yaml"),
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while last_checkpoint(out) is None:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = last_checkpoint(out)
    assert killed_at is not None and killed_at.name != "checkpoint-3", "killed before the run ended"
    assert not (out / "final").exists()
    resumed = subprocess.run(command, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from step {killed_at.name.split('-')[1]}" in resumed.stdout
    assert_same_run(out, uninterrupted)


def test_a_resumed_run_drops_the_metrics_rows_its_checkpoint_lost(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"step": s, "loss": s / 10}) for s in (1, 2, 3)]
    path.write_text("\n".join(rows) + '\n{"step": 4, "lo')  # the kill cut the last line short
    keep_metrics_until(path, 2)
    assert path.read_text() == rows[0] + "\n" + rows[1] + "\n"
    keep_metrics_until(path, 2)  # nothing past the checkpoint: left as it is
    assert path.read_text() == rows[0] + "\n" + rows[1] + "\n"
    keep_metrics_until(path, 0)
    assert path.read_text() == ""
    keep_metrics_until(tmp_path / "absent.jsonl", 3)
    assert not (tmp_path / "absent.jsonl").exists()


def test_a_checkpoint_a_kill_interrupted_is_skipped(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoints" / "checkpoint-4"
    assert last_checkpoint(tmp_path / "elsewhere") is None


def test_train_cli_errors_are_one_line(attnpo_cli, tmp_path):
    code, _, err = attnpo_cli("train", "method.heads.kind=list", "method.heads.heads=[[0,0]]", "group_size=1")
    assert code == 2 and "group_size=1" in err and "Traceback" not in err
    code, _, err = attnpo_cli(
        "train",
        "method.rescaling.enabled=false",
        "method.reward.kind=l1_exact",
        "method.reward.target_min=5000",
    )
    assert code == 2 and "target_min=5000 exceeds target_max=4000" in err and "Traceback" not in err
    code, _, err = attnpo_cli("train", "method.rescaling.gamma=2")
    assert code == 2 and "unknown key 'method.rescaling.gamma'" in err
    missing = tmp_path / "none.jsonl"
    code, _, err = attnpo_cli(
        "train",
        "method.rescaling.enabled=false",
        f"data.file={missing}",
        f"out={tmp_path / 'o'}",
        "--no-wandb",
    )
    assert code == 2 and f"file not found: {missing}" in err
    rows = tmp_path / "targets.jsonl"
    rows.write_text(
        json.dumps({"id": "a", "problem": "1 + 1?", "answer": "2", "target_length": "long"}) + "\n"
    )
    code, _, err = attnpo_cli(
        "train", "method.rescaling.enabled=false", "method.reward.kind=l1_exact", f"data.file={rows}",
        f"out={tmp_path / 'o'}", "--no-wandb",
    )  # fmt: skip
    assert (
        code == 2
        and err.strip() == f"error: {rows}: row 0: target_length must be a positive integer, got 'long'"
    )


def _completion_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask):
    """(B, T) log-probabilities of the completion tokens under `model` (temperature 1.0, the rollouts')."""
    ids = torch.cat([prompt_ids, completion_ids], 1)
    mask = torch.cat([prompt_mask, completion_mask], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, prompt_ids.shape[1] - 1 : -1]
    return torch.log_softmax(logits.float(), -1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


def test_one_update_moves_probability_towards_the_rewarded_completions(
    memorised_model, train_config, tmp_path
):
    """The whole path (rollouts, grading, group rewards, RLOO, TRL's loss, the optimizer) in the right
    direction: after one update, the batch's completions with A > 0 gained log-probability against those
    with A < 0, and the surrogate sum A·Δlog p over the batch's tokens rose."""
    from attncore.models import ModelConfig, load_model

    model_dir, problems = memorised_model
    cfg = train_config(
        model_dir, problems, tmp_path / "run", "steps=1", "method.reward={kind: correctness}",
        "method.rescaling.enabled=false", "optim.lr=1e-4",
    )  # fmt: skip
    batches = []
    run_train(cfg, progress=False, on_step_batch=lambda trainer, batch: batches.append(batch.inputs))
    before = load_model(ModelConfig(name=str(model_dir))).model.eval()
    after = load_model(ModelConfig(name=str(tmp_path / "run" / "final"))).model.eval()
    gained, lost, surrogate = [], [], 0.0
    for inputs in batches:
        tensors = [inputs[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")]
        delta = _completion_logps(after, *tensors) - _completion_logps(before, *tensors)
        mask = inputs["completion_mask"].bool()
        advantage = inputs["attnpo_outcome"]
        surrogate += float((advantage[:, None] * delta * mask).sum())
        for row, a in enumerate(advantage.tolist()):
            (gained if a > 0 else lost if a < 0 else []).append(float(delta[row][mask[row]].sum()))
    assert gained and lost, "no group mixed right and wrong completions: the test lost its point"
    assert surrogate > 0
    assert sum(gained) / len(gained) > sum(lost) / len(lost)
