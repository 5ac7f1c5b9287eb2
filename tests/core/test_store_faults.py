"""Faults in the jobs that write stores: kills at every step of the write protocol, damaged shards, and
a second writer.

Crash points: each job is SIGKILLed at each step of the protocol of `attncore.shards` (before and after
each write, fsync and rename of a shard, a part and the manifest, and around removing a replaced
file), rerun, and must leave exactly the files, byte for byte, that an uninterrupted run leaves.

The jobs run in forked children of the test process, which has loaded the model, started the grading
pool and run each job once, so a kill and its rerun cost a fraction of a second; the kill itself is a
real SIGKILL the job sends itself (`ATTNCORE_CRASH_AT`, see `attncore.shards.crash_point`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from attncore.config import load_config
from attncore.errors import UserError
from attncore.eval.config import SuiteConfig
from attncore.eval.suite import run_suite
from attncore.grading import Grader, GradingMode
from attncore.rollout.grade import GradingConfig, grade_store
from attncore.rollout.job import RolloutJobConfig, build_engine, run_rollouts
from attncore.rollout.store import RolloutStore
from attncore.shards import CRASH_ENV, CRASH_POINTS, LOCK_PREFIX, QUARANTINE
from attncore.store.config import ExtractConfig
from attncore.store.extract import run_extraction
from attncore.store.store import AttentionStore
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.dataset import generate_examples, write_examples

Job = Callable[[Path], object]


def points(op: str, hit: int, roles: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    """The crash points of one protocol operation, each taken at its `hit`-th occurrence."""
    wanted = [p for p in CRASH_POINTS if p.startswith(f"{op}.")]
    return [(p, hit) for p in wanted if p.count(".") == 1 or p.split(".")[1] in roles]


CREATE = points("create", 1, ("manifest",))
APPEND = points("append", 2, ("shard", "manifest"))  # the second shard: one is committed already
APPEND_WITH_PART = points("append", 2, ("part", "shard", "manifest"))
REPLACE = points("replace", 2, ("shard", "manifest"))
QUARANTINE_STEPS = points("quarantine", 1, ("manifest",))


def in_child(job: Job, out: Path, crash: str | None = None) -> int:
    """Run `job(out)` in a forked child, optionally with a crash point armed; its wait status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            if crash is not None:
                os.environ[CRASH_ENV] = crash
            job(out)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    return os.waitpid(pid, 0)[1]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file a run leaves, except the lock and the summaries that time the run itself; the resolved
    configs name the folder, which is replaced by `<out>`, and quarantined files are named without
    their time-stamped subfolder."""

    def name(path: Path) -> str:
        relative = path.relative_to(folder)
        return f"{QUARANTINE}/{path.name}" if relative.parts[0] == QUARANTINE else str(relative)

    return {
        name(path): path.read_bytes().replace(str(folder).encode(), b"<out>")
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(LOCK_PREFIX) and path.name != "summary.json"
    }


def check_every_point(job: Job, start: Path | None, tmp_path: Path, crash_points: list[tuple[str, int]]):
    """Kill `job` at each point, rerun it, and compare with an uninterrupted run; `start` is a folder
    the job begins from (copied), or None for an empty one."""

    def fresh(name: str) -> Path:
        out = tmp_path / name
        if start is not None:
            shutil.copytree(start, out)
        return out

    reference = fresh("reference")
    job(reference)  # here, not in a child: what it imports on first use, the children inherit
    want = snapshot(reference)
    assert want, "the job wrote something"
    for point, hit in crash_points:
        out = fresh(f"{point}-{hit}")
        status = in_child(job, out, f"{point}:{hit}")
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{point}:{hit} was reached"
        assert in_child(job, out) == 0, f"rerun after a kill at {point}:{hit}"
        got = snapshot(out)
        assert sorted(got) == sorted(want), f"files after a kill at {point}:{hit}"
        assert [name for name in want if got[name] != want[name]] == [], f"content after {point}:{hit}"


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    """A tiny model, its engine, a started grading pool and GSM8K-style data, shared by the children."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("crash")
    data = root / "data"
    (data / "benchmarks" / "gsm8k").mkdir(parents=True)
    rows = [{"idx": i, "question": f"What is {i} + 1?", "answer": f"#### {i + 1}"} for i in range(3)]
    (data / "benchmarks" / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = str(tiny_model_dir("qwen2"))
    overrides = [
        f"model.name={model}",
        f"data.data_dir={data}",
        "data.limit=2",
        "sampling.max_tokens=4",
        "sampling.temperature=1.0",
        "batch_size=1",
        "grading.workers=1",
        "tracking.mode=disabled",
    ]
    rollout_cfg = load_config(RolloutJobConfig, None, overrides)
    engine = build_engine(rollout_cfg)
    grader = Grader(GradingMode.GSM8K, workers=1)
    grader.start()
    yield {"model": model, "data": data, "root": root, "cfg": rollout_cfg, "engine": engine, "grader": grader}
    grader.close()
    torch.set_num_threads(threads)


def rollout_job(setup, limit: int = 2) -> Job:
    def job(out: Path) -> None:
        data = setup["cfg"].data.model_copy(update={"limit": limit})
        cfg = setup["cfg"].model_copy(update={"out": str(out), "data": data})
        run_rollouts(cfg, progress=False, engine=setup["engine"], grader=setup["grader"])

    return job


def test_rollout_survives_a_kill_at_every_step(setup, tmp_path):
    check_every_point(rollout_job(setup), None, tmp_path, [*CREATE, *APPEND, *REPLACE])


def test_grading_survives_a_kill_at_every_step(setup, tmp_path):
    ungraded = tmp_path / "ungraded"
    cfg = setup["cfg"].model_copy(update={"out": str(ungraded), "grade": False})
    assert in_child(lambda out: run_rollouts(cfg, progress=False, engine=setup["engine"]), ungraded) == 0

    def grade(out: Path) -> None:
        store = RolloutStore.open_existing(out)
        grade_store(store, GradingConfig(mode="gsm8k"), "plain", progress=False, grader=setup["grader"])

    check_every_point(grade, ungraded, tmp_path, REPLACE)


def test_repair_survives_a_kill_at_every_step(setup, tmp_path):
    """A rollout folder with a corrupt shard: quarantining it and generating its rollouts again."""
    job = rollout_job(setup)
    damaged = tmp_path / "damaged"
    job(damaged)
    flip_a_byte(damaged / RolloutStore.open_existing(damaged).table.shards[0]["file"])
    check_every_point(job, damaged, tmp_path, QUARANTINE_STEPS)


def test_eval_survives_a_kill_at_every_step(setup, tmp_path):
    def evaluate(out: Path) -> None:
        cfg = SuiteConfig.model_validate(
            {
                "name": "crash",  # not the folder's name, which differs between the runs compared
                "model": {"name": setup["model"]},
                "out": str(out),
                "data_dir": str(setup["data"]),
                "benchmarks": {"gsm8k": {"limit": 2}},
                "sampling": {"max_tokens": 4, "temperature": 1.0},
                "batch_size": 1,
                "threads": 1,
                "tracking": {"mode": "disabled"},
            }
        )
        run_suite(cfg, progress=False, grader=setup["grader"])

    check_every_point(evaluate, None, tmp_path, [*CREATE, *APPEND, *REPLACE])


def extract_job(setup, tmp_path: Path, kind: str, count: int = 2) -> Job:
    rationales = tmp_path / "rationales.jsonl"
    short = {"problem": {"difficulty": (1, 2)}, "trace": {"redundancy": (0.0, 0.2)}}
    write_examples(generate_examples(SyntheticConfig(count=count, seed=3, **short)), rationales)
    heads = {"heads": [(1, 1)]} if kind == "attnpo" else {}

    def extract(out: Path) -> None:
        cfg = ExtractConfig(
            kind=kind,
            input={"path": str(rationales)},
            model={"name": setup["model"], "device": "cpu"},
            out=str(out),
            batch_size=1,
            threads=1,
            **heads,
        )
        run_extraction(cfg, progress=False)

    return extract


def test_extract_survives_a_kill_at_every_step(setup, tmp_path):
    check_every_point(extract_job(setup, tmp_path, "molsaki"), None, tmp_path, [*CREATE, *APPEND_WITH_PART])


def flip_a_byte(path: Path) -> bytes:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    return bytes(data)


def by_id(table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda row: row["rollout_id"])


def test_rollout_regenerates_exactly_the_rows_of_a_corrupt_and_a_missing_shard(setup, tmp_path, capsys):
    job = rollout_job(setup, limit=3)
    job(tmp_path / "reference")
    out = tmp_path / "damaged"
    job(out)
    first, _, last = RolloutStore.open_existing(out).table.shards
    flipped = flip_a_byte(out / first["file"])
    (out / last["file"]).unlink()

    advice = f"`attncore rollout --config {out}/config.resolved.yaml` moves it to {out}/quarantine"
    with pytest.raises(UserError, match=rf"{first['file']} fails its checksum .*; {re.escape(advice)}"):
        grade_store(RolloutStore.open_existing(out), GradingConfig(), "plain", progress=False)
    capsys.readouterr()
    summary = run_rollouts(load_config(RolloutJobConfig, out / "config.resolved.yaml", []), progress=False)
    notes = capsys.readouterr().err
    assert f"{first['file']} fails its checksum" in notes and f"{last['file']} is missing" in notes
    assert (summary.generated_now, summary.rollouts) == (2, 3), "exactly the two shards' rollouts"
    assert by_id(RolloutStore.open_existing(out).read_table()) == by_id(
        RolloutStore.open_existing(tmp_path / "reference").read_table()
    )
    [kept] = (out / "quarantine").rglob(first["file"])
    assert kept.read_bytes() == flipped


@pytest.mark.parametrize(("kind", "part"), [("attnpo", "steps.parquet"), ("molsaki", "matrices.safetensors")])
def test_extract_resume_repairs_a_flipped_byte_in_a_part(setup, tmp_path, kind, part, capsys):
    extract = extract_job(setup, tmp_path, kind, count=3)
    extract(tmp_path / "reference")
    out = tmp_path / "damaged"
    extract(out)
    [bad] = out.glob(f"shard-rank0-00001.{part}")
    flipped = flip_a_byte(bad)
    capsys.readouterr()
    extract(out)
    assert f"{bad.name} fails its checksum" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["extracted_now"] == 1
    got, want = AttentionStore.open(out), AttentionStore.open(tmp_path / "reference")
    assert got.summary_table().equals(want.summary_table())
    if kind == "attnpo":
        assert got.step_table().equals(want.step_table())
    else:
        for example in want.iter_examples():
            assert torch.equal(got.example(example.example_id).matrices, example.matrices)
    [kept] = (out / "quarantine").rglob(bad.name)
    assert kept.read_bytes() == flipped


def stopped_writer(job: Job, out: Path) -> int:
    """A child that runs `job` and stops itself right after its first shard is committed."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.environ[CRASH_ENV] = "append.done:1:SIGSTOP"
            job(out)
            code = 0
        finally:
            os._exit(code)
    assert os.WIFSTOPPED(os.waitpid(pid, os.WUNTRACED)[1])
    return pid


def test_one_writer_per_folder_and_a_killed_one_is_taken_over(setup, tmp_path):
    job = rollout_job(setup)
    job(tmp_path / "reference")
    out = tmp_path / "run"
    pid = stopped_writer(job, out)
    try:
        held = rf"^{out} is being written by another process \(pid {pid}: .+\); wait for it to end"
        with pytest.raises(UserError, match=held):
            job(out)
        with pytest.raises(UserError, match=held):
            grade_store(RolloutStore.open_existing(out), GradingConfig(), "plain", progress=False)
        cli = subprocess.run(
            [sys.executable, "-m", "attncore", "grade", str(out)], capture_output=True, text=True
        )
        assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1
        assert cli.stderr.startswith(f"error: {out} is being written by another process (pid {pid}: ")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert os.waitpid(pid, 0)[1] == 0, "the first writer ends undisturbed"
    assert snapshot(out) == snapshot(tmp_path / "reference")

    killed = tmp_path / "killed"
    pid = stopped_writer(job, killed)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    job(killed)
    assert (killed / ".lock-main").read_text().startswith(f"pid {os.getpid()}: ")
