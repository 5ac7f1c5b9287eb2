"""Rollouts on tiny models: batching, seeds, the shard store, resume after kill -9, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from attncore.data import Problem
from attncore.errors import UserError
from attncore.models import load_model
from attncore.prompts import PromptConfig
from attncore.rollout.grade import GradingConfig, grade_store
from attncore.rollout.hf import HFEngine, trim_completion
from attncore.rollout.job import summarise
from attncore.rollout.store import RolloutStore
from attncore.rollout.types import Rollout, SamplingConfig, derive_seed

PROBLEMS = [
    Problem("p/0", "What is 12 + 7?", "19", "p"),
    Problem(
        "p/1",
        "A farm has 20 cows and twice as many sheep. How many animals are there on the farm?",
        "60",
        "p",
    ),
    Problem("p/2", "Sam saves $5 every week. How many weeks?", "9", "p"),
]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return HFEngine(load_model(str(tiny_model_dir("llama"))), PromptConfig(template="r1"), batch_size=4)


def test_trim_completion_keeps_eos_and_reports_finish():
    assert trim_completion([5, 6, 2, 7, 2], {2}) == ([5, 6, 2], "stop")
    assert trim_completion([5, 6, 7], {2}) == ([5, 6, 7], "length")


def test_greedy_batch_equals_one_by_one(engine):
    """Left padding must not change what a prompt generates."""
    sampling = SamplingConfig(max_tokens=12)
    batched = engine.generate(PROBLEMS, sampling)
    alone = [engine.generate([p], sampling)[0] for p in PROBLEMS]
    assert [r.completion_ids for r in batched] == [r.completion_ids for r in alone]
    tok = engine.loaded.tokenizer
    for r, p in zip(batched, PROBLEMS, strict=True):
        assert r.rollout_id == f"{p.id}#0" and r.gold == p.answer
        assert r.text == tok.decode(r.completion_ids, skip_special_tokens=True)
        assert tok.decode(r.prompt_ids) == r.prompt and r.prompt.endswith("<think>\n")
        assert r.finish_reason in ("stop", "length") and len(r.completion_ids) <= 12


def test_reconfigured_engine_shares_the_model_and_renders_its_own_prompts(engine):
    view = engine.reconfigured(PromptConfig(template="plain"), batch_size=2, refill=True)
    assert view.loaded is engine.loaded and view.tokenizer is engine.loaded.tokenizer
    assert (view.prompt.template, view.batch_size, view.refill) == ("plain", 2, True)
    assert (engine.prompt.template, engine.batch_size, engine.refill) == ("r1", 4, False), "unchanged"
    sampling = SamplingConfig(max_tokens=4)
    plain = view.generate(PROBLEMS[:1], sampling)[0]
    assert not plain.prompt.endswith("<think>\n") and engine.generate(PROBLEMS[:1], sampling)[
        0
    ].prompt.endswith("<think>\n")


def test_sampling_is_reproducible_for_a_seed(engine):
    sampling = SamplingConfig(n=3, temperature=1.0, top_p=0.95, max_tokens=10, seed=7)
    first = engine.generate(PROBLEMS, sampling)
    again = engine.generate(PROBLEMS, sampling)
    other = engine.generate(PROBLEMS, sampling.model_copy(update={"seed": 8}))
    assert [r.rollout_id for r in first] == [f"{p.id}#{i}" for p in PROBLEMS for i in range(3)]
    assert [r.completion_ids for r in first] == [r.completion_ids for r in again]
    assert [r.completion_ids for r in first] != [r.completion_ids for r in other]
    assert len({tuple(r.completion_ids) for r in first}) > 3, "samples differ from each other"


def test_derive_seed_is_stable():
    assert derive_seed(0, "a#0") == derive_seed(0, "a#0") != derive_seed(1, "a#0")
    assert 0 <= derive_seed(123, "x", 4) < 2**63


def make_rollout(pid: str, text: str, gold: str, n_tokens: int = 3) -> Rollout:
    return Rollout(
        f"{pid}#0",
        pid,
        0,
        "s",
        "q",
        gold,
        "prompt",
        [1, 2],
        list(range(n_tokens)),
        text,
        "stop",
        "m",
        0,
        0.0,
        1.0,
        0,
        16,
    )


def test_store_round_trip_and_grading(tmp_path):
    meta = {"kind": "rollouts", "model": "m"}
    store = RolloutStore(tmp_path, meta)
    store.append([make_rollout("a", "2 + 3 = 5\n#### 5", "5", 4), make_rollout("b", "#### 1,000", "1000")])
    store.append([make_rollout("c", "I think it is 7", "7", 5)])
    assert store.done_ids() == {"a#0", "b#0", "c#0"}
    assert [r.text for r in RolloutStore(tmp_path, meta).read()] == [
        "2 + 3 = 5\n#### 5",
        "#### 1,000",
        "I think it is 7",
    ]

    assert grade_store(store, GradingConfig(mode="gsm8k", workers=1), "plain", progress=False) == 3
    table = store.read_table()
    assert table.column("correct").to_pylist() == [True, True, False]
    assert table.column("grade_reason").to_pylist() == ["ok", "ok", "no_answer"]
    assert table.column("n_completion_tokens").to_pylist() == [4, 3, 5]
    assert grade_store(store, GradingConfig(mode="gsm8k", workers=1), "plain", progress=False) == 0, (
        "resumable"
    )
    summary = summarise(store, 0, 1.0)
    assert (summary.rollouts, summary.problems, summary.accuracy, summary.mean_tokens) == (3, 3, 2 / 3, 4.0)


def test_store_refuses_other_config_and_detects_corruption(tmp_path):
    store = RolloutStore(tmp_path, {"sampling": {"temperature": 0.6}})
    store.append([make_rollout("a", "x", "1")])
    with pytest.raises(UserError, match=r"differs in: sampling\.temperature"):
        RolloutStore(tmp_path, {"sampling": {"temperature": 1.0}})
    shard = next(tmp_path.glob("shard-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(UserError, match="fails its checksum"):
        RolloutStore(tmp_path, {"sampling": {"temperature": 0.6}}).read()
    fresh = RolloutStore(tmp_path, {"sampling": {"temperature": 1.0}}, overwrite=True)
    assert fresh.read() == [] and not list(tmp_path.glob("shard-*"))


def test_orphan_shards_from_a_killed_write_are_dropped(tmp_path):
    store = RolloutStore(tmp_path, {"k": 1})
    store.append([make_rollout("a", "x", "1")])
    orphan = tmp_path / "shard-main-00001.parquet"  # written, but the manifest never heard of it
    orphan.write_bytes((tmp_path / "shard-main-00000.parquet").read_bytes())
    (tmp_path / ".shard-main-00002.parquet.tmp-99").write_bytes(b"half")
    reopened = RolloutStore(tmp_path, {"k": 1})
    assert not orphan.exists() and reopened.done_ids() == {"a#0"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".lock-main",
        "manifest-main.json",
        "shard-main-00000.parquet",
    ]


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attncore", *args], capture_output=True, text=True, **kwargs)


def rollout_args(model: Path, out: Path) -> list[str]:
    return [
        "rollout",
        f"model.name={model}",
        "data.name=gsm8k",
        "data.limit=40",
        "sampling.max_tokens=24",
        "sampling.temperature=1.0",
        "batch_size=2",
        "grade=false",
        f"out={out}",
        "--no-wandb",
        "--quiet",
    ]


@pytest.mark.slow
def test_killed_rollout_run_resumes_without_loss_or_duplicates(tiny_model_dir, tmp_path, kill_after_shards):
    model = tiny_model_dir("qwen2")
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "attncore", *rollout_args(model, out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    manifest = out / "manifest-main.json"
    shards_at_kill = kill_after_shards(proc, manifest, 120)
    assert 2 <= shards_at_kill < 20, "killed midway"

    resumed = cli(*rollout_args(model, out))
    assert resumed.returncode == 0, resumed.stderr
    fresh = cli(*rollout_args(model, tmp_path / "fresh"))
    assert fresh.returncode == 0, fresh.stderr

    got = RolloutStore.open_existing(out).read()
    want = RolloutStore.open_existing(tmp_path / "fresh").read()
    assert len(got) == 40 and len({r.rollout_id for r in got}) == 40
    by_id = {r.rollout_id: r.completion_ids for r in want}
    assert {r.rollout_id: r.completion_ids for r in got} == by_id, (
        "resumed rollouts equal an uninterrupted run"
    )


def test_cli_exit_codes(tmp_path):
    assert cli("--help").returncode == 0
    assert "resumable" in cli("rollout", "--help").stdout

    bad_key = cli("rollout", "sampling.temprature=0.6", f"out={tmp_path}")
    assert bad_key.returncode == 2
    assert bad_key.stderr.strip().splitlines() == [
        "error: command-line override: unknown key 'sampling.temprature' (value 0.6)"
    ]
    bad_model = cli("rollout", "model.name=no_such_model", f"out={tmp_path / 'm'}", "--no-wandb")
    assert bad_model.returncode == 2 and "Traceback" not in bad_model.stderr
    assert "error: model 'no_such_model' not found" in bad_model.stderr
    missing = cli("grade", str(tmp_path / "absent"))
    assert missing.returncode == 2 and "no rollouts found" in missing.stderr


def test_rollout_table_schema_is_stable():
    from attncore.rollout.store import ROLLOUT_SCHEMA, rollouts_to_table

    table = rollouts_to_table([make_rollout("a", "x", "1")])
    assert table.schema.field("completion_ids").type == pa.list_(pa.int32())
    assert table.column_names == ROLLOUT_SCHEMA.names


def test_refilled_job_resumes_with_another_slot_count(tiny_model_dir, tmp_path):
    """Seeds per rollout: the slot count is not part of what identifies a refilled store."""
    model = tiny_model_dir("qwen2")
    args = [
        a for a in rollout_args(model, tmp_path) if not a.startswith(("data.limit", "batch_size", "out="))
    ]

    def run(out: Path, slots: int) -> subprocess.CompletedProcess:
        return cli(*args, "data.limit=6", "refill=true", f"batch_size={slots}", f"out={out}")

    assert run(tmp_path / "two", 2).returncode == 0
    meta = RolloutStore.open_existing(tmp_path / "two").meta
    assert meta["refill"] is True and "batch_size" not in meta
    resumed = run(tmp_path / "two", 4)
    assert resumed.returncode == 0, resumed.stderr
    assert run(tmp_path / "four", 4).returncode == 0
    got = RolloutStore.open_existing(tmp_path / "two").read()
    want = {r.rollout_id: r.completion_ids for r in RolloutStore.open_existing(tmp_path / "four").read()}
    assert len(got) == 6 and {r.rollout_id: r.completion_ids for r in got} == want
