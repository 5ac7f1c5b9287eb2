"""Bad inputs through the real `attncore` command line (in-process `main([...])`).

Every case must end in exit status 2 and one line `error: ...` on stderr that names the key or file at
fault, never a traceback, and must leave the data already on disk byte for byte as it was. The stores
the cases damage or point at are built once per module with a tiny random model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from attncore.cli import main

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
EXTRACT_YAML = EXPERIMENTS / "attention" / "extract_smollm2.yaml"
SUITE_YAML = EXPERIMENTS / "eval" / "cpu_suite.yaml"


def run_cli(capsys: pytest.CaptureFixture, args: list[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file under `folders` with the SHA-256 of its bytes."""
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders
        if folder.is_dir()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_one_line_error(code: int, err: str, *names: object) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def unwritable_folder(tmp_path: Path) -> Path:
    """An existing folder this process cannot create files in: a read-only one, or for root (whom
    permissions do not stop) sysfs's `/sys/fs`."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    folder = Path("/sys/fs")
    try:
        (folder / "attncore-probe").touch()
    except OSError:
        return folder
    pytest.skip("no folder that root cannot write into")


@dataclass
class Paths:
    """What a case may point at: `store` (a graded rollout folder), `attention` (an attention store),
    `traces` (a problems file), `tiny` (a model folder), `cache`, `unwritable`, and a scratch `tmp`."""

    store: Path
    attention: Path
    traces: Path
    tiny: Path
    cache: Path
    unwritable: Path
    tmp: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir) -> dict[str, Path]:
    """A graded rollout folder, a synthetic traces file and an attention store, made by the CLI."""
    root = tmp_path_factory.mktemp("built")
    tiny = tiny_model_dir("llama")
    store, traces, attention = root / "rollouts", root / "traces.jsonl", root / "attention"
    for args in (
        ["rollout", f"model.name={tiny}", "data.limit=2", "sampling.max_tokens=4", "grading.workers=1"],
        ["synth", "generate", "--out", traces, "count=2"],
        ["extract", f"input.path={traces}", f"model.name={tiny}", "threads=1", "batch_size=1"],
    ):
        out = {"rollout": store, "synth": None, "extract": attention}[args[0]]
        with pytest.raises(SystemExit) as exited:
            main(
                [str(a) for a in args]
                + ([f"out={out}", "-q"] if out else [])
                + (["--no-wandb"] if out == store else [])
            )
        assert exited.value.code == 0
    return {"store": store, "traces": traces, "attention": attention, "tiny": tiny}


@pytest.fixture
def paths(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    """Copies of the built stores (cases may damage them), an empty cache and a read-only folder."""
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    monkeypatch.setenv("ATTNCORE_CACHE_DIR", str(cache))
    store = tmp_path / "rollouts"
    attention = tmp_path / "attention"
    shutil.copytree(built["store"], store)
    shutil.copytree(built["attention"], attention)
    unwritable = unwritable_folder(tmp_path)
    return Paths(store, attention, built["traces"], built["tiny"], cache, unwritable, tmp_path)


Case = Callable[[Paths], list[object]]


def rollout(p: Paths, *overrides: object) -> list[object]:
    """A rollout of the tiny model into a new folder `fresh` (unless `overrides` name another `out`)."""
    return [
        "rollout",
        f"model.name={p.tiny}",
        "data.limit=2",
        "sampling.max_tokens=4",
        f"out={p.tmp / 'fresh'}",
        "grading.workers=1",
        "--no-wandb",
        "-q",
        *overrides,
    ]


def into_store(p: Paths, *overrides: object) -> list[object]:
    """A rollout into the stored folder, whose configuration it repeats."""
    return rollout(p, f"out={p.store}", *overrides)


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def manifest(p: Paths) -> Path:
    return p.store / "manifest-main.json"


def damaged_manifest(content: Callable[[Paths], bytes | str]) -> Case:
    def case(p: Paths) -> list[object]:
        write(manifest(p), content(p))
        return ["grade", p.store, "--workers", "1"]

    return case


def shard_with_bad_utf8(p: Paths) -> list[object]:
    """The stored `text` column of the first shard holds bytes that are not UTF-8; the manifest's
    checksum is updated, so only the bytes themselves are wrong."""
    entry = json.loads(manifest(p).read_text())["shards"][0]
    path = p.store / entry["file"]
    table = pq.read_table(path)
    raw = pa.array([b"\xff\xfe not utf-8"] * table.num_rows, pa.binary()).view(pa.string())
    pq.write_table(table.set_column(table.column_names.index("text"), "text", raw), path)
    data = json.loads(manifest(p).read_text())
    data["shards"][0]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    write(manifest(p), json.dumps(data))
    return ["grade", p.store, "--workers", "1"]


def random_gguf(p: Paths) -> Path:
    return write(p.tmp / "model.gguf", bytes(range(256)) * 64)


def truncated_gguf(p: Paths) -> Path:
    from attncore.models import _smollm2_gguf

    with _smollm2_gguf().open("rb") as fh:
        return write(p.tmp / "cut.gguf", fh.read(4096))


def one_problem(p: Paths) -> Path:
    """A data folder holding a one-problem GSM8K test split."""
    folder = p.tmp / "data"
    (folder / "benchmarks" / "gsm8k").mkdir(parents=True)
    write(folder / "benchmarks" / "gsm8k" / "test.jsonl", '{"question": "1 + 1?", "answer": "2\\n#### 2"}\n')
    return folder


def suite_with_unknown_benchmark(p: Paths) -> Path:
    return write(p.tmp / "suite.yaml", "benchmarks:\n  gsm9k:\n    limit: 2\n")


CASES: dict[str, tuple[Case, tuple[object, ...]]] = {
    # config values out of bounds, refused before any work
    "negative data.limit": (lambda p: rollout(p, "data.limit=-3"), ("data.limit", "-3")),
    "zero data.limit": (lambda p: rollout(p, "data.limit=0"), ("data.limit",)),
    "negative limit and offset": (lambda p: rollout(p, "data.limit=-1", "data.offset=-1"), ("data.offset",)),
    "max_tokens beyond int32": (
        lambda p: rollout(p, "sampling.max_tokens=3000000000"),
        ("sampling.max_tokens",),
    ),
    "top_k beyond int32": (lambda p: rollout(p, "sampling.top_k=3000000000"), ("sampling.top_k",)),
    "zero samples": (lambda p: rollout(p, "sampling.n=0"), ("sampling.n",)),
    "a billion samples": (lambda p: rollout(p, "sampling.n=1000000000"), ("sampling.n",)),
    "negative temperature": (lambda p: rollout(p, "sampling.temperature=-1"), ("sampling.temperature",)),
    "NaN temperature": (lambda p: rollout(p, "sampling.temperature=.nan"), ("sampling.temperature",)),
    "top_p zero": (lambda p: rollout(p, "sampling.top_p=0"), ("sampling.top_p",)),
    "zero grading workers": (lambda p: rollout(p, "grading.workers=0"), ("grading.workers",)),
    "a hundred thousand grading workers": (
        lambda p: rollout(p, "grading.workers=100000"),
        ("grading.workers",),
    ),
    "negative grading timeout": (lambda p: rollout(p, "grading.timeout_s=-1"), ("grading.timeout_s",)),
    "empty out": (lambda p: rollout(p, "out="), ("out",)),
    "blank out": (lambda p: rollout(p, "out=  "), ("out",)),
    "unknown engine": (lambda p: rollout(p, "engine=tpu"), ("engine", "tpu")),
    "unknown device": (lambda p: rollout(p, "model.device=tpu"), ("model.device", "tpu")),
    "threads beyond the bound": (lambda p: rollout(p, "threads=100000"), ("threads",)),
    "unknown benchmark": (lambda p: rollout(p, "data.name=gsm9k"), ("gsm9k",)),
    "unknown split": (lambda p: rollout(p, "data.split=nosuch"), ("nosuch",)),
    "offset past the end": (lambda p: rollout(p, "data.offset=100000"), ("data.offset=100000",)),
    # malformed overrides and config files
    "unknown key": (lambda p: rollout(p, "samplng.n=2"), ("samplng",)),
    "text for a number": (lambda p: rollout(p, "sampling.n=many"), ("sampling.n", "many")),
    "override without a value": (lambda p: rollout(p, "sampling.n"), ("sampling.n",)),
    "override below a value": (lambda p: rollout(p, "engine.name=hf"), ("engine",)),
    "binary config": (
        lambda p: ["rollout", "--config", write(p.tmp / "c.yaml", os.urandom(64) + b"\xff")],
        ("c.yaml",),
    ),
    "missing config": (lambda p: ["rollout", "--config", p.tmp / "absent.yaml"], ("absent.yaml",)),
    "folder as config": (lambda p: ["rollout", "--config", p.tmp], ("config file not found",)),
    "invalid YAML": (
        lambda p: ["rollout", "--config", write(p.tmp / "c.yaml", "a: [1,\n")],
        ("c.yaml", "line"),
    ),
    "YAML list": (lambda p: ["rollout", "--config", write(p.tmp / "c.yaml", "- 1\n")], ("c.yaml", "mapping")),
    "unknown key in a file": (
        lambda p: ["rollout", "--config", write(p.tmp / "c.yaml", "sampling:\n  tempo: 1\n")],
        ("c.yaml", "sampling.tempo"),
    ),
    "unknown option": (lambda p: ["rollout", "--colour"], ("--colour",)),
    # models
    "random-bytes GGUF": (lambda p: rollout(p, f"model.name={random_gguf(p)}"), ("model.gguf",)),
    "truncated GGUF": (
        lambda p: rollout(
            p,
            f"model.name={truncated_gguf(p)}",
        ),
        ("cut.gguf",),
    ),
    "unknown model": (
        lambda p: rollout(
            p,
            "model.name=no-such-model",
        ),
        ("no-such-model",),
    ),
    "empty model folder": (
        lambda p: rollout(
            p,
            f"model.name={(p.tmp / 'empty').mkdir() or p.tmp / 'empty'}",
        ),
        ("empty",),
    ),
    "device without an accelerator": (lambda p: rollout(p, "model.device=cuda:99"), ("model.device",)),
    "another config's folder": (lambda p: into_store(p, "sampling.seed=7"), ("sampling.seed", "rollouts")),
    # where outputs and caches go
    "out inside a file": (lambda p: rollout(p, f"out={write(p.tmp / 'f', 'x')}/sub"), ("f",)),
    "read-only out": (lambda p: rollout(p, f"out={p.unwritable}"), (lambda p: p.unwritable,)),
    "uncreatable out": (lambda p: rollout(p, f"out={p.unwritable}/runs"), (lambda p: p.unwritable,)),
    "cache path is a file": (
        lambda p: (write(p.cache, "x"), rollout(p, f"model.name={random_gguf(p)}"))[1],
        ("cache", "ATTNCORE_CACHE_DIR"),
    ),
    "unwritable cache": (
        lambda p: (
            os.environ.__setitem__("ATTNCORE_CACHE_DIR", str(p.unwritable / "cache")),
            rollout(p, f"model.name={random_gguf(p)}"),
        )[1],
        ("cache", "ATTNCORE_CACHE_DIR"),
    ),
    "read-only eval out": (
        lambda p: ["eval", f"model.name={p.tiny}", f"data_dir={one_problem(p)}", f"out={p.unwritable}", "-q"],
        (lambda p: p.unwritable,),
    ),
    "read-only extract out": (
        lambda p: ["extract", f"input.path={p.traces}", f"model.name={p.tiny}", f"out={p.unwritable}", "-q"],
        (lambda p: p.unwritable,),
    ),
    # grading a damaged rollout folder
    "truncated manifest": (damaged_manifest(lambda p: manifest(p).read_text()[:40]), ("manifest-main.json",)),
    "manifest {}": (damaged_manifest(lambda p: "{}"), ("manifest-main.json",)),
    "manifest []": (damaged_manifest(lambda p: "[]"), ("manifest-main.json",)),
    "manifest null": (damaged_manifest(lambda p: "null"), ("manifest-main.json",)),
    "binary manifest": (damaged_manifest(lambda p: b"\xff\x00\xfe"), ("manifest-main.json",)),
    "manifest shards not a list": (
        damaged_manifest(lambda p: '{"meta": {}, "shards": 3}'),
        ("manifest-main.json",),
    ),
    "invalid UTF-8 in a stored text column": (
        shard_with_bad_utf8,
        (lambda p: json.loads(manifest(p).read_text())["shards"][0]["file"],),  # graded: not 00000
    ),
    "grade a missing folder": (lambda p: ["grade", p.tmp / "nothing"], ("nothing",)),
    "grade a file": (lambda p: ["grade", write(p.tmp / "file", "x")], ("file",)),
    "unknown grading mode": (lambda p: ["grade", p.store, "--mode", "vibes"], ("mode", "vibes")),
    "zero grading workers on the command line": (
        lambda p: ["grade", p.store, "--workers", "0"],
        ("workers",),
    ),
    # evaluation suites
    "unknown benchmark from an override": (
        lambda p: ["eval", "benchmarks.gsm9k.limit=2", "out=e"],
        ("command-line override", "benchmarks.gsm9k", "gsm9k"),
    ),
    "unknown benchmark in a file": (
        lambda p: ["eval", "--config", suite_with_unknown_benchmark(p), "out=e"],
        ("suite.yaml", "benchmarks.gsm9k"),
    ),
    "benchmark limit below one": (
        lambda p: ["eval", "--config", SUITE_YAML, "benchmarks.gsm8k.limit=-1", "out=e"],
        ("benchmarks.gsm8k.limit",),
    ),
    "benchmark max_tokens beyond int32": (
        lambda p: ["eval", "benchmarks.gsm8k.sampling.max_tokens=3000000000", "out=e"],
        ("max_tokens",),
    ),
    "empty eval out": (lambda p: ["eval", "out="], ("out",)),
    # attention extraction and its viewer
    "shipped extract config, missing input": (
        lambda p: ["extract", "--config", EXTRACT_YAML, f"input.path={p.tmp / 'none.jsonl'}", "out=x", "-q"],
        ("none.jsonl",),
    ),
    "extract option of the other kind": (
        lambda p: ["extract", "--config", EXTRACT_YAML, "kind=molsaki", "out=x"],
        ("prompt", "molsaki"),
    ),
    "synthetic set beyond the bound": (
        lambda p: ["synth", "generate", "--out", p.tmp / "t.jsonl", "count=1000000000000"],
        ("count",),
    ),
    "synthetic set to an unsupported file": (
        lambda p: ["synth", "generate", "--out", p.tmp / "t.txt", "count=2"],
        ("t.txt",),
    ),
    "extract input of another type": (
        lambda p: ["extract", f"input.path={write(p.tmp / 'x.csv', 'a,b')}", f"model.name={p.tiny}", "out=x"],
        ("x.csv",),
    ),
    "empty extract out": (lambda p: ["extract", f"input.path={p.traces}", "out="], ("out",)),
    "view of a huge figure": (
        lambda p: [
            "view",
            "-s",
            p.attention,
            "-r",
            "synthetic/0",
            "-o",
            "v",
            "--width",
            "70000",
            "--height",
            "70000",
        ],
        ("70000",),
    ),
    "view width not a number": (
        lambda p: ["view", "-s", p.attention, "-r", "synthetic/0", "-o", "v", "--width", "wide"],
        ("--width",),
    ),
    "view of a missing store": (lambda p: ["view", "-s", p.tmp / "none", "-r", "a", "-o", "v"], ("none",)),
}


REFUSED_BEFORE_ANY_WORK = set(list(CASES)[: list(CASES).index("unknown option") + 1])


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_error_and_loses_nothing(name: str, paths: Paths, capsys) -> None:
    """The case's arguments (it may damage the copies first), then: exit 2, one line naming what is at
    fault, the stores unchanged, and no model loaded into the cache."""
    make_args, names = CASES[name]
    args = make_args(paths)
    before = snapshot(paths.store, paths.attention)
    code, _, err = run_cli(capsys, args)
    assert_one_line_error(code, err, *(n(paths) if callable(n) else n for n in names))
    assert snapshot(paths.store, paths.attention) == before
    if name in REFUSED_BEFORE_ANY_WORK:
        assert not (paths.tmp / "fresh").exists(), "the job started before its config was checked"
    assert not list(paths.cache.glob("models/*")), "a model was loaded before the input was checked"


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


def test_quiet_hides_the_model_loading_bars(paths: Paths, capsys) -> None:
    """`-q` silences the libraries' own bars too (transformers' "Loading weights"), not only ours."""
    code, _, err = run_cli(capsys, rollout(paths))
    assert code == 0 and "Loading weights" not in err and "it/s]" not in err, err
    loud = [arg for arg in rollout(paths, f"out={paths.tmp / 'loud'}") if arg != "-q"]
    code, _, err = run_cli(capsys, loud)
    assert code == 0 and "Loading weights" in err
