"""`cotattn train` on tiny random models: the training step's loss equals the pure functions on that
batch (eager attention, hooks on v_proj), every arm; end to end with the deployed student, the router
checkpointed and a resumed run equal to an uninterrupted one; config errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from attncore.aggregate import stepwise_attention
from attncore.errors import UserError
from attncore.models import load_tokenizer
from cotattn.attention_loss import row_entropy, stepwise_kl
from cotattn.batch import collate
from cotattn.cli import main
from cotattn.config import ArmConfig, TeacherTargetsConfig, TrainConfig
from cotattn.layer_mix import mix_layers
from cotattn.mmi import mmi_loss
from cotattn.objective import combined_loss
from cotattn.router import MoLRouter
from cotattn.teacher_targets import run_teacher_targets
from cotattn.train import (
    CHECKPOINTS_DIR,
    STUDENT_DIR,
    SUMMARY_NAME,
    build_items,
    open_teacher,
    read_rationales,
    run_training,
    value_width,
)
from cotattn.trainer import ROUTER_FILE, DistillTrainer, predicting_positions

ARMS = {
    "molsaki": {"method": "molsaki"},
    "sl": {"method": "sl", "teacher_layer": 1, "student_layer": -1},
    "dss": {"method": "dss"},
    "mmi": {"method": "mmi"},
    "vanilla": {"method": "vanilla"},
}


@pytest.fixture(scope="module")
def teacher_dir(tiny_model_dir, tmp_path_factory):
    """Teacher targets of the tiny llama on the shared rationales file."""
    from attncore.data import write_rows

    from .conftest import RATIONALE_ROWS

    folder = tmp_path_factory.mktemp("teacher")
    write_rows(RATIONALE_ROWS, folder / "rationales.jsonl")
    cfg = TeacherTargetsConfig(
        teacher={"name": str(tiny_model_dir("llama")), "device": "cpu"},
        input={"path": str(folder / "rationales.jsonl")},
        out=str(folder / "t"),
    )
    run_teacher_targets(cfg, progress=False)
    return folder


def train_config(teacher_dir, student_dir, out, arm: dict, **optim) -> TrainConfig:
    attention = arm["method"] in ("molsaki", "sl")
    return TrainConfig(
        student={"name": str(student_dir)},
        rationales=str(teacher_dir / "rationales.jsonl"),
        teacher_targets=str(teacher_dir / "t") if attention else None,
        arm=arm,
        optim={
            "batch_size": 4,
            "max_steps": 3,
            "logging_steps": 1,
            "save_steps": 2,
            "learning_rate": 1e-3,
            **optim,
        },
        out=str(out),
        tracking={"mode": "disabled"},
    )


def eager_reference(cfg: TrainConfig, student_dir, batch, router: MoLRouter | None):
    """The objective from eager attention probabilities and v_proj hooks, through the pure functions, and
    the student's mixed stepwise matrix (None for the arms without attention)."""
    model = AutoModelForCausalLM.from_pretrained(student_dir, attn_implementation="eager")
    alpha, beta, mmi_weight = cfg.arm.weights()
    answer = model(
        input_ids=batch["answer_ids"], attention_mask=batch["answer_mask"], labels=batch["answer_labels"]
    )
    values = []
    hooks = [
        layer.self_attn.v_proj.register_forward_hook(lambda m, i, o: values.append(o))
        for layer in model.model.layers
    ]
    out = model(
        input_ids=batch["rationale_ids"],
        attention_mask=batch["rationale_mask"],
        labels=batch["rationale_labels"],
        output_attentions=True,
    )
    for hook in hooks:
        hook.remove()
    probs = torch.stack(out.attentions, 1)  # (B, L, H, T, T)
    matrices = stepwise_attention(probs, batch["steps"][:, None], batch["units"][:, None])  # (B, L, S, C)
    attention = student = None
    if cfg.arm.method == "molsaki":
        student = mix_layers(router(torch.stack(values, 1), batch["rationale_mask"]), matrices)
    elif cfg.arm.method == "sl":
        student = matrices[:, cfg.arm.student_layer]
    if student is not None:
        attention = stepwise_kl(batch["teacher"], student, batch["step_mask"], batch["unit_mask"])
    mmi = None
    if mmi_weight:
        mmi = mmi_loss(
            answer.logits,
            predicting_positions(batch["answer_labels"]),
            out.logits,
            predicting_positions(batch["rationale_labels"]),
        )
    rationale = out.loss if alpha < 1 else None
    losses = combined_loss(
        answer.loss,
        rationale,
        attention,
        batch["eligible"],
        mmi,
        alpha=alpha,
        beta=beta,
        mmi_weight=mmi_weight,
    )
    return losses, student


@pytest.mark.parametrize("arm", list(ARMS))
def test_training_step_loss_equals_the_pure_functions(arm, teacher_dir, tiny_model_dir, tmp_path):
    student_dir = tiny_model_dir("qwen2")
    cfg = train_config(teacher_dir, student_dir, tmp_path / "s", ARMS[arm])
    tok = load_tokenizer(str(student_dir))
    rows = read_rationales(cfg.rationales)
    teacher = open_teacher(cfg, rows) if cfg.arm.attention else None
    data = build_items(cfg, tok, rows, teacher)
    assert len(data.items) == 4 and data.with_attention == (2 if cfg.arm.attention else 0)
    batch = collate(data.items, tok.pad_token_id)
    model = AutoModelForCausalLM.from_pretrained(student_dir)
    router = None
    if arm == "molsaki":
        router = MoLRouter(model.config.num_hidden_layers, value_width(model))
        with torch.no_grad():  # away from the uniform start, so the router's input matters
            router.proj.weight.normal_(std=0.05)
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "a"), report_to="none", use_cpu=True)
    trainer = DistillTrainer(model=model, args=args, arm=cfg.arm, router=router, train_dataset=data.items)
    got, weights, entropies = trainer.batch_losses(model, batch)
    expected, student = eager_reference(cfg, student_dir, batch, router)
    for part in ("total", "answer", "rationale", "attention", "mmi", "attention_share"):
        assert getattr(got, part).item() == pytest.approx(
            getattr(expected, part).item(), rel=1e-4, abs=1e-6
        ), part
    if cfg.arm.attention:
        eligible = batch["eligible"].bool()
        for side, matrix in (("teacher", batch["teacher"]), ("student", student.detach())):
            rows = row_entropy(matrix, batch["step_mask"], batch["unit_mask"])[eligible]
            assert 0 < entropies[f"att_entropy/{side}"].item() <= 1
            assert entropies[f"att_entropy/{side}"].item() == pytest.approx(rows.mean().item(), rel=1e-4)
    else:
        assert entropies == {}
    if cfg.arm.attention:
        assert got.attention.item() > 0 and got.attention_share.item() == 0.5
        got.total.backward()
        assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0  # through the attention
        if router is not None:
            assert router.proj.weight.grad.abs().sum() > 0 and weights.shape == (4, 4)


def test_end_to_end_student_router_and_resume(teacher_dir, tiny_model_dir, tmp_path):
    student_dir = tiny_model_dir("qwen2")
    cfg = train_config(teacher_dir, student_dir, tmp_path / "full", ARMS["molsaki"], learning_rate=1e-4)
    summary = run_training(cfg, progress=False)
    out = tmp_path / "full"
    assert summary["steps"] == 3 and summary["with_attention_target"] == 2 and summary["resumed_from"] is None
    assert len(summary["teacher_mean_layer_weights"]) == 4
    logged = [
        h
        for h in json.loads((out / CHECKPOINTS_DIR / "checkpoint-3" / "trainer_state.json").read_text())[
            "log_history"
        ]
        if "loss" in h
    ]
    assert len(logged) == 3
    for log in logged:
        assert log["att_share"] == pytest.approx(0.5) and log["loss_att"] > 0
        assert 0 < log["att_entropy/teacher"] <= 1 and 0 < log["att_entropy/student"] <= 1
        assert sum(log[f"router/layer_{i:02d}"] for i in range(4)) == pytest.approx(1.0)
    assert logged[0]["router/entropy"] == pytest.approx(
        torch.log(torch.tensor(4.0)).item(), rel=1e-5
    )  # zero init
    # The deployed student is a plain checkpoint: the student's own keys, no router.
    student = load_file(str(out / STUDENT_DIR / "model.safetensors"))
    assert not any("router" in k or k == "proj.bias" for k in student)
    AutoModelForCausalLM.from_pretrained(out / STUDENT_DIR)
    router = load_file(str(out / ROUTER_FILE))
    assert (
        set(router) == {"norm.weight", "proj.weight", "proj.bias"} and router["proj.weight"].abs().sum() > 0
    )
    assert (out / "router_weights.png").is_file() and json.loads((out / SUMMARY_NAME).read_text())[
        "steps"
    ] == 3

    # Interrupted after step 2: the same command resumes from checkpoint-2 and ends where the full run ended.
    cut = tmp_path / "cut"
    (cut).mkdir()
    import shutil

    shutil.copytree(out / CHECKPOINTS_DIR / "checkpoint-2", cut / CHECKPOINTS_DIR / "checkpoint-2")
    shutil.copy(out / "config.resolved.yaml", cut / "config.resolved.yaml")
    # (with another thread count: threads change speed, not the run)
    resumed = run_training(cfg.model_copy(update={"out": str(cut), "threads": 1}), progress=False)
    assert resumed["steps"] == 3 and resumed["resumed_from"].endswith("checkpoint-2")
    again = load_file(str(cut / STUDENT_DIR / "model.safetensors"))
    for key, value in student.items():
        torch.testing.assert_close(again[key], value, rtol=1e-5, atol=1e-6)
    for key, value in router.items():  # (failed while the router's gradients summed over steps)
        torch.testing.assert_close(load_file(str(cut / ROUTER_FILE))[key], value, rtol=1e-5, atol=1e-6)

    # Another configuration in the same folder is refused.
    with pytest.raises(UserError, match="another configuration"):
        run_training(cfg.model_copy(update={"arm": ArmConfig(method="molsaki", tau2=1.0)}), progress=False)


def test_tau1_remixes_the_cached_teacher_layers(teacher_dir, tiny_model_dir, tmp_path):
    from cotattn.teacher_mix import teacher_target

    student = tiny_model_dir("qwen2")
    tokenizer = load_tokenizer(str(student))
    cached = train_config(teacher_dir, student, tmp_path / "a", ARMS["molsaki"])
    remixed = train_config(teacher_dir, student, tmp_path / "b", {"method": "molsaki", "tau1": 2.0})
    rows = read_rationales(cached.rationales)
    teacher = open_teacher(cached, rows)
    before = build_items(cached, tokenizer, rows, teacher).items
    after = build_items(remixed, tokenizer, rows, teacher).items
    compared = 0
    for old, new in zip(before, after, strict=True):
        if old.teacher is None:
            assert new.teacher is None
            continue
        got = teacher.get(old.example.id, old.example.alignment_hash, layers=True)
        assert torch.allclose(old.teacher, teacher_target(got.matrices, 0.1).target, atol=1e-6)
        assert torch.equal(new.teacher, teacher_target(got.matrices, 2.0).target)
        compared += not torch.allclose(old.teacher, new.teacher)
    assert compared >= 1, "a warmer tau1 spreads the teacher's weight over its layers"
    with pytest.raises(ValueError, match="tau1 do not apply to method 'dss'"):
        ArmConfig(method="dss", tau1=0.5)


def test_config_rules(teacher_dir, tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="needs teacher_layer"):
        ArmConfig(method="sl")
    with pytest.raises(ValueError, match="beta do not apply to method 'dss'"):
        ArmConfig(method="dss", beta=2.0)
    with pytest.raises(ValueError, match="needs teacher_targets"):
        TrainConfig(rationales="x.jsonl", arm={"method": "molsaki"})
    assert ArmConfig(method="vanilla").weights() == (1.0, 0.0, 0.0)
    assert ArmConfig(method="mmi").weights() == (0.5, 0.0, 0.1)
    assert ArmConfig().weights() == (0.5, 1.0, 0.0)
    args = [
        "train",
        "-q",
        "--no-wandb",
        f"rationales={teacher_dir / 'rationales.jsonl'}",
        f"student.name={tiny_model_dir('qwen2')}",
    ]
    with pytest.raises(SystemExit) as bad:
        main(
            [
                *args,
                "arm.method=sl",
                f"teacher_targets={teacher_dir / 't'}",
                "arm.teacher_layer=9",
                "arm.student_layer=0",
                f"out={tmp_path / 'x'}",
            ]
        )
    assert bad.value.code == 2
    with pytest.raises(SystemExit) as ok:
        main([*args, "arm.method=dss", "optim.max_steps=1", "optim.batch_size=2", f"out={tmp_path / 'd'}"])
    assert ok.value.code == 0 and (tmp_path / "d" / STUDENT_DIR / "config.json").is_file()


def test_a_gpt2_student_trains_with_the_router(teacher_dir, tmp_path):
    """The paper's students are GPT-2: values are the last third of c_attn (d_v = n_embd), no pad token."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from attncore.tiny import train_tokenizer

    tok = train_tokenizer()
    tok.pad_token = None  # as GPT-2's own tokenizer: batches pad with EOS
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_layer=3, n_head=2, n_embd=32, n_positions=512)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    cfg = train_config(teacher_dir, tmp_path / "gpt2", tmp_path / "out", ARMS["molsaki"], max_steps=2)
    summary = run_training(cfg, progress=False)
    assert summary["steps"] == 2 and summary["with_attention_target"] == 2
    router = load_file(str(tmp_path / "out" / ROUTER_FILE))
    assert router["proj.weight"].shape == (3, 3 * 32) and router["proj.weight"].abs().sum() > 0
    assert summary["last_log"]["loss_att"] > 0


@pytest.mark.parametrize("router_rate", [None, 1e-7])
def test_the_router_steps_at_its_own_rate(router_rate, teacher_dir, tiny_model_dir, tmp_path):
    """AdamW's first step moves each router weight by about its group's rate: the student's, or
    `optim.router_learning_rate` when set (the zero-initialised weights show the step itself)."""
    cfg = train_config(
        teacher_dir, tiny_model_dir("qwen2"), tmp_path, ARMS["molsaki"], max_steps=1,
        router_learning_rate=router_rate,
    )  # fmt: skip
    run_training(cfg, progress=False)
    step = load_file(str(tmp_path / ROUTER_FILE))["proj.weight"].abs()
    rate = router_rate or cfg.optim.learning_rate
    assert step.max() == pytest.approx(rate, rel=1e-3)
    assert (step > rate / 2).float().mean() > 0.9
