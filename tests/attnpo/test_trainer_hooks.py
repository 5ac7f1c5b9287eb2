"""The trainer's own reward path and per-step metrics on hand-built groups of testbed completions.

TRL's `rollout_func` hook returns fixed completions (variants of synthetic-testbed traces whose step
labels the generator knows), so each group's grades, lengths and repetition are known by construction:
every reward of the zoo through `AttnPOTrainer` must equal the pure function on the same group, and the
rescaling metrics logged after a loss forward must be those of the batch the loss read."""

from __future__ import annotations

import warnings
from dataclasses import replace

import datasets
import pytest
import torch

from attncore.grading import Grader
from attncore.models import ModelConfig, load_model
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.dataset import generate_examples, write_examples
from attncore.synthetic.traces import Trace
from attncore.think import THINK_OPEN_LINE
from attnpo.advantages import outcome_advantages
from attnpo.config import (
    CorrectnessReward,
    KimiReward,
    L1ExactReward,
    L1MaxReward,
    LaserDReward,
    LaserReward,
    MethodConfig,
    ShorterBetterReward,
    ThinkPruneReward,
    TraineffReward,
    TruncationReward,
)
from attnpo.rewards import group_rewards, repetitive
from attnpo.step_metrics import REDUNDANT
from attnpo.train import TrainConfig, dataset_rows, grpo_args, training_problems, with_histograms
from attnpo.trainer import AttnPOTrainer

G = 4
QUERY_SCALE = 30.0
LOOP = "Hmm, 2 + 2 = 4, and 4 is what I had. " * 12


def variant(trace: Trace, keep: list[int]) -> tuple[str, list[str]]:
    """The completion (after the prompt's `<think>` line) of `trace` with only steps `keep`, and their
    generator labels."""
    steps = tuple(trace.steps[i] for i in keep)
    text = Trace(steps, trace.answer).text[len(THINK_OPEN_LINE) :]
    return text, ["essential" if s.essential else "redundant" for s in steps]


def hand_built_groups(examples) -> tuple[list[list[str]], list[list[bool]], list[list[list[str] | None]]]:
    """Per problem G completions, whether each is correct, and the generator's step labels.

    Group 0 (accuracy 1/2): the full trace, its essential steps only, the full trace with a wrong boxed
    answer, a repetition loop. Group 1 (all correct, four lengths): the essential steps plus 0, 1, 2 and
    all of the redundant steps, so the longest responses get A < 0. Group 2 (accuracy 3/4): essential
    steps only, the full trace, the full trace with one more sentence (its steps no longer those of the
    generator: no labels checked), a repetition loop longer than any other response."""
    texts, correct, labels = [], [], []
    first, second = examples[0].trace, examples[1].trace
    everything = list(range(len(first.steps)))
    essential = [i for i, s in enumerate(first.steps) if s.essential]
    full, full_labels = variant(first, everything)
    short, short_labels = variant(first, essential)
    wrong = full.replace(
        f"\\boxed{{{examples[0].problem.answer}}}", f"\\boxed{{{examples[0].problem.answer + 1}}}"
    )
    assert wrong != full
    texts.append([full, short, wrong, LOOP])
    correct.append([True, True, False, False])
    labels.append([full_labels, short_labels, None, None])
    essential = [i for i, s in enumerate(second.steps) if s.essential]
    redundant = [i for i, s in enumerate(second.steps) if not s.essential]
    group = [variant(second, sorted(essential + redundant[:n])) for n in (0, 1, 2, len(redundant))]
    texts.append([t for t, _ in group])
    correct.append([True] * G)
    labels.append([lab for _, lab in group])
    third = examples[2].trace
    essential = [i for i, s in enumerate(third.steps) if s.essential]
    group = [variant(third, keep) for keep in (essential, range(len(third.steps)))]
    texts.append(
        [group[0][0], group[1][0], group[1][0].replace("\n\n", "\n\nSo far so good.\n\n", 1), LOOP * 2]
    )
    correct.append([True, True, True, False])
    labels.append([group[0][1], group[1][1], None, None])
    return texts, correct, labels


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory, train_config):
    """An AttnPOTrainer on a tiny random qwen2 whose rollouts are the hand-built groups."""
    torch.set_num_threads(1)
    model_dir = tiny_model_dir("qwen2")
    examples = generate_examples(
        SyntheticConfig(count=3, seed=5, problem={"difficulty": (2, 3)}, trace={"redundancy": (0.3, 0.6)})
    )
    assert len(examples[1].trace.steps) - sum(s.essential for s in examples[1].trace.steps) >= 3
    folder = tmp_path_factory.mktemp("hooks")
    problems_file = folder / "problems.jsonl"
    write_examples(examples, problems_file)
    texts, correct, labels = hand_built_groups(examples)
    loaded = load_model(ModelConfig(name=str(model_dir)))
    tok = loaded.tokenizer
    with (
        torch.no_grad()
    ):  # sharper attention than a random init's near-uniform one: scores on both sides of S_base
        for layer in loaded.model.model.layers:
            layer.self_attn.q_proj.weight.mul_(QUERY_SCALE)
    ids = [
        [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in group] for group in texts
    ]
    served: dict[str, int] = {}  # prompt text -> problem index, set by `rows`

    def rollout(prompts, trainer):
        seen: dict[str, int] = {}
        completions = []
        for p in prompts:
            k = seen.get(p, 0)
            seen[p] = k + 1
            completions.append(ids[served[p]][k])
        return {
            "prompt_ids": [prompt_ids[p] for p in prompts],
            "completion_ids": completions,
            "logprobs": None,
        }

    def config(*overrides: str) -> TrainConfig:
        return train_config(
            model_dir, problems_file, folder / "run", "prompts_per_step=3", f"group_size={G}", *overrides
        )

    prompt_ids: dict[str, list[int]] = {}

    def rows(cfg: TrainConfig) -> list[dict]:
        """The sampler's batch for `cfg`: each problem's dataset row G times, in order."""
        table, encoded = dataset_rows(training_problems(cfg.data), cfg, tok)
        prompt_ids.update(encoded)
        served.update({row["prompt"]: i for i, row in enumerate(table)})
        return [row for row in table for _ in range(G)]

    cfg = config()
    batches = []
    with Grader(mode="attnpo", workers=1, timeout_s=5.0) as grader:
        with warnings.catch_warnings(record=True) as built:
            warnings.simplefilter("always")
            trainer = AttnPOTrainer(
                model=loaded.model,
                args=grpo_args(cfg, 1, progress=False),
                train_dataset=datasets.Dataset.from_list(rows(cfg)),
                processing_class=tok,
                rollout_func=rollout,
                method=cfg.method,
                heads=[(1, 0), (3, 2)],
                segmenter=cfg.segmenter,
                grader=grader,
                on_step_batch=lambda _, batch: batches.append(batch),
            )
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1  # set by TRL's training loop, which these tests skip
        yield {
            "trainer": trainer,
            "config": config,
            "rows": rows,
            "ids": ids,
            "correct": torch.tensor(correct),
            "labels": labels,
            "batches": batches,
            "warnings": [str(w.message) for w in built],
        }


def zoo(lengths: torch.Tensor) -> list:
    """Every reward of spec §12, with limits and targets that fall between the groups' lengths."""
    mid = int(lengths.flatten().sort().values[lengths.numel() // 2])
    short, long = int(lengths.min()), int(lengths.max())
    below = int(lengths.flatten().sort().values[-2])  # the loop of group 2 is the longest
    return [
        CorrectnessReward(),
        TraineffReward(),
        TraineffReward(double_sigmoid=True),
        L1ExactReward(target_min=short, target_max=long),
        L1MaxReward(alpha=2e-3, target_min=short, target_max=long),
        ThinkPruneReward(limits=[long, mid], steps_per_round=1),
        ShorterBetterReward(),
        KimiReward(),
        LaserReward(target=mid),
        LaserDReward(kind="laser_d", thresholds=[short, mid, below]),
        LaserDReward(kind="laser_de", thresholds=[short, mid, below], repetition_ngram=40),
        TruncationReward(limit=mid),
    ]


def test_every_reward_through_the_trainer_equals_the_pure_function(setup):
    trainer, ids, correct = setup["trainer"], setup["ids"], setup["correct"]
    lengths = torch.tensor([[len(c) for c in group] for group in ids])
    repeated = torch.tensor([[False, False, False, True], [False] * G, [False, False, False, True]])
    assert torch.equal(
        repetitive([c for group in ids for c in group], ngram=40, count=3).view(-1, G), repeated
    )
    for reward in zoo(lengths):
        for step in (0, 1):
            for advantage in ({"kind": "rloo"}, {"kind": "grpo", "scale": "batch"}):
                cfg = setup["config"]("method.rescaling.enabled=false")
                trainer.method = MethodConfig(
                    reward=reward, advantage=advantage, rescaling={"enabled": False}
                )
                trainer.state.global_step = step
                batch = setup["rows"](cfg.model_copy(update={"method": trainer.method}))
                targets = None
                if reward.kind in ("l1_exact", "l1_max"):
                    targets = torch.tensor([batch[g * G]["target_length"] for g in range(3)])
                    assert all(
                        short <= t <= long
                        for t in targets.tolist()
                        for short, long in [(lengths.min(), lengths.max())]
                    )
                    assert (
                        f"Think for {'maximum ' if reward.kind == 'l1_max' else ''}{int(targets[0])} tokens."
                        in batch[0]["prompt"]
                    )
                out = trainer._generate_and_score_completions(batch)
                assert torch.equal(out["attnpo_correct"].view(-1, G), correct)
                want = group_rewards(
                    reward, correct, lengths, global_step=step + 1, targets=targets, repeated=repeated
                )
                assert torch.allclose(out["attnpo_reward"].double().view(-1, G), want, atol=1e-6), reward
                advantages = outcome_advantages(trainer.method.advantage, want).flatten().float()
                assert torch.allclose(out["attnpo_outcome"], advantages, atol=1e-6), reward
    trainer.state.global_step = 0
    # the laser_de case had a point: the loop's flag changes its reward
    de = zoo(lengths)[-2]
    assert not torch.equal(
        group_rewards(de, correct, lengths, global_step=1, repeated=repeated),
        group_rewards(de, correct, lengths, global_step=1),
    )


def test_logged_step_metrics_are_those_of_the_batch_the_loss_read(setup):
    trainer, batches = setup["trainer"], setup["batches"]
    cfg = setup["config"]()
    trainer.method = cfg.method
    trainer.state.global_step = 0
    batches.clear()
    out = trainer._generate_and_score_completions(setup["rows"](cfg))
    # the oracle labels the trainer attached are the generator's, for every correct segmented response
    checked = 0
    for row, labels in enumerate(out["attnpo_oracle"]):
        want = setup["labels"][row // G][row % G]
        if want is not None and labels is not None:
            assert list(labels) == want
            checked += 1
    assert checked >= 5
    trainer._compute_loss(trainer.model, out)
    trainer.log({})
    logged = trainer.state.log_history[-1]
    (batch,) = batches
    f = batch.rescaled.factors
    oracle = batch.inputs["attnpo_oracle"]
    outcome = batch.inputs["attnpo_outcome"]
    treated, pos, neg, gammas, positions, all_positions, ratios = 0, 0, 0, [], [], [], []
    labels_att, labels_pos, labels_all = [], [], []
    pos_rows = neg_rows = 0
    for b in range(len(outcome)):
        if not f.touched[b]:
            continue
        scores = batch.scores[b].mean.double()
        k = len(scores)
        pos_rows += int(outcome[b] > 0)
        neg_rows += int(outcome[b] < 0)
        for i in range(k):
            treated += 1
            all_positions.append((i + 0.5) / k)
            ratios.append(float(scores[i] / f.baseline[b]))
            labels_all.append(oracle[b][i])
            if f.pos[b, i] or f.neg[b, i]:
                pos += int(f.pos[b, i])
                neg += int(f.neg[b, i])
                gammas.append(float(f.gamma[b, i]))
                positions.append((i + 0.5) / k)
                labels_att.append(oracle[b][i])
                if f.pos[b, i]:
                    labels_pos.append(oracle[b][i])
    assert pos > 0 and neg > 0, "both attenuations must occur for the test to have its point"
    assert logged["attnpo/share_rescaled"] == pytest.approx(int(f.touched.sum()) / 3 / G)
    assert (logged["attnpo/pos_responses"], logged["attnpo/neg_responses"]) == (pos_rows, neg_rows)
    assert (logged["attnpo/treated_steps"], logged["attnpo/pos_steps"], logged["attnpo/neg_steps"]) == (
        treated,
        pos,
        neg,
    )
    assert logged["attnpo/share_steps_attenuated"] == pytest.approx((pos + neg) / treated)
    for i in range(10):
        edge = round(i / 10, 2)
        assert logged[f"attnpo/gamma_hist/{edge}"] == sum(min(int(g * 10), 9) == i for g in gammas)
        assert logged[f"attnpo/position_hist/{edge}"] == sum(min(int(p * 10), 9) == i for p in positions)
        assert logged[f"attnpo/score_ratio_hist/{round(i * 0.25, 2)}"] == sum(
            min(int(r * 4), 9) == i for r in ratios
        )
    assert sum(logged[f"attnpo/gamma_hist/{round(i / 10, 2)}"] for i in range(10)) == pos + neg
    assert logged["attnpo/score_ratio/q50"] == pytest.approx(
        float(torch.tensor(ratios).double().quantile(0.5))
    )
    assert logged["attnpo/position/attenuated_mean"] == pytest.approx(sum(positions) / len(positions))
    assert logged["attnpo/position/treated_mean"] == pytest.approx(sum(all_positions) / len(all_positions))

    def share(labels):
        known = [x for x in labels if x is not None]
        return sum(x == REDUNDANT for x in known) / len(known)

    assert logged["attnpo/oracle/attenuated_redundant_share"] == pytest.approx(share(labels_att))
    assert logged["attnpo/oracle/pos_redundant_share"] == pytest.approx(share(labels_pos))
    assert logged["attnpo/oracle/treated_redundant_share"] == pytest.approx(share(labels_all))
    assert logged["attnpo/oracle/attenuated_labelled"] == sum(x is not None for x in labels_att)
    assert 0 < logged["attnpo/accuracy"] < 1 and logged["attnpo/thinking_tokens"] > 0
    # a window without responses adds nothing; the next log starts a fresh window
    trainer.log({})
    assert "attnpo/share_rescaled" not in trainer.state.log_history[-1]


def test_l1_targets_come_from_the_row_or_a_seeded_draw(setup, tmp_path):
    cfg = setup["config"]("method.rescaling.enabled=false", "method.reward.kind=l1_max")
    problems = training_problems(cfg.data)
    drawn = dataset_rows(problems, cfg, setup["trainer"].processing_class)[0]
    again = dataset_rows(problems, cfg, setup["trainer"].processing_class)[0]
    assert [r["target_length"] for r in drawn] == [r["target_length"] for r in again]
    assert all(100 <= r["target_length"] <= 4000 for r in drawn)
    pinned = [replace(p, meta={"target_length": "777"}) for p in problems]
    rows = dataset_rows(pinned, cfg, setup["trainer"].processing_class)[0]
    assert [r["target_length"] for r in rows] == [777, 777, 777]
    assert rows[0]["prompt"].count("Think for maximum 777 tokens.") == 1
    assert rows[0]["problem"] == problems[0].problem and rows[0]["testbed"]


def test_building_the_trainer_prints_no_rollout_func_notice(setup):
    assert not [m for m in setup["warnings"] if "rollout_func" in m]


def test_histogram_families_go_to_wandb_as_histograms():
    import wandb

    row = {
        "step": 3,
        "attnpo/accuracy": 0.5,
        **{f"attnpo/gamma_hist/{e}": c for e, c in ((0.0, 2), (0.5, 1))},
    }
    out = with_histograms(row)
    assert {k: v for k, v in out.items() if k in row} == row
    hist = out["attnpo/gamma_hist"]
    assert isinstance(hist, wandb.Histogram)
    assert list(hist.histogram) == [2, 1] and list(hist.bins) == [0.0, 0.5, 1.0]
    assert with_histograms({"step": 1, "loss": 0.1}) == {"step": 1, "loss": 0.1}
