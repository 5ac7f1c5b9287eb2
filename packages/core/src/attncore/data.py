"""Benchmarks and training sets, normalised to one record type.

Local copies are read from the reference-data folder (`paths.data_dir`); the same benchmark names load
from the Hugging Face hub when a hub dataset id is given. Every source goes through one normaliser per
benchmark, so a problem looks the same whichever way it was loaded. The out-of-domain sets of AttnPO
(GPQA-Diamond, MMLU, LiveCodeBench) have no local copy and always load from the hub.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import pickle
import random
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from attncore.config import Config
from attncore.errors import UserError
from attncore.paths import data_dir
from attncore.synthetic.config import SyntheticConfig

BUNDLED_PROBLEMS = Path(__file__).parent / "resources" / "bundled_gsm8k_style.jsonl"
SVAMP_TEST_SIZE = 200
SVAMP_SPLIT_SEED = 0
CHOICE_SHUFFLE_SEED = 0
OPTION_LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Problem:
    """One question with its gold answer; `rationale` is a reference solution when the source has one."""

    id: str
    problem: str
    answer: str
    source: str
    rationale: str | None = None
    meta: dict[str, str] = field(default_factory=dict)


SYNTHETIC = "synthetic"
"""The benchmark name of generated testbed problems (`DataConfig.synthetic` says which set)."""


class DataConfig(Config):
    """Which problems to load. `hub_id` switches from the local folder to `datasets.load_dataset`;
    name `synthetic` generates the testbed set `synthetic` describes (no file, no hub)."""

    name: str = "gsm8k"
    split: str = "test"
    data_dir: str | None = None
    hub_id: str | None = None
    hub_config: str | None = None
    limit: int | None = Field(None, ge=1, description="first N problems after `offset` (null: all)")
    offset: int = Field(0, ge=0, description="problems skipped before the first one taken")
    synthetic: SyntheticConfig | None = Field(None, description="with name 'synthetic': the set to generate")

    @model_validator(mode="after")
    def _synthetic_set(self) -> DataConfig:
        if (self.name == SYNTHETIC) != (self.synthetic is not None):
            raise ValueError(f"name {SYNTHETIC!r} and the synthetic set come together (set both or neither)")
        if self.synthetic is not None and self.hub_id is not None:
            raise ValueError("a synthetic set is generated, not loaded: no hub_id")
        return self


def _first(row: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in row and row[key] is not None:
            return row[key]
    raise UserError(f"record has none of the fields {list(keys)} (fields: {sorted(row)})")


def _number_text(value: Any) -> str:
    """27.0 -> '27', 2.5 -> '2.5', '145.0' -> '145'; other strings unchanged."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() and "e" not in text.lower() else text


_CALC = re.compile(r"<<[^>]*>>")
_GSM_FINAL = re.compile(r"\n?####\s*(.+?)\s*$", re.S)


def _gsm8k(row: dict[str, Any], index: int, source: str) -> Problem:
    solution = str(_first(row, "answer"))
    match = _GSM_FINAL.search(solution)
    if match is None:
        raise UserError(f"{source} row {index}: answer has no '#### N' line")
    rationale = _CALC.sub("", solution[: match.start()]).strip()
    gold = match.group(1).replace(",", "").strip()
    return Problem(f"{source}/{row.get('idx', index)}", str(_first(row, "question")), gold, source, rationale)


def _math_like(row: dict[str, Any], index: int, source: str) -> Problem:
    ident = row.get("unique_id", row.get("id", row.get("idx", index)))
    meta = {k: str(row[k]) for k in ("subject", "level", "url") if row.get(k) is not None}
    solution = row.get("solution")
    return Problem(
        f"{source}/{ident}",
        str(_first(row, "problem", "question", "Problem")),
        _number_text(_first(row, "answer", "Answer")),
        source,
        str(solution) if solution else None,
        meta,
    )


def _svamp(row: dict[str, Any], index: int, source: str) -> Problem:
    body = str(_first(row, "Body", "body")).strip()
    question = str(_first(row, "Question", "question")).strip()
    joiner = " " if body.endswith((".", "?", "!")) else ", "
    meta = {k.lower(): str(row[k]) for k in ("Equation", "Type") if row.get(k) is not None}
    ident = row.get("ID", row.get("idx", index))
    return Problem(
        f"{source}/{ident}", f"{body}{joiner}{question}", _number_text(row["Answer"]), source, None, meta
    )


_ASDIV_ANSWER = re.compile(r"^\s*([^()]+?)\s*(\(.*\))?\s*$")


def _asdiv(row: dict[str, Any], index: int, source: str) -> Problem:
    body = str(_first(row, "body", "Body")).strip()
    question = str(_first(row, "question", "Question")).strip()
    raw = str(_first(row, "answer", "Answer"))
    match = _ASDIV_ANSWER.match(raw)
    answer = _number_text(match.group(1) if match else raw)
    meta = {k: str(row[k]) for k in ("formula", "solution_type") if row.get(k) is not None}
    return Problem(f"{source}/{row.get('idx', index)}", f"{body} {question}", answer, source, None, meta)


def multiple_choice_text(question: str, options: list[str]) -> str:
    """The question followed by its options on lines `A) ...`, `B) ...`."""
    lines = [f"{letter}) {option}" for letter, option in zip(OPTION_LETTERS, options, strict=False)]
    return question.strip() + "\n\n" + "\n".join(lines)


def _gpqa(row: dict[str, Any], index: int, source: str) -> Problem:
    """GPQA lists the correct answer first, so the options are shuffled with a seed fixed per record:
    every load (and every user) sees the same order, and the gold letter is spread over A-D."""
    ident = row.get("Record ID", index)
    options = [str(_first(row, "Correct Answer")).strip()]
    options += [str(_first(row, f"Incorrect Answer {i}")).strip() for i in (1, 2, 3)]
    order = list(range(len(options)))
    random.Random(f"{CHOICE_SHUFFLE_SEED}|{ident}").shuffle(order)
    shuffled = [options[i] for i in order]
    gold = OPTION_LETTERS[order.index(0)]
    meta = {"domain": str(row["High-level domain"])} if row.get("High-level domain") else {}
    question = str(_first(row, "Question"))
    return Problem(f"{source}/{ident}", multiple_choice_text(question, shuffled), gold, source, None, meta)


def _mmlu(row: dict[str, Any], index: int, source: str) -> Problem:
    """MMLU keeps its published option order (its answer letters are already balanced)."""
    options = [str(option) for option in _first(row, "choices")]
    answer = _first(row, "answer")
    gold = OPTION_LETTERS[int(answer)] if str(answer).isdigit() else str(answer).strip().upper()
    subject = str(row.get("subject", ""))
    question = str(_first(row, "question"))
    return Problem(
        f"{source}/{subject}/{index}",
        multiple_choice_text(question, options),
        gold,
        source,
        None,
        {"subject": subject} if subject else {},
    )


def _commonsenseqa(row: dict[str, Any], index: int, source: str) -> Problem:
    """CommonsenseQA in the hub's layout (`question`, `choices: {label, text}`, `answerKey`) or the
    original release's (`question: {stem, choices: [{label, text}]}`); the options keep their letters."""
    question = _first(row, "question")
    if isinstance(question, dict):
        stem, choices = str(_first(question, "stem")), question["choices"]
        labelled = [(str(c["label"]), str(c["text"])) for c in choices]
    else:
        stem, choices = str(question), _first(row, "choices")
        labelled = list(zip(map(str, choices["label"]), map(str, choices["text"]), strict=True))
    options = "\n".join(f"{label}) {text}" for label, text in labelled)
    gold = str(_first(row, "answerKey")).strip().upper()
    return Problem(f"{source}/{row.get('id', index)}", f"{stem.strip()}\n\n{options}", gold, source)


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles strings, numbers, lists and dicts only: a data file must not run code on load."""

    def find_class(self, module: str, name: str) -> Any:
        raise UserError(f"refusing to unpickle {module}.{name} from a dataset field (plain data only)")


def _livecodebench_tests(field_value: str) -> list[dict[str, Any]]:
    """LiveCodeBench stores test cases as JSON, or as base64 of zlib of a pickled JSON string."""
    text = field_value.strip()
    if not text.startswith(("[", "{")):
        raw = zlib.decompress(base64.b64decode(text.encode()))
        text = _PlainDataUnpickler(io.BytesIO(raw)).load()
    return json.loads(text)


LIVECODEBENCH_STDIN = (
    "Read the input from standard input and write the answer to standard output. Give the complete "
    "program in one ```python code block."
)
LIVECODEBENCH_STARTER = (
    "Complete the starter code below (keep its class and method signature) and give the whole solution "
    "in one ```python code block.\n\n```python\n{starter}\n```"
)


def _livecodebench(row: dict[str, Any], index: int, source: str) -> Problem:
    """A coding problem; the gold answer is the JSON test specification read by the `code` grader:
    `{"fn_name": name or null, "tests": [{"input", "output", "testtype": "stdin"|"functional"}]}`."""
    tests = [
        {"input": t["input"], "output": t["output"], "testtype": t["testtype"]}
        for key in ("public_test_cases", "private_test_cases")
        for t in _livecodebench_tests(str(row.get(key) or "[]"))
    ]
    metadata = json.loads(row.get("metadata") or "{}")
    starter = str(row.get("starter_code") or "").strip()
    how = LIVECODEBENCH_STARTER.format(starter=starter) if starter else LIVECODEBENCH_STDIN
    problem = f"{str(_first(row, 'question_content')).strip()}\n\n{how}"
    gold = json.dumps({"fn_name": metadata.get("func_name"), "tests": tests})
    meta = {k: str(row[k]) for k in ("platform", "difficulty", "contest_date") if row.get(k) is not None}
    ident = row.get("question_id", index)
    return Problem(f"{source}/{ident}", problem, gold, source, None, meta)


Normaliser = Callable[[dict[str, Any], int, str], Problem]


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives locally and on the hub, and how its rows become Problems.

    `hub_splits` renames a split for the hub (GPQA publishes its test set as `train`); `hub_files` lists,
    per split, JSON-lines files of the hub repository to read directly, for repositories whose loading
    script `datasets` no longer runs. A benchmark without local files always loads from the hub.
    """

    local: dict[str, str]  # split -> path under the data folder
    normalise: Normaliser
    hub_id: str
    hub_config: str | None = None
    hub_splits: dict[str, str] = field(default_factory=dict)
    hub_files: dict[str, tuple[str, ...]] = field(default_factory=dict)


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "gsm8k": BenchmarkSpec(
        {"test": "benchmarks/gsm8k/test.jsonl", "train": "train/gsm8k/train.jsonl"},
        _gsm8k,
        "openai/gsm8k",
        "main",
    ),
    "math500": BenchmarkSpec({"test": "benchmarks/math500/test.jsonl"}, _math_like, "HuggingFaceH4/MATH-500"),
    "aime24": BenchmarkSpec({"test": "benchmarks/aime24/test.jsonl"}, _math_like, "HuggingFaceH4/aime_2024"),
    "aime25": BenchmarkSpec({"test": "benchmarks/aime25/test.jsonl"}, _math_like, "opencompass/AIME2025"),
    "amc23": BenchmarkSpec({"test": "benchmarks/amc23/test.jsonl"}, _math_like, "math-ai/amc23"),
    "olympiadbench_581": BenchmarkSpec(
        {"test": "benchmarks/olympiadbench_581/test.jsonl"}, _math_like, "Hothan/OlympiadBench"
    ),
    "svamp": BenchmarkSpec({"test": "benchmarks/svamp/test.jsonl"}, _svamp, "ChilleD/SVAMP"),
    "asdiv": BenchmarkSpec({"test": "benchmarks/asdiv/test.jsonl"}, _asdiv, "EleutherAI/asdiv"),
    "commonsenseqa": BenchmarkSpec(
        {
            "train": "train/commonsenseqa/train.jsonl",
            "validation": "benchmarks/commonsenseqa/validation.jsonl",
        },
        _commonsenseqa,
        "tau/commonsense_qa",
    ),
    "gpqa_diamond": BenchmarkSpec({}, _gpqa, "Idavidrein/gpqa", "gpqa_diamond", hub_splits={"test": "train"}),
    "mmlu": BenchmarkSpec({}, _mmlu, "cais/mmlu", "all"),
    # `v6`: the problems added in release v6 (test6.jsonl); `release_v6`: every problem up to v6.
    "livecodebench": BenchmarkSpec(
        {},
        _livecodebench,
        "livecodebench/code_generation_lite",
        hub_files={
            "v6": ("test6.jsonl",),
            "release_v6": ("test.jsonl", *(f"test{i}.jsonl" for i in range(2, 7))),
        },
    ),
}

# SVAMP has no official split; the distillation paper trains on 800 and tests on 200. We fix one
# seeded permutation of the 1000 rows: the first 200 are `test200`, the other 800 `train800`.
SVAMP_SPLITS = ("test200", "train800")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a malformed line is reported with its number."""
    rows = []
    with path.open() as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
    return rows


def _svamp_split(rows: list[dict[str, Any]], split: str) -> list[tuple[int, dict[str, Any]]]:
    order = list(range(len(rows)))
    random.Random(SVAMP_SPLIT_SEED).shuffle(order)
    chosen = order[:SVAMP_TEST_SIZE] if split == "test200" else order[SVAMP_TEST_SIZE:]
    return [(i, rows[i]) for i in sorted(chosen)]


def _local_split(name: str, split: str) -> str:
    """The split of the local files that `split` is read from; an unknown split is an error."""
    spec = BENCHMARKS[name]
    base_split = "test" if name == "svamp" and split in SVAMP_SPLITS else split
    if base_split not in spec.local:
        known = sorted(spec.local) + (list(SVAMP_SPLITS) if name == "svamp" else [])
        raise UserError(f"benchmark {name!r} has no split {split!r} (known: {', '.join(known)})")
    return base_split


def _local_rows(name: str, split: str, folder: Path | None) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    spec = BENCHMARKS[name]
    base_split = _local_split(name, split)
    if folder is None:
        raise UserError(
            f"no data folder for {name!r}: set ATTNCORE_DATA_DIR, data.data_dir, or data.hub_id to load from the hub"
        )
    path = folder / spec.local[base_split]
    if not path.is_file():
        raise UserError(f"{name!r} split {split!r} not found at {path}")
    rows = read_jsonl(path)
    indexed = _svamp_split(rows, split) if base_split != split else list(enumerate(rows))
    return indexed, f"{name}/{split}"


@contextlib.contextmanager
def _quiet_hub_retries() -> Iterator[None]:
    """Without network the hub client logs every retry; the one-line error after them is enough."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _hub_rows(cfg: DataConfig) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    import datasets

    spec = BENCHMARKS.get(cfg.name)
    hub_id = cfg.hub_id or (spec.hub_id if spec else cfg.name)
    own = spec is not None and hub_id == spec.hub_id
    config_name = cfg.hub_config or (spec.hub_config if own else None)
    split = spec.hub_splits.get(cfg.split, cfg.split) if own else cfg.split
    files = spec.hub_files if own else {}
    if files and cfg.split not in files:
        raise UserError(f"benchmark {cfg.name!r} has no split {cfg.split!r} (known: {', '.join(files)})")
    try:
        with _quiet_hub_retries():
            if files:
                urls = [f"hf://datasets/{hub_id}/{name}" for name in files[cfg.split]]
                ds = datasets.load_dataset("json", data_files=urls, split="train")
            else:
                ds = datasets.load_dataset(hub_id, config_name, split=split)
    except Exception as exc:  # the hub raises many types; the user needs the first line only
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"could not load {hub_id!r} (split {cfg.split!r}) from the hub: {first}") from None
    return list(enumerate(ds)), f"{cfg.name}/{cfg.split}"


def hub_only(name: str) -> bool:
    """True for a registered benchmark without a local copy (it always loads from the hub)."""
    return name in BENCHMARKS and not BENCHMARKS[name].local


def _check_known(cfg: DataConfig) -> None:
    if cfg.name not in BENCHMARKS and cfg.hub_id is None and cfg.name != SYNTHETIC:
        raise UserError(
            f"unknown benchmark {cfg.name!r} (known: {', '.join(BENCHMARKS)}; or give data.hub_id)"
        )


def _window(problems: list[Problem], cfg: DataConfig, source: str) -> list[Problem]:
    """`problems` from `cfg.offset`, at most `cfg.limit` of them; an offset past the end is an error."""
    if problems and cfg.offset >= len(problems):
        raise UserError(f"data.offset={cfg.offset} is past the end of {source} ({len(problems)} problems)")
    end = None if cfg.limit is None else cfg.offset + cfg.limit
    return problems[cfg.offset : end]


def load_problems(cfg: DataConfig) -> list[Problem]:
    """Problems for one benchmark split, from the local folder or the hub, then offset/limit applied."""
    _check_known(cfg)
    if cfg.synthetic is not None:
        return _window(synthetic_problems(cfg.synthetic), cfg, f"{SYNTHETIC} set {cfg.synthetic.id_prefix!r}")
    if cfg.hub_id is not None or hub_only(cfg.name):
        indexed, source = _hub_rows(cfg)
    else:
        indexed, source = _local_rows(cfg.name, cfg.split, data_dir(cfg.data_dir))
    normalise = BENCHMARKS[cfg.name].normalise if cfg.name in BENCHMARKS else _math_like
    problems = [normalise(dict(row), index, source) for index, row in indexed]
    return _window(problems, cfg, source)


def synthetic_problems(cfg: SyntheticConfig) -> list[Problem]:
    """The generated testbed problems of `cfg` (ids `<id_prefix>/<index>`, the trace as rationale)."""
    from attncore.synthetic.dataset import generate_examples  # it imports this module

    return [example.to_problem() for example in generate_examples(cfg)]


def bundled_problems() -> list[Problem]:
    """A few GSM8K-style problems shipped with the package, for machines without the data folder."""
    return [_gsm8k(row, i, "bundled") for i, row in enumerate(read_jsonl(BUNDLED_PROBLEMS))]


def load_problems_or_bundled(cfg: DataConfig) -> tuple[list[Problem], str]:
    """Like `load_problems`, but falls back to the bundled problems when no data folder exists."""
    _check_known(cfg)
    if cfg.synthetic is not None:
        return load_problems(cfg), SYNTHETIC
    if cfg.hub_id is None and not hub_only(cfg.name) and data_dir(cfg.data_dir) is None:
        _local_split(cfg.name, cfg.split)
        return _window(bundled_problems(), cfg, "the bundled problems"), "bundled"
    return load_problems(cfg), "data"


ROW_FILE_SUFFIXES = (".jsonl", ".parquet")


def check_row_file(path: Path) -> None:
    """A one-line error unless `path` names a JSON-lines or Parquet file."""
    if path.suffix not in ROW_FILE_SUFFIXES:
        raise UserError(
            f"{path}: unsupported file type {path.suffix!r} (use {' or '.join(ROW_FILE_SUFFIXES)})"
        )


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines or Parquet file (by suffix): the one reader of row files."""
    check_row_file(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Write rows as JSON lines or Parquet (by suffix), atomically; creates the parent folder."""
    check_row_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        write_jsonl(rows, path)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.replace(path)


def write_jsonl(records: Iterable[dict[str, Any]], path: Path) -> None:
    """Write JSON lines atomically (temporary file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
