"""`cotattn teacher-targets` on a tiny random teacher: stored G, p^t, A^t equal the pure functions on the
stored per-layer matrices; resume; checksum, rules and alignment checks; the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from attncore.config import load_config
from attncore.critical import CriticalConfig
from attncore.errors import UserError
from attncore.models import load_tokenizer
from attncore.store.store import AttentionStore
from cotattn.attention_loss import row_entropy
from cotattn.cli import main
from cotattn.config import TeacherTargetsConfig
from cotattn.teacher_mix import teacher_target
from cotattn.teacher_targets import ATTENTION_DIR, TARGETS_DIR, TeacherTargets, run_teacher_targets
from cotattn.text import TaskFormat, rules_hash, student_example

from .conftest import RATIONALE_ROWS


def config(model_dir, rationales_file, out, **extra) -> TeacherTargetsConfig:
    return TeacherTargetsConfig(
        teacher={"name": str(model_dir), "device": "cpu"},
        input={"path": str(rationales_file)},
        out=str(out),
        batch_size=2,
        **extra,
    )


def test_targets_equal_the_pure_functions_and_resume(tiny_model_dir, rationales_file, tmp_path):
    model_dir = tiny_model_dir("llama")
    cfg = config(model_dir, rationales_file, tmp_path / "t", tau1=0.05)
    summary = run_teacher_targets(cfg, progress=False)
    assert (summary.examples, summary.with_target) == (4, 2)
    assert summary.skipped == {"fewer_than_2_units": 1, "no_critical_units": 1}
    assert len(summary.mean_layer_weights) == 4 and sum(summary.mean_layer_weights) == pytest.approx(1.0)
    assert (tmp_path / "t" / "config.resolved.yaml").is_file()
    assert (tmp_path / "t" / "teacher_layer_weights.png").stat().st_size > 0

    rules = rules_hash(TaskFormat(), CriticalConfig())
    targets = TeacherTargets(tmp_path / "t", rules)
    assert targets.ids() == ["apples", "mail"]
    store = AttentionStore.open(tmp_path / "t" / ATTENTION_DIR)
    tok = load_tokenizer(str(model_dir))
    entropies = []
    for row in RATIONALE_ROWS[:2]:
        ex = student_example(
            tok, row["id"], row["problem"], row["rationale"], row["answer"], TaskFormat(), CriticalConfig()
        )
        got = targets.get(row["id"], ex.alignment_hash, layers=True)
        matrices = store.example(row["id"]).matrices
        expected = teacher_target(matrices.double(), 0.05)
        torch.testing.assert_close(got.target, expected.target.float())
        torch.testing.assert_close(got.layer_weights, expected.layer_weights.float())
        torch.testing.assert_close(got.matrices, matrices)
        assert got.target.shape == (len(ex.layout.steps), ex.unit_count)
        entropies.append(
            row_entropy(got.target[None], torch.ones(1, got.target.shape[0]), torch.ones(1, ex.unit_count))
        )
    assert summary.mean_target_row_entropy == pytest.approx(torch.cat(entropies).mean().item(), rel=1e-6)
    assert 0 < summary.mean_target_row_entropy <= 1
    assert targets.get("none", "x") is None and targets.get("one", "x") is None
    with pytest.raises(UserError, match="alignment hash"):
        targets.get("mail", "0" * 64)

    # Resume: nothing is recomputed, the shards stay as they are.
    shards = sorted(p.name for p in (tmp_path / "t" / TARGETS_DIR).iterdir())
    again = run_teacher_targets(cfg, progress=False)
    assert again == summary and sorted(p.name for p in (tmp_path / "t" / TARGETS_DIR).iterdir()) == shards
    # Another tau1 is another configuration of the same folder.
    with pytest.raises(UserError, match="tau1"):
        run_teacher_targets(config(model_dir, rationales_file, tmp_path / "t", tau1=0.1), progress=False)


def test_rules_and_checksum_are_checked(tiny_model_dir, rationales_file, tmp_path):
    run_teacher_targets(config(tiny_model_dir("llama"), rationales_file, tmp_path / "t"), progress=False)
    with pytest.raises(UserError, match="other step / critical-unit / task rules"):
        TeacherTargets(tmp_path / "t", rules_hash(TaskFormat(answer_prefix="\nA: "), CriticalConfig()))
    part = next((tmp_path / "t" / TARGETS_DIR).glob("*.targets.safetensors"))
    data = bytearray(part.read_bytes())
    data[-1] ^= 1
    part.write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"checksum .*`cotattn teacher-targets --config {tmp_path}/t/config"):
        TeacherTargets(tmp_path / "t", rules_hash(TaskFormat(), CriticalConfig()))

    # the command the error names quarantines the shard and computes its targets again
    rerun = load_config(TeacherTargetsConfig, tmp_path / "t" / "config.resolved.yaml", [])
    assert run_teacher_targets(rerun, progress=False).with_target == 2
    assert TeacherTargets(tmp_path / "t", rules_hash(TaskFormat(), CriticalConfig())).ids() == [
        "apples",
        "mail",
    ]
    [kept] = (tmp_path / "t" / TARGETS_DIR / "quarantine").rglob(part.name)
    assert kept.read_bytes() == bytes(data)


def test_cli(tiny_model_dir, rationales_file, tmp_path, capsys):
    args = [
        "teacher-targets",
        "-q",
        f"teacher.name={tiny_model_dir('llama')}",
        f"input.path={rationales_file}",
    ]
    with pytest.raises(SystemExit) as done:
        main([*args, f"out={tmp_path / 'c'}"])
    assert done.value.code == 0
    assert "with target 2" in capsys.readouterr().out
    assert json.loads((tmp_path / "c" / "teacher_summary.json").read_text())["with_target"] == 2
    with pytest.raises(SystemExit) as bad:
        main([*args, "tau1=0", f"out={tmp_path / 'd'}"])
    err = capsys.readouterr().err.strip()
    assert bad.value.code == 2 and err.count("\n") == 0 and "tau1" in err and not (tmp_path / "d").exists()
