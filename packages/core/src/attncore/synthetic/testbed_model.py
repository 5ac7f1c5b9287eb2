"""The testbed's mini reasoning model: a small model fine-tuned (TRL `SFTTrainer`) to reason in the R1
format on synthetic problems and to overthink the way the traces do.

The recipe adds `<think>` / `</think>` to the base tokenizer as single added tokens (as in the
DeepSeek-R1-Distill tokenizers), gives it a chat template whose generation prompt opens the thinking,
trains on prompt/completion token ids with the loss on the completion only (the EOS token included,
which matters for SmolLM2, whose pad token is its EOS token), and saves a standard Hugging Face
checkpoint. The checkpoint is built once into the cache under its name (`testbed-mini` for the default
recipe) and loaded by that name through `attncore.models.load_model`. Training checkpoints are kept in a
work folder keyed by the config, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch
from pydantic import Field

from attncore.config import Config, Threads, save_resolved
from attncore.errors import UserError
from attncore.heap import trim_heap
from attncore.models import atomic_build, load_model
from attncore.paths import built_model_dir, cache_dir
from attncore.prompts import PromptConfig, encode_prompt
from attncore.rollout.types import SamplingConfig
from attncore.synthetic.config import ProblemConfig, SyntheticConfig, TraceConfig
from attncore.synthetic.dataset import SyntheticExample, generate_examples
from attncore.think import THINK_OPEN_LINE, THINK_TAGS
from attncore.tracking import TrackingConfig

DEFAULT_NAME = "testbed-mini"
# ChatML without SmolLM2's default system prompt; the generation prompt opens the thinking.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n" + THINK_OPEN_LINE + "{% endif %}"
)
# The prompt the model is trained and evaluated with: the raw question, as in AttnPO's training.
TESTBED_PROMPT = PromptConfig(template="r1", instruction="", examples=[])
# The default recipe's problems: small numbers, difficulty 1-4 in training (2-4 in evaluation). With the
# plans, arithmetic is most of what fails, and values up to 100 leave less of it (32% -> 50%, S9 vs S10,
# which also trains on 100 more traces).
TESTBED_PROBLEMS = ProblemConfig(difficulty=(1, 4), number_range=(2, 12), factor_range=(2, 5), max_value=100)


class TrainingConfig(Config):
    """Optimisation settings (passed to TRL's `SFTConfig`)."""

    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = 0.0
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=16)
    bf16: bool = True
    gradient_checkpointing: bool = Field(
        False,
        description="recompute activations in the backward pass (TRL's default; off: it costs time on CPU)",
    )
    prompt_loss: bool = Field(
        False, description="also train on the prompt tokens (helps models trained from scratch)"
    )
    max_minutes: float | None = Field(37.0, gt=0, description="stop training after this long (resumable)")
    trim_heap_every: int = Field(
        0,
        ge=0,
        description="hand freed heap memory back to the OS every N optimizer steps (glibc; 0: never): "
        "bounds the resident memory that heap fragmentation adds, at a cost in time (RESULTS.md, S14)",
    )
    save_every: int = Field(50, ge=1, description="optimizer steps between resumable checkpoints")
    logging_steps: int = 10


class EvaluationConfig(Config):
    """Held-out evaluation after training: rollouts (R1-style sampling by default, temperature 0.6,
    top-p 0.95, one sample per problem), graded and labelled by the oracle."""

    data: SyntheticConfig = SyntheticConfig(
        count=100,
        seed=10_007,
        id_prefix="testbed-test",
        problem=TESTBED_PROBLEMS.model_copy(update={"difficulty": (2, 4)}),
    )
    sampling: SamplingConfig = SamplingConfig(temperature=0.6, top_p=0.95, max_tokens=512)
    batch_size: int = Field(32, ge=1, description="sequences decoded together")
    refill: bool = Field(
        True, description="refill a finished sequence's slot at once (see attncore.rollout.refill)"
    )


class ScratchModelConfig(Config):
    """A Llama model trained from scratch (`base_model: scratch`), with a byte-level BPE tokenizer
    trained on the generated texts, every digit its own token. head_dim 64 keeps it loadable by vLLM."""

    vocab_size: int = Field(1024, ge=300)
    hidden: int = 256
    layers: int = 8
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 64
    intermediate: int = 768
    tokenizer_examples: int = Field(2000, ge=10, description="training examples the tokenizer learns from")


class TestbedModelConfig(Config):
    """The whole recipe: base model, training data, optimisation, evaluation, where it is saved.

    `base_model` is any model `load_model` accepts, or `scratch` for a new model built from `scratch`.
    """

    __test__ = False  # not a pytest test class, despite its name

    name: str = DEFAULT_NAME
    base_model: str = "smollm2-135m-instruct"
    scratch: ScratchModelConfig = ScratchModelConfig()
    data: SyntheticConfig = SyntheticConfig(
        count=1600,
        seed=1,
        id_prefix="testbed-train",
        # Harder problems more often (difficulty 1-4 weighted 1:2:3:4): 49.3% -> 56.7% over 300 problems,
        # S10 vs S13 (S13 also has the minutes the refilled evaluation freed: 1,600 weighted traces).
        problem=TESTBED_PROBLEMS.model_copy(update={"difficulty_weights": (1.0, 2.0, 3.0, 4.0)}),
        # Testbed v3 (issue 16; v2 is experiments/testbed/v2.yaml, v1 v1.yaml). No slip steps: a small model
        # imitates the deliberate arithmetic errors (12% against 15% accuracy, S1 vs S3). A plan opens every
        # trace (21% -> 32% accuracy, S5 vs S9) as the opening of the first computation, so it is essential by
        # the oracle's rule (v1 made it a redundant step of its own, which the model needs). Redundancy goes
        # where R1-style overthinking puts it (v2): ahead of the work, in the middle, and after the answer
        # (re-verification, recomputation, restating, alternatives); look-backs cite the problem fact as
        # computations do. v3 marks the end of the work (the v2 model reached the gold value and computed on
        # in 57 of its 166 wrong answers): the answer's step says it is the last, later redundant steps say
        # the answer stands; 25-45% redundant steps and recomputation half as often keep the traces short.
        # 44.7% -> 60.3% accuracy on 300 held-out problems (experiments/testbed/RESULTS.md).
        trace=TraceConfig(
            redundancy=(0.25, 0.45),
            plan_first=1.0,
            plan_step="first_compute",
            placement={"opening": 0.3, "middle": 0.3, "after_answer": 0.4},
            cite_facts=True,
            answer_marker=True,
            anchor_after_answer=True,
            role_weights={
                "reverify": 3.0,
                "restate": 2.0,
                "self_check": 2.0,
                "abandoned": 2.0,
                "recompute": 1.0,
                "slip": 0.0,
            },
        ),
    )
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    seed: int = 0
    threads: Threads = None
    tracking: TrackingConfig = TrackingConfig(mode="disabled")


# Trace options added after recipes were built (testbed v3). Off, they leave the traces byte-identical,
# so they leave the recipe's identity alone too: a model built before them still matches its recipe.
LATER_TRACE_OPTIONS = ("answer_marker", "anchor_after_answer")


def config_hash(cfg: TestbedModelConfig) -> str:
    """Identifies a recipe; training checkpoints are only resumed for the same one. The time cap and
    the checkpoint interval are not part of it: a run stopped by its cap resumes under a longer one."""
    payload = cfg.model_dump(
        mode="json",
        exclude={
            "evaluation": True,
            "tracking": True,
            "threads": True,
            "training": {"trim_heap_every", "max_minutes", "save_every"},
        },
    )
    trace = payload["data"]["trace"]
    for option in LATER_TRACE_OPTIONS:
        if not trace[option]:
            del trace[option]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def prepare_tokenizer(tokenizer):
    """Add the think tokens as single (non-special) tokens and install the testbed chat template."""
    tokenizer.add_tokens(list(THINK_TAGS))
    tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resize_for_new_tokens(model, tokenizer) -> None:
    """Grow the embeddings for the added tokens, initialising them to the mean embedding."""
    old = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= old:
        return
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)


def scratch_model(cfg: ScratchModelConfig, examples: list[SyntheticExample]):
    """A randomly initialised Llama and its tokenizer, trained on the prompts and traces of `examples`."""
    from transformers import AutoModelForCausalLM

    from attncore.tiny import tiny_config, train_tokenizer

    texts = [text for e in examples[: cfg.tokenizer_examples] for text in (e.problem.text, e.trace.text)]
    tokenizer = prepare_tokenizer(train_tokenizer(cfg.vocab_size, texts, split_digits=True))
    config = tiny_config(
        "llama",
        len(tokenizer),
        layers=cfg.layers,
        heads=cfg.heads,
        kv_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        hidden=cfg.hidden,
        intermediate=cfg.intermediate,
        bos_id=tokenizer.bos_token_id,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
    )
    return AutoModelForCausalLM.from_config(config), tokenizer


def base_model_and_tokenizer(cfg: TestbedModelConfig, examples: list[SyntheticExample]):
    """The model to fine-tune, with its tokenizer prepared for the testbed format."""
    if cfg.base_model == "scratch":
        return scratch_model(cfg.scratch, examples)
    loaded = load_model(cfg.base_model)
    tokenizer = prepare_tokenizer(loaded.tokenizer)
    resize_for_new_tokens(loaded.model, tokenizer)
    return loaded.model, tokenizer


def completion_text(example: SyntheticExample) -> str:
    """What the model learns to write after the prompt's `<think>\\n`: the trace from its thinking on."""
    return example.trace.text.removeprefix(THINK_OPEN_LINE)


def tokenize_examples(examples: list[SyntheticExample], tokenizer, max_length: int) -> list[dict]:
    """Prompt + completion ids with a completion mask; the completion ends with the EOS token."""
    rows = []
    eos = tokenizer.eos_token_id
    for example in examples:
        _, prompt_ids = encode_prompt(example.to_problem(), tokenizer, TESTBED_PROMPT)
        completion_ids = tokenizer(completion_text(example), add_special_tokens=False)["input_ids"] + [eos]
        ids = prompt_ids + completion_ids
        if len(ids) > max_length:
            continue
        rows.append({"input_ids": ids, "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids)})
    if not rows:
        raise UserError(f"no training example fits training.max_length={max_length}")
    return rows


class _TimeBudget:
    """A `TrainerCallback` that stops training once `max_minutes` of training time have passed."""

    def __new__(cls, max_minutes: float):
        from transformers import TrainerCallback

        class TimeBudget(TrainerCallback):
            def __init__(self) -> None:
                self.started = time.monotonic()

            def on_step_end(self, args, state, control, **kwargs):
                if time.monotonic() - self.started > max_minutes * 60:
                    control.should_training_stop = True
                    control.should_save = True
                return control

        return TimeBudget()


class _HeapTrim:
    """A `TrainerCallback` that hands freed heap pages back to the OS every `every` optimizer steps
    (`attncore.heap`)."""

    def __new__(cls, every: int):
        from transformers import TrainerCallback

        class HeapTrim(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step % every == 0:
                    trim_heap()
                return control

        return HeapTrim()


def supervised_window(labels: torch.Tensor) -> int:
    """How many final positions of a right-padded batch need logits: from the position before its
    first supervised label to the end (at least 1). Prompts are not supervised, so their logits are
    never computed."""
    supervised = (labels[:, 1:] != -100).any(dim=0)
    if not supervised.any():
        return 1
    first = int(supervised.nonzero()[0]) + 1
    return labels.shape[1] - first + 1


def _dense_loss_trainer_class():
    """TRL's `SFTTrainer` with the plain LM head and cross-entropy on CPU.

    TRL computes the loss through a fused, vocabulary-chunked LM head; without a GPU its kernel falls back
    to torch ops and made a SmolLM2 training step about 2x slower than the full-logits loss here, which
    holds the logits of a batch's longest sequences in memory instead. Logits are computed only from the batch's first supervised position on
    (`logits_to_keep`), which skips most prompt positions (`benchmarks/sft_step_cpu.py`). On an
    accelerator the fused head is kept.
    """
    from trl import SFTTrainer

    class DenseLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.args.device.type != "cpu" or return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if model.training else "eval"
            forward_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            loss, correct, n_masked = dense_completion_loss(
                model, forward_inputs, inputs["labels"], num_items_in_batch
            )
            self._metrics[mode]["mean_token_accuracy"].append(correct / max(n_masked, 1))
            if mode == "train":
                self._total_train_tokens += int(inputs["attention_mask"].sum())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return DenseLossSFTTrainer


def dense_completion_loss(
    model, forward_inputs: dict, labels: torch.Tensor, num_items_in_batch: int | None = None
) -> tuple[torch.Tensor, int, int]:
    """Summed next-token cross-entropy over the supervised labels, divided by `num_items_in_batch`
    (the supervised tokens of the whole accumulated batch) or by this batch's own count; returns the
    loss, the correctly predicted supervised tokens (argmax) and their count. Only the positions from
    the first supervised one on get logits."""
    keep = supervised_window(labels)
    logits = model(**forward_inputs, use_cache=False, logits_to_keep=keep).logits[:, :-1].float()
    labels = labels[:, labels.shape[1] - keep + 1 :]
    mask = labels != -100
    n_masked = int(mask.sum())
    count = n_masked if num_items_in_batch is None else num_items_in_batch
    summed = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    with torch.no_grad():
        correct = int(((logits.argmax(-1) == labels) & mask).sum())
    return summed / torch.as_tensor(count).clamp(min=1), correct, n_masked


def train(cfg: TestbedModelConfig, progress: bool = True) -> dict:
    """Fine-tune the base model on generated traces; returns training figures (steps, tokens, time)."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    examples = generate_examples(cfg.data)
    model, tokenizer = base_model_and_tokenizer(cfg, examples)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.train()

    rows = tokenize_examples(examples, tokenizer, cfg.training.max_length)
    dataset = Dataset.from_list(rows)
    work = cache_dir() / "build" / f"{cfg.name}-{config_hash(cfg)}"
    save_resolved(cfg, work)
    t = cfg.training
    args = SFTConfig(
        output_dir=str(work),
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a fraction of the training steps
        weight_decay=t.weight_decay,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_length=t.max_length,
        bf16=t.bf16,
        gradient_checkpointing=t.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="group_by_length",
        completion_only_loss=not t.prompt_loss,
        save_strategy="steps",
        save_steps=t.save_every,
        save_total_limit=1,
        logging_steps=t.logging_steps,
        report_to=["wandb"] if cfg.tracking.mode != "disabled" else [],
        disable_tqdm=not progress,
        seed=cfg.seed,
        dataloader_num_workers=0,
    )
    callbacks = [_TimeBudget(t.max_minutes)] if t.max_minutes else []
    if t.trim_heap_every:
        callbacks.append(_HeapTrim(t.trim_heap_every))
    trainer = _dense_loss_trainer_class()(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks
    )
    resume = any(work.glob("checkpoint-*"))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume or None)
    seconds = time.perf_counter() - started
    model.eval()

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_resolved(cfg, tmp, "testbed.config.yaml")

    final = built_model_dir(cfg.name)
    if final.exists():
        shutil.rmtree(final)
    atomic_build(final, build, {"recipe": config_hash(cfg)})
    tokens = sum(len(r["input_ids"]) for r in rows)
    return {
        "examples": len(rows),
        "train_tokens_per_epoch": tokens,
        "optimizer_steps": result.global_step,
        "train_loss": result.training_loss,
        "train_seconds": seconds,
        "resumed": resume,
        "checkpoint": str(final),
    }
