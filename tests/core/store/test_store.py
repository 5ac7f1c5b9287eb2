"""Attention extraction and its store on tiny models: AttnPO step scores and MoLSAKI stepwise matrices
against eager attention reduced with plain loops, batching, head splitting, skips, rule checks,
checksums, resume after kill -9, and two data-parallel processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
import torch

from attncore.alignment import decode, encode_text, token_ranges_by_start
from attncore.critical import CriticalConfig, alignment_hash, find_critical_units, unit_token_sets
from attncore.errors import UserError
from attncore.models import ModelConfig, load_model
from attncore.prompts import PromptConfig, encode_prompt
from attncore.rollout.store import RolloutStore
from attncore.rollout.types import Rollout
from attncore.steps import StepSegmenterConfig, segment_response, sentence_spans
from attncore.store.config import ExtractConfig, TextFormat
from attncore.store.extract import plan_batches, run_extraction, special_prefix
from attncore.store.inputs import load_responses, teacher_forced_response
from attncore.store.store import AttentionStore
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.dataset import generate_examples, write_examples
from attncore.think import THINK_OPEN_LINE
from attncore.tiny import train_tokenizer

TOL = 1e-5
SHORT_TRACES = {"problem": {"difficulty": (1, 3)}, "trace": {"redundancy": (0.3, 0.6)}}


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """Extractions here run with `threads=1` (fast on a busy CPU); other tests keep their setting."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def traces():
    return generate_examples(SyntheticConfig(count=7, seed=3, **SHORT_TRACES))


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


def make_rollout(
    tok, rollout_id: str, question: str, response: str, finish: str = "stop", correct=None
) -> Rollout:
    """A rollout whose ids are the tokens of `response` (+ EOS), after a fixed chat prompt."""
    prompt = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{THINK_OPEN_LINE}"
    completion = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    if finish == "length":
        completion = completion[: len(completion) // 2]
    return Rollout(
        rollout_id,
        rollout_id.split("#")[0],
        0,
        "synthetic",
        question,
        "1",
        prompt,
        tok(prompt, add_special_tokens=False)["input_ids"],
        completion,
        response,
        finish,
        "tiny",
        0,
        0.0,
        1.0,
        0,
        512,
        extra={"correct": correct},
    )


@pytest.fixture(scope="module")
def rollout_dir(tmp_path_factory, traces, tokenizer):
    """Seven traces as rollouts, plus one cut at the length limit and one that never closes `</think>`."""
    rollouts = [
        make_rollout(
            tokenizer, f"{t.id}#0", t.problem.text, t.trace.text[len(THINK_OPEN_LINE) :], correct=i % 2 == 0
        )
        for i, t in enumerate(traces)
    ]
    rollouts.append(make_rollout(tokenizer, "cut#0", "q", traces[0].trace.text[len(THINK_OPEN_LINE) :], "length"))
    rollouts.append(make_rollout(tokenizer, "open#0", "q", "So 2 + 3 = 5. The answer is 5."))
    path = tmp_path_factory.mktemp("rollouts")
    RolloutStore(path, {"kind": "rollouts"}).append(rollouts)
    return path, rollouts


def eager_model(model_dir: Path):
    return load_model(ModelConfig(name=str(model_dir), attn_implementation="eager"))


def eager_attentions(model, ids: list[int]) -> tuple[torch.Tensor, ...]:
    """Per layer (heads, T, T) softmax attention of one unpadded sequence, from an eager model."""
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_attentions=True)
    return tuple(a[0] for a in out.attentions)


def attnpo_config(model_dir: Path, rollouts: Path, out: Path, **fields) -> ExtractConfig:
    return ExtractConfig(
        input={"path": str(rollouts)},
        model={"name": str(model_dir), "device": "cpu"},
        out=str(out),
        threads=1,
        **fields,
    )


def test_plan_batches_groups_by_length():
    lengths = [5, 50, 7, 48, 6, 49, 100]
    assert plan_batches(lengths, batch_size=3) == [[6, 1, 5], [3, 2, 4], [0]]
    assert plan_batches(lengths, batch_size=3, max_batch_tokens=120) == [[6], [1, 5], [3, 2], [4, 0]]
    assert plan_batches(lengths, batch_size=8, max_batch_tokens=10) == [[6], [1], [5], [3], [2], [4], [0]]
    assert plan_batches([], batch_size=2) == []


@pytest.mark.parametrize("arch", ["qwen2", "gemma3"])
def test_attnpo_step_scores_equal_eager_attention_and_batching_changes_nothing(
    arch, tiny_model_dir, rollout_dir, tmp_path
):
    """Every head's S^{l,h}_k equals (1/|s_k|) Σ_{m∈F} Σ_{n∈s_k} a(m→n) of eager attention on the rollout
    alone; batched, unbatched with heads split over several forwards, and an explicit head list agree."""
    model_dir = tiny_model_dir(arch)
    path, rollouts = rollout_dir
    run_extraction(attnpo_config(model_dir, path, tmp_path / "b4", batch_size=4), progress=False)
    run_extraction(
        attnpo_config(model_dir, path, tmp_path / "b1", batch_size=1, capture_mb=1), progress=False
    )
    picked = [(3, 1), (0, 2), (2, 3)]
    run_extraction(
        attnpo_config(model_dir, path, tmp_path / "some", heads=picked, batch_size=3), progress=False
    )

    batched, single = AttentionStore.open(tmp_path / "b4"), AttentionStore.open(tmp_path / "b1")
    summary = {r["rollout_id"]: r for r in batched.summary_table().to_pylist()}
    assert summary["cut#0"]["status"] == "skipped" and summary["cut#0"]["reason"] == "truncated"
    assert summary["open#0"]["reason"] == "no_think_end"
    loaded = eager_model(model_dir)
    tok, model = loaded.tokenizer, loaded.model
    think = tok.convert_tokens_to_ids("</think>")
    checked = 0
    for r in rollouts[:-2]:
        segmented = segment_response(tok, r.completion_ids)
        if not segmented.ok:
            assert summary[r.rollout_id]["reason"] == segmented.reason
            continue
        got, alone = batched.rollout(r.rollout_id), single.rollout(r.rollout_id)
        prompt = len(r.prompt_ids)
        answer = range(prompt + r.completion_ids.index(think) + 1, prompt + len(r.completion_ids))
        assert got.answer_tokens == len(answer) and got.total_tokens == prompt + len(r.completion_ids)
        assert got.uniform_score == pytest.approx(len(answer) / got.total_tokens)
        assert got.correct == r.extra["correct"] and got.text == decode(tok, r.completion_ids)
        assert got.steps == segmented.steps and len(got.heads) == 16
        attn = eager_attentions(model, [*r.prompt_ids, *r.completion_ids])
        expected = torch.zeros(len(got.heads), len(got.steps))
        for i, (layer, head) in enumerate(got.heads):
            for k, step in enumerate(got.steps):
                keys = slice(prompt + step.tokens[0], prompt + step.tokens[1])
                mass = sum(attn[layer][head, m, keys].sum() for m in answer)
                expected[i, k] = mass / (step.tokens[1] - step.tokens[0])
        assert (got.scores - expected).abs().max() <= TOL, r.rollout_id
        assert (alone.scores - expected).abs().max() <= TOL, r.rollout_id
        assert expected.std() > 1e-3 * expected.mean(), "scores differ between steps and heads"
        some = AttentionStore.open(tmp_path / "some").rollout(r.rollout_id)
        assert some.heads == tuple(picked)
        rows = [got.heads.index(h) for h in picked]
        assert (some.scores - expected[rows]).abs().max() <= TOL
        checked += 1
    assert checked >= 4

    table = batched.step_table()
    assert table.num_rows == 16 * sum(r["n_steps"] for r in summary.values())
    one = table.filter(pc.equal(table.column("rollout_id"), batched.ids()[0])).slice(0, 1).to_pylist()[0]
    assert (one["layer"], one["head"], one["step_index"], one["token_start"]) == (0, 0, 0, 0)


def rationale_file(tmp_path: Path, traces) -> Path:
    path = tmp_path / "rationales.jsonl"
    write_examples(list(traces), path)
    return path


@pytest.fixture(scope="module")
def bos_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama with a tokenizer that puts BOS before every text, as Llama-3 does."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    target = tmp_path_factory.mktemp("tiny-bos") / "model"
    shutil.copytree(tiny_model_dir("llama"), target)
    tok = AutoTokenizer.from_pretrained(target)
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", special_tokens=[("<|bos|>", tok.bos_token_id)]
    )
    tok.save_pretrained(target)
    return target


def test_molsaki_matrices_equal_eager_attention_with_bos(bos_model_dir, traces, tmp_path):
    """A_l[s, c] = Σ_{i∈s} Σ_{j∈c} mean_h a_l(i→j) on the canonical text read after BOS, per layer."""
    critical = CriticalConfig(keywords=["cookies"])
    cfg = ExtractConfig(
        kind="molsaki",
        input={"path": str(rationale_file(tmp_path, traces))},
        model={"name": str(bos_model_dir), "device": "cpu"},
        threads=1,
        critical=critical,
        batch_size=3,
        out=str(tmp_path / "store"),
    )
    summary = run_extraction(cfg, progress=False)
    assert (summary.stored, summary.scored) == (7, 7)
    loaded = eager_model(bos_model_dir)
    tok, model = loaded.tokenizer, loaded.model
    assert special_prefix(tok) == [tok.bos_token_id]
    store = AttentionStore.open(tmp_path / "store", critical=critical)
    for t in traces:
        text = f"Question: {t.problem.text}\nRationale: {t.trace.text}"
        border = len("Question: ") + len(t.problem.text)
        spans = sentence_spans(text, [(0, border), (border, len(text))])
        units = find_critical_units(text, critical)
        encoded = encode_text(tok, text)
        got = store.example(t.id, alignment_hash=alignment_hash(text, spans, units, critical))
        assert got.text == text and list(got.step_spans) == spans and list(got.units) == units
        assert got.matrices.shape == (4, len(spans), len(units)) and got.prefix_tokens == 1
        attn = eager_attentions(model, [tok.bos_token_id, *encoded.ids])
        rows = token_ranges_by_start(spans, encoded.ends)
        cols = unit_token_sets(units, encoded.ends)
        for layer in range(4):
            mean = attn[layer].mean(0)
            expected = torch.zeros(len(spans), len(units))
            for s, (a, b) in enumerate(rows):
                for c, tokens in enumerate(cols):
                    expected[s, c] = mean[1 + a : 1 + b, [1 + j for j in tokens]].sum()
            assert (got.matrices[layer] - expected).abs().max() <= TOL, (t.id, layer)
        assert got.matrices.max() > 0.1
    with pytest.raises(UserError, match="alignment hash"):
        store.example(traces[0].id, alignment_hash="0" * 64)


def test_teacher_forced_responses_from_a_problems_file(tiny_model_dir, traces, tmp_path):
    tok = load_model(str(tiny_model_dir("qwen2"))).tokenizer
    prompt = PromptConfig(template="r1")
    loaded = load_responses(
        ExtractConfig(input={"path": str(rationale_file(tmp_path, traces))}).input, tok, prompt
    )
    assert [e.id for e in loaded] == [t.id for t in traces]
    for example, t in zip(loaded, traces, strict=True):
        prompt_text, prompt_ids = encode_prompt_for(t, tok, prompt)
        assert prompt_text.endswith(THINK_OPEN_LINE) and list(example.prompt_ids) == prompt_ids
        response = decode(tok, example.completion_ids)
        assert response == t.trace.text[len(THINK_OPEN_LINE) :] + tok.eos_token
        assert not example.truncated and example.correct is None
    again = teacher_forced_response(traces[0].id, traces[0].problem.text, traces[0].trace.text, tok, prompt)
    assert again == loaded[0]


def encode_prompt_for(trace, tok, prompt: PromptConfig):
    from attncore.data import Problem

    return encode_prompt(Problem(trace.id, trace.problem.text, "", "x"), tok, prompt)


def test_store_checks_rules_resume_identity_and_checksums(tiny_model_dir, rollout_dir, tmp_path):
    model_dir = tiny_model_dir("qwen2")
    path, _ = rollout_dir
    out = tmp_path / "store"
    cfg = attnpo_config(model_dir, path, out, heads=[(1, 1)], batch_size=4)
    first = run_extraction(cfg, progress=False)
    assert (first.stored, first.extracted_now) == (9, 9)
    again = run_extraction(cfg, progress=False)
    assert (again.stored, again.extracted_now) == (9, 0), "a finished store is not extracted again"
    assert (out / "config.resolved.yaml").is_file() and json.loads((out / "summary.json").read_text())[
        "stored"
    ] == 9

    other_rules = cfg.model_copy(update={"segmenter": StepSegmenterConfig(min_chars=40)})
    with pytest.raises(UserError, match=r"differs in: segmentation\.min_chars"):
        run_extraction(other_rules, progress=False)
    with pytest.raises(UserError, match=r"other segmentation rules \(differs in: segmentation\.mode\)"):
        AttentionStore.open(out, segmentation=StepSegmenterConfig(mode="faithful"))
    store = AttentionStore.open(out, segmentation=StepSegmenterConfig())
    meta = store.meta
    assert meta["kind"] == "attnpo" and meta["heads"] == [[1, 1]] and meta["critical"] is None
    assert meta["model"]["name"] == str(model_dir) and len(meta["model"]["weights_sha256"]) == 64
    assert meta["inputs"]["count"] == 9 and len(meta["inputs"]["sha256"]) == 64
    with pytest.raises(UserError, match="holds attnpo results, not molsaki"):
        store.example("x")
    with pytest.raises(UserError, match="has no rollout 'absent'"):
        store.rollout("absent")

    steps_part = next(out.glob("shard-rank0-*.steps.parquet"))
    steps_part.write_bytes(steps_part.read_bytes()[:-12] + b"corrupted!!!")
    with pytest.raises(UserError, match="fails its checksum"):
        AttentionStore.open(out).step_table()


def test_molsaki_store_refuses_other_critical_rules(tiny_model_dir, traces, tmp_path):
    data = rationale_file(tmp_path, traces[:2])
    cfg = ExtractConfig(
        kind="molsaki",
        input={"path": str(data)},
        model={"name": str(tiny_model_dir("qwen2")), "device": "cpu"},
        out=str(tmp_path / "store"),
        threads=1,
    )
    run_extraction(cfg, progress=False)
    with pytest.raises(UserError, match=r"other critical rules \(differs in: critical\.keywords\)"):
        AttentionStore.open(tmp_path / "store", critical=CriticalConfig(keywords=["apples"]))
    with pytest.raises(UserError, match=r"differs in: segmentation\.question_prefix"):
        run_extraction(
            cfg.model_copy(update={"text_format": TextFormat(question_prefix="Q: ")}), progress=False
        )
    matrices = next((tmp_path / "store").glob("*.matrices.safetensors"))
    matrices.write_bytes(matrices.read_bytes()[:-4] + b"\x00\x01\x02\x03")
    with pytest.raises(UserError, match="fails its checksum"):
        AttentionStore.open(tmp_path / "store").example(traces[0].id)


def test_config_rejects_options_of_the_other_kind():
    with pytest.raises(ValueError, match="critical do not apply to kind 'attnpo'"):
        ExtractConfig(input={"path": "x"}, critical={"numbers": False})
    with pytest.raises(ValueError, match="heads do not apply to kind 'molsaki'"):
        ExtractConfig(kind="molsaki", input={"path": "x"}, heads=[(0, 1)])


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attncore", *args], capture_output=True, text=True, **kwargs)


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path):
    missing = cli("extract", f"out={tmp_path / 's'}")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == ["error: defaults: missing required key 'input'"]
    view = cli("view", "--store", str(tmp_path / "nothing"), "--rollout", "a#0", "--out", str(tmp_path))
    assert (
        view.returncode == 2
        and view.stderr.strip() == f"error: attention store not found: {tmp_path / 'nothing'}"
    )


def extract_args(data: Path, model: Path, out: Path) -> list[str]:
    return ["extract", f"input.path={data}", f"model.name={model}", f"out={out}", "threads=1", "--quiet"]


@pytest.mark.slow
def test_killed_extraction_resumes_without_loss_or_duplicates(tiny_model_dir, tmp_path, kill_after_shards):
    data = tmp_path / "traces.jsonl"
    write_examples(generate_examples(SyntheticConfig(count=30, seed=5, **SHORT_TRACES)), data)
    model = tiny_model_dir("qwen2")
    out = tmp_path / "killed"
    args = [*extract_args(data, model, out), "batch_size=1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "attncore", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    manifest = out / "manifest-rank0.json"
    shards_at_kill = kill_after_shards(proc, manifest, 180)
    assert 2 <= shards_at_kill < 30, "killed midway"

    cfg = ExtractConfig(
        input={"path": str(data)},
        model={"name": str(model), "device": "cpu"},
        out=str(out),
        batch_size=1,
        threads=1,
    )
    resumed = run_extraction(cfg, progress=False)
    assert resumed.extracted_now == 30 - shards_at_kill and resumed.stored == 30
    run_extraction(cfg.model_copy(update={"out": str(tmp_path / "fresh"), "batch_size": 4}), progress=False)
    got, want = AttentionStore.open(out), AttentionStore.open(tmp_path / "fresh")
    assert got.summary_table().equals(want.summary_table())
    got_steps, want_steps = got.step_table(), want.step_table()
    assert got_steps.drop(["score"]).equals(want_steps.drop(["score"]))
    difference = pc.max(pc.abs(pc.subtract(got_steps.column("score"), want_steps.column("score")))).as_py()
    assert difference <= TOL


@pytest.mark.slow
def test_two_processes_write_one_store_equal_to_a_single_process(tiny_model_dir, traces, tmp_path):
    """`accelerate launch` with 2 CPU processes: disjoint slices, one manifest each, merged on read."""
    data = rationale_file(tmp_path, traces)
    model = tiny_model_dir("qwen2")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "attncore"]
    run = subprocess.run(
        [*launch, *extract_args(data, model, tmp_path / "dp"), "kind=molsaki", "batch_size=2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| processes                      | 2 |" in run.stdout
    assert sorted(p.name for p in (tmp_path / "dp").glob("manifest-*.json")) == [
        "manifest-rank0.json",
        "manifest-rank1.json",
    ]
    cfg = ExtractConfig(
        kind="molsaki",
        input={"path": str(data)},
        model={"name": str(model), "device": "cpu"},
        out=str(tmp_path / "one"),
        threads=1,
    )
    run_extraction(cfg, progress=False)
    merged, single = AttentionStore.open(tmp_path / "dp"), AttentionStore.open(tmp_path / "one")
    assert merged.meta == single.meta
    assert merged.summary_table().equals(single.summary_table())
    written: dict[str, set[str]] = {}
    for entry, table in merged.table.iter_tables():
        writer = entry["file"].split("-")[1]
        written.setdefault(writer, set()).update(table.column("example_id").to_pylist())
    ids = [t.id for t in traces]
    assert written == {"rank0": set(ids[0::2]), "rank1": set(ids[1::2])}, (
        "rank r takes inputs i with i % 2 == r"
    )
    for example_id in single.ids():
        a, b = merged.example(example_id), single.example(example_id)
        assert a.alignment_hash == b.alignment_hash and (a.matrices - b.matrices).abs().max() <= TOL
