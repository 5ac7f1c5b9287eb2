"""Rollouts with vLLM (`LLM.generate` on token prompts), for GPU nodes with the `vllm` extra.

Each rollout is its own request with `n=1` and a seed derived from the run seed and the rollout id,
so results do not depend on how vLLM schedules or batches requests, and a resumed run reproduces the
missing rollouts. Completion token ids are vLLM's `CompletionOutput.token_ids`, stored as generated.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

from attncore.config import Config
from attncore.data import Problem
from attncore.errors import UserError
from attncore.models import ModelConfig, load_tokenizer, resolve_model_source
from attncore.prompts import PromptConfig, encode_prompt
from attncore.rollout.types import Rollout, SamplingConfig, derive_seed, rollout_id


class VLLMOptions(Config):
    """Engine settings passed to `vllm.LLM`."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    max_model_len: int | None = None
    enforce_eager: bool = False
    chunk_size: int = 1024  # requests per `generate` call, so progress and shards advance


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class VLLMEngine:
    """An `Engine` on vLLM; it schedules its own batches."""

    name = "vllm"

    def __init__(self, model: ModelConfig, prompt: PromptConfig, options: VLLMOptions | None = None):
        if not vllm_available():
            raise UserError("engine 'vllm' needs the vllm extra: uv sync --extra vllm (GPU nodes)")
        if model.keep_layers is not None:
            raise UserError(
                "model.keep_layers is applied by the HF loader; use engine=hf (or save the cut model)"
            )
        from vllm import LLM

        self.options = options or VLLMOptions()
        self.model_name = model.name
        source, _ = resolve_model_source(model.name)  # named models and GGUF files become local folders
        self.tokenizer = load_tokenizer(source, model.revision)
        self.prompt = prompt
        self.llm = LLM(
            model=source,
            revision=model.revision,
            dtype=model.dtype,
            tensor_parallel_size=self.options.tensor_parallel_size,
            gpu_memory_utilization=self.options.gpu_memory_utilization,
            max_model_len=self.options.max_model_len,
            enforce_eager=self.options.enforce_eager,
        )

    def reconfigured(self, prompt: PromptConfig, batch_size: int, refill: bool) -> VLLMEngine:
        view = copy.copy(self)  # shares the vLLM engine, which holds the weights
        view.prompt = prompt
        return view

    def generate(
        self,
        problems: Sequence[Problem],
        sampling: SamplingConfig,
        skip: set[str] | None = None,
        on_batch: Callable[[list[Rollout]], None] | None = None,
    ) -> list[Rollout]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        skip = skip or set()
        todo = [(p, i) for p in problems for i in range(sampling.n) if rollout_id(p.id, i) not in skip]
        encoded = {p.id: encode_prompt(p, self.tokenizer, self.prompt) for p, _ in todo}
        results: list[Rollout] = []
        for start in range(0, len(todo), self.options.chunk_size):
            chunk = todo[start : start + self.options.chunk_size]
            ids = [rollout_id(p.id, i) for p, i in chunk]
            seeds = [derive_seed(sampling.seed, rid) for rid in ids]
            params = [
                SamplingParams(
                    n=1,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    top_k=sampling.top_k or -1,
                    max_tokens=sampling.max_tokens,
                    seed=seed,
                    skip_special_tokens=True,
                )
                for seed in seeds
            ]
            prompts = [TokensPrompt(prompt_token_ids=encoded[p.id][1]) for p, _ in chunk]
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            rollouts = []
            for seed, (p, i), out in zip(seeds, chunk, outputs, strict=True):
                completion = out.outputs[0]
                reason = "length" if completion.finish_reason == "length" else "stop"
                generated = (list(completion.token_ids), completion.text, reason)
                rollouts.append(
                    Rollout.sampled(p, i, encoded[p.id], generated, self.model_name, seed, sampling)
                )
            if on_batch is not None:
                on_batch(rollouts)
            results.extend(rollouts)
        return results
