"""Shared setup of the AttnPO benchmarks (`attnpo_step.py`, `attnpo_rollout.py`): their common options,
the model and testbed problems with their reasoning traces, a `TrainConfig`, trainers built as
`attnpo.train.run_train` builds them (its GRPOConfig, dataset, prompt ids and hooks) but writing nothing
(no checkpoints, no logs), and the line that says where a run was measured."""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from attncore.config import load_config
from attncore.data import Problem
from attncore.grading import Grader, GradingMode
from attncore.models import LoadedModel, load_model
from attncore.prompts import encode_prompt
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.dataset import generate_examples
from attncore.synthetic.testbed_model import TESTBED_PROMPT
from attncore.think import THINK_OPEN_LINE
from attnpo.train import TrainConfig, grpo_settings


def bench_arguments(doc: str, prompts: int, rounds: int) -> argparse.ArgumentParser:
    """The options both benchmarks take (model, problems, group size, rounds, threads), with the script's
    default problem and round counts; each script adds the options of what it measures."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=prompts)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--threads", type=int, default=2)
    return parser


class BenchInputs(NamedTuple):
    """The model, `--prompts` testbed examples (problems with their traces), their problems and prompt ids."""

    loaded: LoadedModel
    examples: list
    problems: list[Problem]
    prompt_ids: dict[str, list[int]]


def bench_inputs(args: argparse.Namespace) -> BenchInputs:
    """Torch on `--threads` threads, TRL's experimental-feature notice silenced, the model loaded and the
    testbed problems encoded as `run_train` encodes them."""
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    loaded = load_model(args.model)
    examples = testbed_examples(args.prompts)
    problems = [e.to_problem() for e in examples]
    return BenchInputs(loaded, examples, problems, encoded_prompts(problems, loaded.tokenizer))


def machine_line(threads: int, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    """Where a run was measured: processor, cores, threads, torch, and the 1-minute load average before
    and after (other jobs inflate wall time)."""
    return (
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads={threads}; "
        f"torch {torch.__version__}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )


def bench_config(
    model: str, prompts: int, group: int, max_tokens: int, steps: int, engine: str = "refill"
) -> TrainConfig:
    """AttnPO defaults on `prompts` x `group` rollouts per step, three random heads, Pos-Adv ungated
    (curriculum 0) and no difficulty gate, so every correct multi-step response is rescaled."""
    return load_config(
        TrainConfig,
        None,
        [
            f"model.name={model}", f"prompts_per_step={prompts}", f"group_size={group}",
            f"rollout.max_tokens={max_tokens}", f"rollout.engine={engine}", f"steps={steps}",
            "method.heads.kind=random", "method.heads.n=3", "method.rescaling.curriculum_steps=0",
            "method.rescaling.difficulty_aware=false", "grading.workers=1", "tracking.mode=disabled",
        ],
    )  # fmt: skip


def testbed_examples(count: int, seed: int = 0):
    """Testbed problems (generated, no data files) with their reasoning traces."""
    return generate_examples(SyntheticConfig(count=count, seed=seed))


def encoded_prompts(problems: list[Problem], tok) -> dict[str, list[int]]:
    """Testbed-prompt text -> token ids, as `run_train` encodes them."""
    return dict(encode_prompt(p, tok, TESTBED_PROMPT) for p in problems)


def replayed_completions(example, group: int) -> list[str]:
    """`group` responses to one testbed problem built from its trace: response j drops its j // 2-th
    middle paragraph (lengths differ) and, for odd j, ends on a wrong answer (so the group mixes right
    and wrong, and correct responses carry several steps to rescale)."""
    text = example.trace.text.removeprefix(THINK_OPEN_LINE)
    paragraphs = text.split("\n\n")
    answer = str(example.problem.answer)
    out = []
    for j in range(group):
        kept = [p for i, p in enumerate(paragraphs) if i != 1 + j // 2 or i == len(paragraphs) - 1]
        response = "\n\n".join(kept)
        if j % 2:
            head, _, tail = response.rpartition(answer)
            response = head + str(int(answer) + 1) + tail
        out.append(response)
    return out


def replay_rollout(completions: dict[str, list[list[int]]]) -> Callable[[list, Any], dict[str, Any]]:
    """A TRL `rollout_func` that answers each prompt text with its fixed completions, in order, so that
    every trainer and every step sees the same batch."""

    def rollout(prompts: list, trainer: Any) -> dict[str, Any]:
        served: dict[str, int] = {}
        out = []
        for p in prompts:
            out.append(completions[p][served.get(p, 0)])
            served[p] = served.get(p, 0) + 1
        ids = trainer.bench_prompt_ids
        return {"prompt_ids": [ids[p] for p in prompts], "completion_ids": out, "logprobs": None}

    return rollout


def _quiet(trainer, prompt_ids: dict[str, list[int]]):
    """The trainer without its per-step log printer (the benchmarks print their own lines)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.bench_prompt_ids = prompt_ids
    return trainer


def _args(cfg: TrainConfig):
    from trl import GRPOConfig

    settings = grpo_settings(cfg, world_size=1, progress=False)
    settings.update(output_dir=tempfile.mkdtemp(prefix="attnpo-bench-"), save_strategy="no", report_to=[])
    return GRPOConfig(**settings)


def _dataset(problems: list[Problem], prompt_ids: dict[str, list[int]], tok):
    import datasets

    texts = {p.id: encode_prompt(p, tok, TESTBED_PROMPT)[0] for p in problems}
    return datasets.Dataset.from_list(
        [{"prompt": texts[p.id], "answer": p.answer, "problem_id": p.id} for p in problems]
    )


def attnpo_trainer(
    cfg: TrainConfig,
    loaded: LoadedModel,
    problems: list[Problem],
    grader: Grader,
    rollout_func: Callable | None,
    on_step_batch: Callable | None = None,
    callbacks: list | None = None,
):
    """An `AttnPOTrainer` on a copy of the model, as `run_train` makes it."""
    from attnpo.trainer import AttnPOTrainer

    tok = loaded.tokenizer
    text = loaded.model.config.get_text_config()
    prompt_ids = encoded_prompts(problems, tok)
    trainer = AttnPOTrainer(
        model=copy.deepcopy(loaded.model),
        args=_args(cfg),
        train_dataset=_dataset(problems, prompt_ids, tok),
        processing_class=tok,
        rollout_func=rollout_func,
        callbacks=callbacks,
        method=cfg.method,
        heads=cfg.method.heads.resolve(text.num_hidden_layers, text.num_attention_heads),
        segmenter=cfg.segmenter,
        grader=grader,
        on_step_batch=on_step_batch,
        prompt_ids=prompt_ids,
    )
    return _quiet(trainer, prompt_ids)


def grpo_trainer(
    cfg: TrainConfig,
    loaded: LoadedModel,
    problems: list[Problem],
    grader: Grader,
    rollout_func: Callable | None,
    callbacks: list | None = None,
):
    """TRL's plain `GRPOTrainer` with the same GRPOConfig and a correctness reward graded by the same
    rule: advantages r - group mean (`scale_rewards="none"`), one per response, no step scores."""
    from trl import GRPOTrainer

    def correct(prompts: list, completions: list, answer: list[str], **_: Any) -> list[float]:
        return [float(r.correct) for r in grader.grade(list(completions), list(answer), GradingMode.ATTNPO)]

    tok = loaded.tokenizer
    prompt_ids = encoded_prompts(problems, tok)
    trainer = GRPOTrainer(
        model=copy.deepcopy(loaded.model),
        reward_funcs=[correct],
        args=_args(cfg),
        train_dataset=_dataset(problems, prompt_ids, tok),
        processing_class=tok,
        rollout_func=rollout_func,
        callbacks=callbacks,
    )
    return _quiet(trainer, prompt_ids)
