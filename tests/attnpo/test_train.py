"""`attnpo train` on a tiny model that has memorised three answers to one question (two right answers of
different lengths, one wrong), so groups mix correct and wrong, long and short responses: the trainer's
token advantages must equal the pure functions' on the very batch, and a resumed run the uninterrupted one."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from attncore.config import load_config
from attncore.data import Problem
from attncore.models import ModelConfig, load_model
from attncore.prompts import PromptConfig, encode_prompt
from attncore.scores import batch_step_scores
from attncore.steps import unscored_reason
from attnpo.advantages import outcome_advantages
from attnpo.rescaling import rescale_advantages
from attnpo.rewards import group_rewards
from attnpo.train import TrainConfig, last_checkpoint, run_train
from attnpo.trainer import padded_steps

SHELF = "First, I add the two numbers of apples that the shop has on the shelf: 2 + 3 = 5 apples in all.\n"
TRACES = [
    SHELF + "Wait, let me double-check: 2 plus 3 is 5, and the shop sells every apple it has today.\n"
    "So the answer is 5.\n</think>\nThe answer is \\boxed{5}.",
    SHELF + "Hmm, the shop also had no other fruit, so only the apples on the shelf count for the total.\n"
    "Wait, let me double-check: 2 plus 3 is 5, and the shop sells every apple it has today.\n"
    "So the answer is 5.\n</think>\nThe answer is \\boxed{5}.",
    SHELF + "Now the shop sells one more apple from the back room, so the total grows by one more apple.\n"
    "So the answer is 6.\n</think>\nThe answer is \\boxed{6}.",
]
QUESTION = "A shop has 2 apples and 3 more apples. How many apples?"


@pytest.fixture(scope="module")
def memorised_model(tiny_model_dir, tmp_path_factory):
    """A tiny qwen2 trained to continue the question's prompt with one of the three traces."""
    torch.manual_seed(0)
    loaded = load_model(ModelConfig(name=str(tiny_model_dir("qwen2"))))
    model, tok = loaded.model, loaded.tokenizer
    _, prompt = encode_prompt(Problem("q", QUESTION, "5", "test"), tok, PromptConfig(template="r1"))
    rows = [prompt + tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in TRACES]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        labels[i, len(prompt) : len(row)] = torch.tensor(row[len(prompt) :])
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optim.step()
        optim.zero_grad()
    out = tmp_path_factory.mktemp("memorised")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    problems = out / "problems.jsonl"
    problems.write_text(
        "".join(json.dumps({"id": f"p{i}", "problem": QUESTION, "answer": "5"}) + "\n" for i in range(2))
    )
    return out, problems


def train_config(model_dir: Path, problems: Path, out: Path, *overrides: str) -> TrainConfig:
    base = [
        f"model.name={model_dir}",
        f"data.file={problems}",
        "method.heads.kind=list",
        "method.heads.heads=[[1,0],[3,2]]",
        "method.rescaling.curriculum_steps=0",
        "method.rescaling.difficulty_aware=false",
        "prompts_per_step=2",
        "group_size=4",
        "rollout.max_tokens=200",
        "rollout.slots=4",
        "grading.workers=1",
        "tracking.mode=disabled",
        f"out={out}",
    ]
    return load_config(TrainConfig, None, [*base, *overrides])


@pytest.mark.slow
def test_token_advantages_are_the_pure_functions_of_the_batch(memorised_model, tmp_path):
    model_dir, problems = memorised_model
    cfg = train_config(model_dir, problems, tmp_path / "run", "steps=2", "save_every=1")
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
        attenuated += int((want.factors.pos | want.factors.neg).sum())
        # and the same from the standalone scores, up to float rounding
        values_alone, *_ = padded_steps(batch.segments, alone)
        assert torch.allclose(values_alone, values, atol=1e-6)
    assert touched_any, "no response went through step treatment: the test lost its point"
    assert attenuated > 0, "no step was attenuated: the gamma path went untested"
    out = tmp_path / "run"
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


@pytest.mark.slow
def test_a_resumed_run_ends_where_the_uninterrupted_one_does(memorised_model, tmp_path):
    model_dir, problems = memorised_model
    straight = run_train(
        train_config(model_dir, problems, tmp_path / "a", "steps=3", "save_every=1"), progress=False
    )
    first = run_train(
        train_config(model_dir, problems, tmp_path / "b", "steps=2", "save_every=1"), progress=False
    )
    assert (straight.steps, first.steps) == (3, 2)
    resumed = run_train(
        train_config(model_dir, problems, tmp_path / "b", "steps=3", "save_every=1"), progress=False
    )
    assert (resumed.steps, resumed.resumed_from) == (3, 2)
    a = load_file(tmp_path / "a" / "final" / "model.safetensors")
    b = load_file(tmp_path / "b" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    base = load_file(model_dir / "model.safetensors")
    assert any(not torch.equal(a[n], base[n]) for n in a)  # training moved the weights


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
    code, _, err = attnpo_cli("train", "method.rescaling.enabled=false", "method.reward.kind=l1_max")
    assert code == 2 and "needs target lengths" in err
    code, _, err = attnpo_cli("train", "method.rescaling.enabled=false", "method.reward.kind=laser_de")
    assert code == 2 and "repetition detector" in err
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
