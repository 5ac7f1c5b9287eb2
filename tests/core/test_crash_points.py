"""Crash consistency of every job that writes a store: the job is SIGKILLed at each step of the write
protocol of `attncore.shards` (before and after each write, fsync and rename of a shard, a part and the
manifest, and around removing a replaced file), rerun, and must leave exactly the files, byte for
byte, that an uninterrupted run leaves.

The jobs run in forked children of the test process, which has loaded the model, started the grading
pool and run each job once, so a kill and its rerun cost a fraction of a second; the kill itself is a
real SIGKILL the job sends itself (`ATTNCORE_CRASH_AT`, see `attncore.shards.crash_point`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from attncore.config import load_config
from attncore.eval.config import SuiteConfig
from attncore.eval.suite import run_suite
from attncore.grading import Grader, GradingMode
from attncore.rollout.grade import GradingConfig, grade_store
from attncore.rollout.job import RolloutJobConfig, build_engine, run_rollouts
from attncore.rollout.store import RolloutStore
from attncore.shards import CRASH_ENV, CRASH_POINTS, LOCK_PREFIX
from attncore.store.config import ExtractConfig
from attncore.store.extract import run_extraction
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
    configs name the folder, which is replaced by `<out>`."""
    return {
        str(path.relative_to(folder)): path.read_bytes().replace(str(folder).encode(), b"<out>")
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
    rows = [{"idx": i, "question": f"What is {i} + 1?", "answer": f"#### {i + 1}"} for i in range(2)]
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


def rollout_job(setup) -> Job:
    def job(out: Path) -> None:
        cfg = setup["cfg"].model_copy(update={"out": str(out)})
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


def test_extract_survives_a_kill_at_every_step(setup, tmp_path):
    rationales = tmp_path / "rationales.jsonl"
    short = {"problem": {"difficulty": (1, 2)}, "trace": {"redundancy": (0.0, 0.2)}}
    write_examples(generate_examples(SyntheticConfig(count=2, seed=3, **short)), rationales)

    def extract(out: Path) -> None:
        cfg = ExtractConfig(
            kind="molsaki",
            input={"path": str(rationales)},
            model={"name": setup["model"], "device": "cpu"},
            out=str(out),
            batch_size=1,
            threads=1,
        )
        run_extraction(cfg, progress=False)

    check_every_point(extract, None, tmp_path, [*CREATE, *APPEND_WITH_PART])
