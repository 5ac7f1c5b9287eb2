"""Prompt templates: how a problem becomes the text a model continues.

- `r1`: DeepSeek-R1 style. The question goes through the model's chat template; the model thinks,
  closes the thinking with `</think>` and puts the final answer in `\\boxed{}`. When the template's
  generation prompt does not already open the thinking (R1-Distill templates end with `<think>\\n`),
  `open_think` appends it so every completion has the same shape.
- `plain`: a step-by-step instruction that small instruct models such as SmolLM2 follow, ending with a
  GSM8K-style `#### N` line. One worked example as an earlier chat turn is what makes SmolLM2-135M
  use the `####` line (measured: 6 of 8 GSM8K answers ended in `#### N` with it; with the example
  inlined in the user turn it continued with invented questions instead).

- `molsaki`: a distilled MoLSAKI student's rationale task, the canonical text up to the rationale
  (`Question: {q}\nRationale:`, `attncore.store.config.TextFormat`) after the tokenizer's special
  prefix, never through a chat template: exactly what the student was trained to continue.
- `molsaki_answer`: the same student's answer task (`Question: {q}\nAnswer:`, the prefix
  `attncore.store.config.ANSWER_PREFIX`): what a vanilla fine-tuned student (answers only, no
  rationale) was trained to continue; graded by the last number (`grading.mode: math`).

Tokenizers without a chat template (base models) get a `Question: ... Answer:` rendering.
"""

from __future__ import annotations

from typing import Literal

from attncore.config import Config
from attncore.data import Problem
from attncore.think import THINK_OPEN, THINK_OPEN_LINE

R1_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PLAIN_INSTRUCTION = (
    "Solve the math word problem. Reason step by step, then write the final answer "
    "as a number on its own line in the form '#### <number>'."
)


STUDENT_TEMPLATES = ("molsaki", "molsaki_answer")
"""The distilled student's own task formats: rendered as plain text, never through a chat template."""


class Example(Config):
    """A worked example shown to the model as an earlier chat turn."""

    question: str
    answer: str


PLAIN_EXAMPLE = Example(
    question="A baker makes 48 rolls and packs them in bags of 6. He sells 5 bags. How many bags are left?",
    answer="The baker fills 48 / 6 = 8 bags.\nHe sells 5 bags, so 8 - 5 = 3 bags are left.\n#### 3",
)


class PromptConfig(Config):
    """Which template renders problems; `instruction` replaces the template's default instruction and
    `examples` the default worked examples (one for `plain`, none for `r1`)."""

    template: Literal["r1", "plain", "molsaki", "molsaki_answer"] = "plain"
    instruction: str | None = None
    examples: list[Example] | None = None
    system: str | None = None
    open_think: bool = True


def _instruction(cfg: PromptConfig) -> str:
    if cfg.instruction is not None:
        return cfg.instruction
    return R1_INSTRUCTION if cfg.template == "r1" else PLAIN_INSTRUCTION


def _examples(cfg: PromptConfig) -> list[Example]:
    if cfg.examples is not None:
        return cfg.examples
    return [PLAIN_EXAMPLE] if cfg.template == "plain" else []


def user_message(question: str, cfg: PromptConfig) -> str:
    """The user turn: for `r1` the question then the instruction; for `plain` the instruction first."""
    instruction = _instruction(cfg)
    if not instruction:
        return question
    if cfg.template == "r1":
        return f"{question}\n{instruction}"
    return f"{instruction}\n\nQuestion: {question}"


def chat_messages(problem: Problem, cfg: PromptConfig) -> list[dict[str, str]]:
    """System turn (if any), worked examples as earlier turns, then the problem."""
    messages = [{"role": "system", "content": cfg.system}] if cfg.system else []
    for example in _examples(cfg):
        messages.append({"role": "user", "content": user_message(example.question, cfg)})
        messages.append({"role": "assistant", "content": example.answer})
    messages.append({"role": "user", "content": user_message(problem.problem, cfg)})
    return messages


def render_prompt(problem: Problem, tokenizer, cfg: PromptConfig) -> str:
    """The full prompt text (special tokens included) the model continues."""
    if cfg.template in STUDENT_TEMPLATES:
        from attncore.store.config import ANSWER_PREFIX, TextFormat  # store.config imports this module

        text_format = TextFormat()
        if cfg.template == "molsaki_answer":
            return f"{text_format.question_prefix}{problem.problem}{ANSWER_PREFIX.rstrip(' ')}"
        return text_format.render(problem.problem, "")[0][: text_format.prompt_length(problem.problem)]
    if getattr(tokenizer, "chat_template", None):
        messages = chat_messages(problem, cfg)
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        instruction = _instruction(cfg)
        head = f"{instruction}\n\n" if instruction else ""
        shots = "".join(f"Question: {e.question}\nAnswer: {e.answer}\n\n" for e in _examples(cfg))
        text = f"{head}{shots}Question: {problem.problem}\nAnswer:" + (
            " " if cfg.template == "plain" else "\n"
        )
    if cfg.template == "r1" and cfg.open_think and not text.rstrip().endswith(THINK_OPEN):
        text += THINK_OPEN_LINE
    return text


def encode_prompt(problem: Problem, tokenizer, cfg: PromptConfig) -> tuple[str, list[int]]:
    """Prompt text and its token ids; the chat template already holds the special tokens, other prompts
    get the tokenizer's own (BOS)."""
    text = render_prompt(problem, tokenizer, cfg)
    chat = getattr(tokenizer, "chat_template", None) and cfg.template not in STUDENT_TEMPLATES
    ids = tokenizer(text, add_special_tokens=not chat)["input_ids"]
    return text, list(ids)
