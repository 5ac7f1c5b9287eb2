"""The scale-out files under experiments/attnpo/: accelerate configs through accelerate's own loader and
launch validation, and the 8-GPU paper recipes through the real config loaders (nothing runs a GPU)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType
from accelerate.utils.launch import prepare_multi_gpu_env
from trl import GRPOConfig

from attncore.config import load_config
from attncore.eval.config import SuiteConfig
from attnpo.artifact import read_artifact
from attnpo.find_heads import FindHeadsConfig
from attnpo.train import TrainConfig, grpo_settings

ROOT = Path(__file__).resolve().parents[2]
ATTNPO = ROOT / "experiments" / "attnpo"
ACCELERATE = ATTNPO / "accelerate"
RECIPES = {"ds-r1-distill-qwen-1.5b": (28, 12), "ds-r1-distill-qwen-7b": (28, 28)}  # layers, query heads


def launch_args(config: Path, *flags: str):
    """What `accelerate launch --config_file config ... -m attnpo train` would run with."""
    parsed = launch_command_parser().parse_args(
        ["--config_file", str(config), *flags, "-m", "attnpo", "train", "--config", "x.yaml"]
    )
    return _validate_launch_command(parsed)[0]


def test_the_accelerate_folder_holds_the_three_configs():
    assert sorted(p.name for p in ACCELERATE.glob("*.yaml")) == [
        "fsdp.yaml",
        "zero3-multinode.yaml",
        "zero3.yaml",
    ]


@pytest.mark.parametrize("name", ["zero3.yaml", "zero3-multinode.yaml"])
def test_zero3_configs(name):
    config = load_config_from_file(str(ACCELERATE / name))
    assert config.distributed_type == DistributedType.DEEPSPEED
    assert config.deepspeed_config["zero_stage"] == 3 and config.mixed_precision == "bf16"
    flags = ["--machine_rank", "1", "--main_process_ip", "10.0.0.1"] if "multinode" in name else []
    args = launch_args(ACCELERATE / name, *flags)
    assert args.use_deepspeed and not args.use_fsdp
    assert (args.zero_stage, args.offload_param_device, args.offload_optimizer_device) == (3, "none", "none")
    assert args.zero3_init_flag is True and args.zero3_save_16bit_model is True
    machines = 2 if "multinode" in name else 1
    assert (args.num_machines, args.num_processes) == (machines, 8 * machines)


def test_fsdp_config():
    config = load_config_from_file(str(ACCELERATE / "fsdp.yaml"))
    assert config.distributed_type == DistributedType.FSDP
    env = prepare_multi_gpu_env(launch_args(ACCELERATE / "fsdp.yaml"))
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["FSDP_RESHARD_AFTER_FORWARD"] == "true"  # full sharding
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"  # checkpoints the validation suite loads
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    # transformers would leave the weights on the meta device in every process but the first, which
    # `attnpo train`'s own loader then cannot move to its GPU
    assert env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "false"


@pytest.mark.parametrize("name", sorted(p.name for p in ACCELERATE.glob("*.yaml")))
def test_nested_keys_are_launch_arguments(name):
    """accelerate copies nested keys onto its launch arguments without checking them: a misspelt key
    would be silently ignored, so each must name a real argument."""
    known = vars(launch_command_parser().parse_args(["x.py"]))
    config = load_config_from_file(str(ACCELERATE / name))
    for key in [*config.deepspeed_config, *config.fsdp_config]:
        assert key in known, key


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_is_the_paper_setup(recipe):
    folder = ATTNPO / recipe
    cfg = load_config(TrainConfig, folder / "train.yaml")
    assert (cfg.prompts_per_step, cfg.group_size, cfg.rollout.max_tokens) == (128, 8, 16384)
    assert cfg.optim.lr == 2e-6 and cfg.data.benchmark.hub_id == "agentica-org/DeepScaleR-Preview-Dataset"
    assert (cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.top_k) == (1.0, 1.0, 0)
    assert cfg.method.reward.kind == "traineff" and cfg.method.reward.alpha == 0.2
    assert cfg.method.advantage.kind == "rloo" and cfg.method.rescaling.enabled
    assert cfg.prompt.template == "r1" and cfg.prompt.instruction == ""
    assert cfg.rollout.engine == "vllm" and cfg.rollout.vllm.mode == "colocate"
    assert cfg.rollout.vllm.max_model_len == 1024 + 16384
    # GRPOConfig itself refuses bf16 without a GPU: check the settings it would receive
    args = grpo_settings(cfg, world_size=8, progress=False)
    per_gpu = 128 * 8 // 8
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == per_gpu
    assert args["steps_per_generation"] == args["gradient_accumulation_steps"]  # one update per batch
    assert (args["beta"], args["epsilon"], args["delta"]) == (0.0, 0.2, 3.0)
    assert (args["learning_rate"], args["lr_scheduler_type"]) == (2e-6, "constant")
    assert args["bf16"] and not args["use_cpu"] and "gradient_checkpointing" not in args
    assert GRPOConfig.__dataclass_fields__["gradient_checkpointing"].default is True
    assert args["use_vllm"] and args["vllm_mode"] == "colocate"
    # the multi-node form of the README: the whole vllm section replaced by a server one
    served = load_config(
        TrainConfig, folder / "train.yaml", ["rollout.vllm={mode: server, server_host: 10.0.0.3}"]
    )
    args = grpo_settings(served, world_size=16, progress=False)
    assert (args["vllm_mode"], args["vllm_server_host"]) == ("server", "10.0.0.3")
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 1024 // 16


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_heads_resolve(recipe):
    cfg = load_config(TrainConfig, ATTNPO / recipe / "train.yaml")
    layers, heads = RECIPES[recipe]
    path = Path(cfg.method.heads.path)
    assert not path.is_absolute()  # relative to the repository root, where launch.sh runs
    if recipe.endswith("1.5b"):
        cfg.method.heads.path = str(ROOT / path)
        assert cfg.method.heads.resolve(layers, heads) == [(16, 2), (20, 9), (23, 2)]
        assert read_artifact(ROOT / path).model == cfg.model.name
    else:  # no released 7B heads: the path is where the 7B discovery config writes them
        discovery = load_config(FindHeadsConfig, ATTNPO / "heads" / "deepseek-r1-distill-qwen-7b.yaml")
        assert Path(discovery.out) / "heads.yaml" == path
        assert discovery.model.name == cfg.model.name
        launch = (ATTNPO / recipe / "launch.sh").read_text()
        assert "deepseek-r1-distill-qwen-7b.yaml" in launch


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_validation_suite(recipe):
    suite = load_config(SuiteConfig, ATTNPO / recipe / "validation.yaml")
    train = load_config(TrainConfig, ATTNPO / recipe / "train.yaml")
    assert {name: b.sampling.n for name, b in suite.benchmarks.items()} == {
        "gsm8k": 4,
        "math500": 4,
        "aime24": 16,
    }
    for label in suite.benchmarks:
        sampling = suite.sampling_for(label)
        assert (sampling.temperature, sampling.top_p, sampling.max_tokens) == (0.6, 0.95, 16384)
    assert suite.model.name == train.model.name and suite.prompt == train.prompt


def test_launch_scripts_name_files_that_exist():
    runner = (ATTNPO / "gpu-recipe.sh").read_text()
    configs = re.findall(r"--config_file (\S+)", runner)
    assert configs == ["experiments/attnpo/accelerate/fsdp.yaml"]
    assert load_config_from_file(str(ROOT / configs[0])).num_processes == 8
    for recipe in RECIPES:
        assert '"$here/../gpu-recipe.sh" "$here"' in (ATTNPO / recipe / "launch.sh").read_text()


def test_micro_batches_must_divide_each_process_rollouts():
    from attncore.errors import UserError

    cfg = load_config(
        TrainConfig, None, ["method.rescaling.enabled=false", "prompts_per_step=4", "micro_batch_size=3"]
    )
    with pytest.raises(UserError, match="micro_batch_size=3 does not divide the 16 rollouts of each of 2"):
        grpo_settings(cfg, world_size=2, progress=False)
    cfg.micro_batch_size = 4
    args = grpo_settings(cfg, world_size=2, progress=False)
    assert (args["per_device_train_batch_size"], args["gradient_accumulation_steps"]) == (4, 4)


def test_micro_batches_accumulate_into_one_step(tiny_model_dir, tmp_path):
    """4 rollouts per step in micro-batches of 2: two loss forwards, one optimizer step."""
    import json

    from attnpo.train import run_train

    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        "".join(json.dumps({"id": f"p{i}", "problem": f"What is 2 + {i}?", "answer": str(2 + i)}) + "\n"
                for i in range(2))
    )  # fmt: skip
    cfg = load_config(
        TrainConfig,
        None,
        [
            "method.rescaling.enabled=false", "tracking.mode=disabled", f"model.name={tiny_model_dir('qwen2')}",
            f"data.file={problems}", "rollout.max_tokens=4", "prompts_per_step=2", "group_size=2",
            "micro_batch_size=2", "steps=1", "grading.workers=1", f"out={tmp_path / 'run'}",
        ],
    )  # fmt: skip
    seen = []
    result = run_train(cfg, progress=False, on_step_batch=lambda t, b: seen.append(b))
    assert result.steps == 1
    assert [(b.global_step, len(b.inputs["completion_ids"])) for b in seen] == [(1, 2), (1, 2)]


def test_vllm_server_script_flags_are_trl_vllm_serve_arguments():
    """The flags vllm-server.sh passes parse as `trl vllm-serve` arguments (none left over) and become
    the vLLM server command TRL's trainers expect."""
    import shlex

    from trl.scripts.vllm_serve import build_command, make_parser

    script = (ACCELERATE / "vllm-server.sh").read_text().replace("\\\n", " ")
    line = next(line for line in script.splitlines() if line.startswith("exec "))
    words = shlex.split(line.split("trl vllm-serve", 1)[1])
    assert words[-1] == "$@"
    words = ["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" if w == "$model" else w for w in words[:-1]]
    served, extra = make_parser().parse_args_and_config(args=words, return_remaining_strings=True)
    assert extra == []
    assert (served.data_parallel_size, served.tensor_parallel_size, served.port) == (8, 1, 8000)
    assert served.max_model_len == 1024 + 16384
    command = build_command(served)
    assert command[command.index("--logprobs-mode") + 1] == "processed_logprobs"


def test_each_process_loads_onto_its_own_gpu(monkeypatch):
    from attnpo.train import process_device

    assert process_device("cuda") == "cuda"  # one process: as configured
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert process_device("cuda") == "cuda:3"
    assert process_device("cuda:1") == "cuda:1"  # an explicit index is kept
    assert process_device("cpu") == "cpu"
    assert process_device("auto") == ("cuda:3" if torch.cuda.is_available() else "cpu")
