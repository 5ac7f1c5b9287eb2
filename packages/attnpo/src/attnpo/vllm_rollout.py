"""GPU rollouts through TRL's vLLM integration: the `rollout.vllm` section and the GRPOConfig keys it sets.

`colocate`: every training process holds its own vLLM engine on its GPU and TRL loads the current weights
into it before each step's rollouts (one node; `gpu_memory_utilization` is the engine's share of the GPU
it shares with training). `server`: one `trl vllm-serve` process on GPUs of its own serves every training
process, and TRL pushes weights to it over NCCL (multi-GPU and multi-node; the server's own flags set its
parallelism and memory, see `experiments/attnpo/accelerate/README.md`).

vLLM seeds each engine per process, not per completion, so unlike the CPU `refill` engine a resumed run
does not resample exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import Field, model_validator

from attncore.config import Config
from attncore.errors import UserError

COLOCATE_KEYS = ("gpu_memory_utilization", "tensor_parallel_size", "max_model_len", "sleep_mode")
SERVER_KEYS = ("server_base_url", "server_host", "server_port", "group_port", "server_timeout_s")


class VLLMRolloutConfig(Config):
    """TRL's vLLM settings under AttnPO names; each maps to one `GRPOConfig` key (`grpo_vllm_args`).

    `importance_sampling` is TRL's correction of the sampler/trainer mismatch; off by default because the
    release trains on its vLLM samples without one (its PPO ratio uses the trainer's own log-probs).
    """

    mode: Literal["colocate", "server"] = "colocate"
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    max_model_len: int | None = Field(None, ge=1, description="prompt + completion tokens the engine holds")
    sleep_mode: bool = Field(False, description="free the engine's memory while the policy trains")
    server_base_url: str | None = Field(None, description="e.g. http://node0:8000; overrides host and port")
    server_host: str = "0.0.0.0"
    server_port: int = Field(8000, ge=1, le=65535)
    group_port: int = Field(51216, ge=1, le=65535, description="NCCL port of the weight updates")
    server_timeout_s: float = Field(240.0, gt=0)
    importance_sampling: bool = False

    @model_validator(mode="after")
    def _keys_of_the_mode(self) -> VLLMRolloutConfig:
        other = SERVER_KEYS if self.mode == "colocate" else COLOCATE_KEYS
        # a key at its default is not stray: a resolved config writes every key and must load again
        fields = type(self).model_fields
        stray = [k for k in other if getattr(self, k) != fields[k].default]
        if stray:
            where = "the server's own flags" if self.mode == "server" else "mode=server"
            raise ValueError(f"{', '.join(stray)} do not apply to mode={self.mode} (they belong to {where})")
        return self


def grpo_vllm_args(cfg: VLLMRolloutConfig | None) -> dict[str, Any]:
    """The `GRPOConfig` keyword arguments for vLLM rollouts (`cfg`), or for none (`None`)."""
    if cfg is None:
        return {"use_vllm": False}
    return {
        "use_vllm": True,
        "vllm_mode": cfg.mode,
        "vllm_gpu_memory_utilization": cfg.gpu_memory_utilization,
        "vllm_tensor_parallel_size": cfg.tensor_parallel_size,
        "vllm_max_model_length": cfg.max_model_len,
        "vllm_enable_sleep_mode": cfg.sleep_mode,
        "vllm_server_base_url": cfg.server_base_url,
        "vllm_server_host": cfg.server_host,
        "vllm_server_port": cfg.server_port,
        "vllm_group_port": cfg.group_port,
        "vllm_server_timeout": cfg.server_timeout_s,
        "vllm_importance_sampling_correction": cfg.importance_sampling,
    }


def require_vllm_gpu() -> None:
    """Refuse, in one line, a vLLM run where vLLM is not installed or no CUDA GPU is visible."""
    if importlib.util.find_spec("vllm") is None:
        raise UserError(
            "rollout.engine=vllm needs the vllm extra (uv sync --extra vllm, GPU nodes); "
            "on CPU use rollout.engine=refill"
        )
    import torch

    if not torch.cuda.is_available():
        raise UserError(
            "rollout.engine=vllm needs a CUDA GPU and none is visible here; on CPU use rollout.engine=refill"
        )
