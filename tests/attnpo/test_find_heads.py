"""`attnpo find-heads` end to end on a tiny random model: oracle and JSONL labels, resume, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from attncore.aggregate import membership, step_scores_per_head
from attncore.cli_support import job_from_cli
from attncore.config import load_config
from attncore.errors import ConfigError, UserError
from attncore.models import ModelConfig, load_model
from attncore.rollout.store import RolloutStore
from attncore.shards import write_json_atomic
from attncore.steps import StepSegmenterConfig, segment_response
from attnpo.artifact import read_heads
from attnpo.find_heads import FindHeadsConfig, run_find_heads
from attnpo.head_scores import HeadScoreStore
from attnpo.probe import ProbeConfig, probe_items


def config(model_dir: Path, rollouts: Path, out: Path, *overrides: str) -> FindHeadsConfig:
    base = [
        f"model.name={model_dir}",
        f"probe.rollouts={rollouts}",
        f"out={out}",
        "tracking.mode=disabled",
        "sra.bootstrap_samples=200",
        "scoring.batch_size=3",
        "selection.min_direction_sra=0.0",
    ]
    return load_config(FindHeadsConfig, None, [*base, *overrides])


def test_find_heads_with_oracle_labels_scores_every_head_and_writes_the_outputs(
    tiny_model_dir, probe_folder, tmp_path
):
    model_dir = tiny_model_dir("qwen2")
    folder, rollouts = probe_folder
    causal = ["causal.enabled=true", "causal.max_responses=3", "causal.sampling.max_tokens=4"]
    result = run_find_heads(config(model_dir, folder, tmp_path / "run", *causal), progress=False)
    out = result.out
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 9  # the 3 responses graded wrong are left out
    assert all(set(row["labels"]) <= {"essential", "redundant", None} for row in labels)
    table = json.loads((out / "sra.json").read_text())
    assert len(table["sra"]) == 4 and len(table["sra"][0]) == 4  # 4 layers x 4 query heads
    assert table["probe"]["left_out"] == {"incorrect": 3}
    assert table["pairs"]["all"] == table["pairs"]["after"] + table["pairs"]["before"] > 0
    headline = table["headline"]
    best = max((v, (layer, head)) for layer, row in enumerate(table["sra"]) for head, v in enumerate(row))
    assert headline[f"best single head {best[1]}"]["sra"] == pytest.approx(best[0], abs=1e-6)
    assert {"greedy ensemble, k = 3", "top-k ensemble, k = 3", "selected (3 heads)"} <= set(headline)
    flat = sorted(v for row in table["sra"] for v in row)
    later = headline["trivial: later step"]
    assert later["after"] == 0.0 and later["before"] == 1.0  # position only: wrong after, right before
    assert len([k for k in headline if k.startswith("trivial: ")]) == 6
    assert headline["median head (per column)"]["sra"] == pytest.approx(flat[(len(flat) - 1) // 2], abs=1e-6)
    heads = read_heads(out / "heads.yaml")
    assert len(heads) == 3 and tuple(map(tuple, heads)) == result.heads
    artifact = yaml.safe_load((out / "heads.yaml").read_text())
    assert artifact["labels"]["kind"] == "oracle" and len(artifact["probe"]["hash"]) == 64
    assert artifact["ensemble"]["sra"] == pytest.approx(table["greedy"][2]["sra"])
    assert (out / "sra_heatmap.png").stat().st_size > 1000 and (out / "ensembles.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "Best heads" in report and "greedy" in report and "Causal check: 1 step(s) removed, 3" in report
    causal = json.loads((out / "causal.json").read_text())
    assert causal["responses"] == 3 and set(causal["accuracy"]) == {"original", "without_low", "without_high"}
    assert len((out / "causal" / "answers.jsonl").read_text().splitlines()) == 9
    assert result.scored_now == 9

    # The stored scores of one response equal the step scores computed from eager attention.
    loaded = load_model(ModelConfig(name=str(model_dir), attn_implementation="eager"))
    rollout = next(r for r in rollouts if r.rollout_id == labels[0]["id"])
    seg = segment_response(loaded.tokenizer, rollout.completion_ids)
    ids = rollout.prompt_ids + rollout.completion_ids
    with torch.no_grad():
        attentions = loaded.model(torch.tensor([ids]), output_attentions=True).attentions
    offset = len(rollout.prompt_ids)
    f0, f1 = seg.answer_span(offset)
    steps = membership([range(*s) for s in seg.step_spans(offset)], len(ids))
    want = torch.stack([step_scores_per_head(a[0][:, f0:f1], steps) for a in attentions])  # (L, H, K)
    items, _ = probe_items(
        [rollout], loaded.tokenizer, StepSegmenterConfig(), ProbeConfig(rollouts=str(folder))
    )
    got = HeadScoreStore.read_only(out / "scores").read(items)[rollout.rollout_id]
    assert torch.allclose(got, want, atol=1e-5)


def test_jsonl_labels_and_resume_after_a_kill(tiny_model_dir, probe_folder, tmp_path):
    model_dir = tiny_model_dir("qwen2")
    folder, _ = probe_folder
    first = run_find_heads(config(model_dir, folder, tmp_path / "oracle"), progress=False)
    # The labels a run wrote, read back as a user file, give the same heads and table.
    labels_file = first.out / "labels.jsonl"  # its extra `source` field is ignored
    out = tmp_path / "jsonl"
    cfg = config(model_dir, folder, out, "labels.kind=jsonl", f"labels.path={labels_file}")
    full = run_find_heads(cfg, progress=False)
    assert full.heads == first.heads
    table = json.loads((out / "sra.json").read_text())
    assert table["sra"] == json.loads((first.out / "sra.json").read_text())["sra"]
    assert yaml.safe_load((out / "heads.yaml").read_text())["labels"]["kind"] == "jsonl"

    # A run killed after its first batch: the manifest lists one shard (later shard files were never
    # recorded). The rerun keeps that batch and scores only the rest, with the same result.
    manifest_path = out / "scores" / "manifest-main.json"
    manifest = json.loads(manifest_path.read_text())
    kept = manifest["shards"][0]["rows"]
    manifest["shards"] = manifest["shards"][:1]
    write_json_atomic(manifest_path, manifest)
    (out / "heads.yaml").unlink()
    resumed = run_find_heads(cfg, progress=False)
    assert resumed.scored_now == full.responses - kept and resumed.heads == full.heads
    assert json.loads((out / "sra.json").read_text())["sra"] == table["sra"]

    # A shard that fails its checksum is reported, not read.
    shard = out / "scores" / json.loads(manifest_path.read_text())["shards"][0]["parts"]["scores"]["file"]
    shard.write_bytes(shard.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(Exception, match="fails its checksum"):
        run_find_heads(cfg, progress=False)


def test_cli_errors_are_one_line(tmp_path, attnpo_cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("probe: {rollouts: x, data: {name: gsm8k}}\nlabels: {kind: oracle}\n")
    code, _, err = attnpo_cli("find-heads", "--config", str(bad), "tracking.mode=disabled")
    assert code == 2 and err.startswith("error: ") and "exactly one of" in err and err.count("\n") == 1
    code, _, err = attnpo_cli(
        "find-heads", f"probe.rollouts={tmp_path}/none", f"out={tmp_path}/o", "--no-wandb"
    )
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [("out=", "must name a folder"), ("threads=0", "threads"), ("threads=100000", "threads")],
)
def test_find_heads_checks_its_output_folder_and_threads(tmp_path, override, message):
    base = [f"probe.rollouts={tmp_path}", "labels.kind=oracle"]
    assert job_from_cli(FindHeadsConfig, None, base).out == "runs/heads"
    with pytest.raises(ConfigError, match=message):
        job_from_cli(FindHeadsConfig, None, [*base, override])


def test_probe_sampled_by_the_rollout_job(tiny_model_dir, tmp_path):
    """With `probe.synthetic`, the model samples its own probe rollouts (graded, resumable); a random tiny
    model closes no thinking, so discovery stops with a one-line reason naming what was left out."""
    model_dir = tiny_model_dir("qwen2")
    overrides = [
        f"model.name={model_dir}",
        "probe.synthetic.count=3",
        "probe.sampling.max_tokens=8",
        "probe.engine=hf",
        "probe.grading.mode=attnpo",
        f"out={tmp_path / 'run'}",
        "tracking.mode=disabled",
    ]
    cfg = load_config(FindHeadsConfig, None, overrides)
    with pytest.raises(
        UserError, match=r"no usable probe response in .*rollouts \(left out: \{'incorrect': 3\}\)"
    ):
        run_find_heads(cfg, progress=False)
    stored = RolloutStore.open_existing(tmp_path / "run" / "rollouts").read()
    assert len(stored) == 3 and all(r.extra["correct"] is False for r in stored)
    assert all(len(r.completion_ids) <= 8 for r in stored)
    assert (tmp_path / "run" / "config.resolved.yaml").is_file()


@pytest.mark.slow
def test_find_heads_logs_to_wandb_offline(tiny_model_dir, probe_folder, tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    folder, _ = probe_folder
    cfg = config(tiny_model_dir("qwen2"), folder, tmp_path / "run", "tracking.mode=offline")
    result = run_find_heads(cfg, progress=False)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    # wandb prints (part of) the run summary when the run finishes; the per-k curve is in it.
    printed = {}
    for line in capfd.readouterr().err.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "wandb:" and words[1].startswith("find_heads/greedy_sra_k"):
            printed[words[1]] = float(words[2])
    assert printed and result.ensemble_sra is not None
    assert printed.get("find_heads/greedy_sra_k1", result.best_head_sra) == pytest.approx(
        result.best_head_sra, abs=1e-4
    )
