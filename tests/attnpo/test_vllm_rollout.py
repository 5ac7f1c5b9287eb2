"""GPU rollouts through TRL's vLLM integration, checked on CPU: what TRL's GRPOConfig receives for each
mode, the one-line refusals, and that TRL's engines read the prompt ids AttnPO encoded (vLLM itself runs
in benchmarks/gpu_check.sh on a GPU node)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from tokenizers import processors

from attncore.config import load_config, save_resolved
from attncore.data import Problem
from attncore.models import load_tokenizer
from attncore.prompts import PromptConfig, encode_prompt
from attncore.tiny import make_tiny_model
from attnpo.train import TrainConfig, grpo_args, run_train

BASE = ["method.rescaling.enabled=false", "tracking.mode=disabled"]


def config(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, None, [*BASE, *overrides])


def vllm_config(*overrides: str) -> TrainConfig:
    return config("rollout.engine=vllm", "model.device=cuda", *overrides)


def test_colocate_settings_reach_grpo_config():
    cfg = vllm_config(
        "rollout.vllm.gpu_memory_utilization=0.45",
        "rollout.vllm.tensor_parallel_size=2",
        "rollout.vllm.max_model_len=17408",
        "rollout.vllm.sleep_mode=true",
        "rollout.temperature=0.9",
    )
    args = grpo_args(cfg, world_size=2, progress=False)
    assert (args.use_vllm, args.vllm_mode) == (True, "colocate")
    assert args.vllm_gpu_memory_utilization == 0.45
    assert args.vllm_tensor_parallel_size == 2
    assert args.vllm_max_model_length == 17408
    assert args.vllm_enable_sleep_mode is True
    assert args.vllm_importance_sampling_correction is False  # the release trains without a correction
    assert args.temperature == 0.9 and args.per_device_train_batch_size == 32  # 8 x 8 over 2 processes


def test_server_settings_reach_grpo_config():
    cfg = vllm_config(
        "rollout.vllm.mode=server",
        "rollout.vllm.server_host=10.0.0.7",
        "rollout.vllm.server_port=8123",
        "rollout.vllm.group_port=51300",
        "rollout.vllm.server_timeout_s=600",
        "rollout.vllm.importance_sampling=true",
    )
    args = grpo_args(cfg, world_size=1, progress=False)
    assert (args.use_vllm, args.vllm_mode) == (True, "server")
    assert (args.vllm_server_host, args.vllm_server_port, args.vllm_group_port) == ("10.0.0.7", 8123, 51300)
    assert args.vllm_server_timeout == 600.0 and args.vllm_server_base_url is None
    assert args.vllm_importance_sampling_correction is True
    url = vllm_config("rollout.vllm.mode=server", "rollout.vllm.server_base_url=http://node0:8000")
    assert grpo_args(url, 1, False).vllm_server_base_url == "http://node0:8000"


def test_cpu_engines_leave_vllm_off():
    for engine in ("refill", "trl"):
        cfg = config(f"rollout.engine={engine}")
        assert grpo_args(cfg, 1, False).use_vllm is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.engine=vllm"], "rollout.engine=vllm needs model.device=cuda (or auto); it is cpu"),
        (["rollout.vllm.mode=server"], "the vllm section applies to engine=vllm only (engine is refill)"),
        (
            ["rollout.engine=vllm", "model.device=cuda", "rollout.vllm.server_port=9000"],
            "server_port do not apply to mode=colocate",
        ),
        (
            ["rollout.engine=vllm", "model.device=auto", "rollout.vllm.mode=server",
             "rollout.vllm.gpu_memory_utilization=0.9"],
            "gpu_memory_utilization do not apply to mode=server (they belong to the server's own flags)",
        ),
        (["rollout.engine=vllm", "model.device=cuda", "rollout.vllm.gpu_memory_utilization=1.5"], "1.5"),
    ],
)  # fmt: skip
def test_bad_vllm_settings_are_one_line_errors(attnpo_cli, overrides, message):
    code, _, err = attnpo_cli("train", *BASE, *overrides)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "overrides",
    [[], ["rollout.engine=vllm", "model.device=cuda"],
     ["rollout.engine=vllm", "model.device=cuda", "rollout.vllm.mode=server", "rollout.vllm.server_port=9000"]],
)  # fmt: skip
def test_a_resolved_config_loads_again(overrides, tmp_path):
    """`config.resolved.yaml` writes every vllm key at its default; the mode checks must accept it."""
    cfg = config(*overrides)
    path = save_resolved(cfg, tmp_path)
    again = load_config(TrainConfig, path)
    assert again == cfg
    assert again.rollout.vllm.server_port == (9000 if "rollout.vllm.server_port=9000" in overrides else 8000)


def test_vllm_where_it_cannot_run_is_refused_before_any_work(attnpo_cli, tmp_path):
    if importlib.util.find_spec("vllm") is None:
        expected = "rollout.engine=vllm needs the vllm extra (uv sync --extra vllm, GPU nodes)"
    elif not torch.cuda.is_available():
        expected = "rollout.engine=vllm needs a CUDA GPU and none is visible here"
    else:
        pytest.skip("vLLM and a GPU are both here: benchmarks/gpu_check.sh runs this path")
    out = tmp_path / "run"
    code, _, err = attnpo_cli("train", *BASE, "rollout.engine=vllm", "model.device=cuda", f"out={out}")
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # refused before writing anything


@pytest.fixture
def bos_adding_model(tmp_path):
    """A tiny qwen2 whose chat template writes BOS and whose tokenizer adds another to any text it encodes,
    as DeepSeek-R1-Distill's does."""
    folder = make_tiny_model(tmp_path / "model", "qwen2")
    tok = load_tokenizer(str(folder))
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, bos)]
    )
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    tok.save_pretrained(folder)
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"id": "p0", "problem": "What is 2 + 3?", "answer": "5"}) + "\n")
    return folder, problems


def test_trl_engines_read_the_encoded_prompt_ids(bos_adding_model, tmp_path):
    folder, problems = bos_adding_model
    tok = load_tokenizer(str(folder))
    text, want = encode_prompt(Problem("p0", "What is 2 + 3?", "5", "t"), tok, PromptConfig(template="r1"))
    assert tok(text)["input_ids"][:2] == [tok.bos_token_id] * 2  # TRL's own tokenization would double it
    assert want.count(tok.bos_token_id) == 1
    cfg = load_config(
        TrainConfig,
        None,
        [*BASE, f"model.name={folder}", f"data.file={problems}", "rollout.engine=trl", "rollout.max_tokens=4",
         "prompts_per_step=1", "group_size=2", "steps=1", "grading.workers=1", f"out={tmp_path / 'run'}"],
    )  # fmt: skip
    seen = []
    run_train(cfg, progress=False, on_step_batch=lambda trainer, batch: seen.append(batch.inputs))
    assert len(seen) == 1
    ids, mask = seen[0]["prompt_ids"], seen[0]["prompt_mask"]
    assert [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)] == [want, want]
