"""The parts of `benchmarks/gpu_check.sh`, each a subcommand that writes one JSON result (status pass,
fail or skip, a one-line summary, its figures), so one part's failure never hides another's result.

- `env`: the device and the versions that matter (torch, CUDA, transformers, TRL, vLLM).
- `capture`: `attncore.attention.AttentionCapture` against eager `output_attentions=True` on the same
  model (fp32, TF32 off), a left-padded batch: max |Δp| over the captured heads' rows (pass: <= 1e-5)
  and the logits with and without capture (pass: equal up to 1e-6).
- `rollouts`: greedy completions of the same prompts by the core's slot-refilling engine (the reference:
  the engine AttnPO trains with on CPU) and by a candidate engine, vLLM on a GPU or HF `generate` in
  static batches: how many completions are identical, how many agree on their first `--prefix` tokens
  (pass: all; bf16 near-ties may flip a later token), and completion tokens/s of each.
- `attnpo`: a few `attnpo train` steps with `rollout.engine=vllm` colocated (pass: every step ran its
  loss forward with (B, T) token advantages, logged finite loss and reward, and the last checkpoint
  exists); `--engine refill --device cpu` runs the same part on CPU.
- `report`: the compact report of a folder of results, printed and written as `gpu_check.md`.

    python benchmarks/gpu_check.py capture --device cpu --result /tmp/capture.json
    python benchmarks/gpu_check.py rollouts --device cpu --engine hf --prompts 4 --max-tokens 16 --result r.json
    python benchmarks/gpu_check.py report /tmp/gpu-check
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import importlib.util
import json
import math
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PARTS = ("env", "capture", "rollouts", "attnpo")
PROB_TOL = 1e-5
LOGIT_TOL = 1e-6
EMBEDDED = "smollm2-135m-instruct"


def result(status: str, summary: str, **figures: Any) -> dict[str, Any]:
    return {"status": status, "summary": summary, **figures}


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cuda_missing(device: str) -> str | None:
    """Why `device` cannot run here, or None."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA device visible"
    return None


# --- env ----------------------------------------------------------------------------------------------


def check_env(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    versions = {p: version(p) for p in ("torch", "transformers", "trl", "vllm", "accelerate")}
    shown = ", ".join(f"{p} {v or '-'}" for p, v in versions.items())
    if not torch.cuda.is_available():
        return result("skip", f"no CUDA device; {shown}", versions=versions)
    props = torch.cuda.get_device_properties(0)
    gib = props.total_memory / 2**30
    return result(
        "pass",
        f"{props.name} ({gib:.0f} GiB), CUDA {torch.version.cuda}; {shown}",
        versions=versions,
        device=props.name,
    )


# --- capture ------------------------------------------------------------------------------------------


def spread_heads(layers: int, heads: int) -> list[tuple[int, int]]:
    """Four (layer, query head) pairs over the first, middle and last layers and both ends of the heads."""
    return sorted({(0, 0), (layers // 2, heads - 1), (layers - 1, heads // 2), (layers - 1, 0)})


def check_capture(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if reason := cuda_missing(args.device):
        return result("skip", reason)
    from attncore.attention import AttentionCapture, HeadRows
    from attncore.models import ModelConfig, load_model
    from attncore.tiny import random_padded_batch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = load_model(ModelConfig(name=args.model, device=args.device, dtype="float32")).model
    text = model.config.get_text_config()
    heads = spread_heads(text.num_hidden_layers, text.num_attention_heads)
    lengths = [args.length, args.length * 2 // 3, args.length // 3]
    ids, mask = random_padded_batch(lengths, text.vocab_size, torch.Generator().manual_seed(0))
    width = ids.shape[1]
    rows = [sorted({*range(width - n, width, max(1, n // 8)), width - 1}) for n in lengths]
    ids, mask = ids.to(args.device), mask.to(args.device)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        reference = eager(ids, attention_mask=mask, output_attentions=True).attentions
        plain = model(ids, attention_mask=mask).logits
        with AttentionCapture(model) as capture:
            capture.arm(HeadRows(heads, rows))
            logits = model(ids, attention_mask=mask).logits
            got = capture.collect()
    worst = 0.0
    for layer, head in heads:
        for b, positions in enumerate(rows):
            for j, pos in enumerate(positions):
                want = reference[layer][b, head, pos].float()
                worst = max(worst, (got[(layer, head)][b, j].float() - want).abs().max().item())
    logit_diff = (logits - plain).abs().max().item()
    captured = sum(len(r) for r in rows) * len(heads)
    ok = worst <= PROB_TOL and logit_diff <= LOGIT_TOL
    return result(
        "pass" if ok else "fail",
        f"max |dp| {worst:.1e} (tol {PROB_TOL:g}) over {captured} captured rows of heads {heads}, "
        f"logits max |d| {logit_diff:.1e} (tol {LOGIT_TOL:g}); {args.model} fp32 on {args.device}",
        max_prob_diff=worst,
        max_logit_diff=logit_diff,
        heads=heads,
    )


# --- rollouts -----------------------------------------------------------------------------------------


def strip_eos(ids: Sequence[int], eos: set[int]) -> list[int]:
    """A completion without its trailing EOS (engines differ on keeping it)."""
    ids = list(ids)
    while ids and ids[-1] in eos:
        ids.pop()
    return ids


def compare_greedy(
    reference: Sequence[Sequence[int]], candidate: Sequence[Sequence[int]], prefix: int
) -> dict[str, Any]:
    """How far two engines' greedy completions of the same prompts agree: identical completions, those
    agreeing on their first `prefix` tokens, and each pair's first differing position (None if equal)."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference completions but {len(candidate)} candidate ones")
    first: list[int | None] = []
    for ref, cand in zip(reference, candidate, strict=True):
        at = next((i for i, (a, b) in enumerate(zip(ref, cand, strict=False)) if a != b), None)
        if at is None and len(ref) != len(cand):
            at = min(len(ref), len(cand))
        first.append(at)
    return {
        "prompts": len(reference),
        "identical": sum(at is None for at in first),
        "prefix_agree": sum(at is None or at >= prefix for at in first),
        "first_difference": first,
    }


def rollout_prompts(tokenizer, count: int) -> list[list[int]]:
    """`count` testbed arithmetic problems (generated, no data files) as plain-template prompt ids."""
    from attncore.prompts import PromptConfig, encode_prompt
    from attncore.synthetic.config import SyntheticConfig
    from attncore.synthetic.dataset import generate_examples

    problems = [e.to_problem() for e in generate_examples(SyntheticConfig(count=count, seed=0))]
    return [encode_prompt(p, tokenizer, PromptConfig(template="plain"))[1] for p in problems]


def timed(device: str, run: Callable[[], list[list[int]]]) -> tuple[list[list[int]], float]:
    synchronize(device)
    start = time.perf_counter()
    out = run()
    synchronize(device)
    return out, time.perf_counter() - start


def vllm_greedy(source: str, dtype: str, prompts: list[list[int]], max_tokens: int) -> tuple[list, float]:
    """vLLM greedy completions of `prompts` (after a one-prompt warm-up) and the generation seconds."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(
        model=source,
        dtype=dtype,
        gpu_memory_utilization=0.25,
        max_model_len=max(map(len, prompts)) + max_tokens,
        enforce_eager=True,  # startup in seconds; the throughput figure is therefore a floor
        seed=0,
    )
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    requests = [TokensPrompt(prompt_token_ids=p) for p in prompts]
    llm.generate(requests[:1], params, use_tqdm=False)
    start = time.perf_counter()
    outputs = llm.generate(requests, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    return [list(o.outputs[0].token_ids) for o in outputs], seconds


def check_rollouts(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if reason := cuda_missing(args.device):
        return result("skip", reason)
    from attncore.models import ModelConfig, load_model
    from attncore.rollout.hf import HFEngine, eos_token_ids
    from attncore.rollout.refill import decode_refilling
    from attncore.rollout.types import SamplingConfig

    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    loaded = load_model(ModelConfig(name=args.model, device=args.device, dtype=dtype))
    tok = loaded.tokenizer
    eos = set(eos_token_ids(loaded))
    prompts = rollout_prompts(tok, args.prompts)
    greedy = SamplingConfig(temperature=0.0, max_tokens=args.max_tokens)
    slots = min(args.prompts, args.slots)

    def refill(batch: list[list[int]], sampling: SamplingConfig) -> list[list[int]]:
        with torch.no_grad():
            done = decode_refilling(
                loaded.model, batch, [0] * len(batch), sampling, eos, tok.pad_token_id, slots
            )
        return [c for c, _ in done]

    refill(prompts[:1], greedy.model_copy(update={"max_tokens": 4}))  # warm-up (kernels, allocator)
    reference, ref_s = timed(args.device, lambda: refill(prompts, greedy))
    reference = [strip_eos(c, eos) for c in reference]
    ref_tokens = sum(map(len, reference))
    figures: dict[str, Any] = {
        "reference": "refill",
        "reference_tokens": ref_tokens,
        "reference_seconds": ref_s,
        "reference_tok_s": ref_tokens / ref_s,
    }
    if args.engine == "vllm":
        if importlib.util.find_spec("vllm") is None:
            return result(
                "skip",
                f"vllm not installed (uv sync --extra vllm); refill engine alone: "
                f"{ref_tokens / ref_s:.0f} tok/s",
                **figures,
            )
        candidate, cand_s = vllm_greedy(loaded.source, dtype, prompts, args.max_tokens)
    else:
        engine = HFEngine(loaded, prompt=None, batch_size=slots)

        def static() -> list[list[int]]:
            out = []
            for start in range(0, len(prompts), slots):
                out += [c for c, _ in engine.generate_ids(prompts[start : start + slots], greedy, seed=0)]
            return out

        candidate, cand_s = timed(args.device, static)
    candidate = [strip_eos(c, eos) for c in candidate]
    agreement = compare_greedy(reference, candidate, args.prefix)
    cand_tokens = sum(map(len, candidate))
    figures.update(
        candidate=args.engine,
        candidate_tokens=cand_tokens,
        candidate_seconds=cand_s,
        candidate_tok_s=cand_tokens / cand_s,
        **agreement,
    )
    ok = agreement["prefix_agree"] == agreement["prompts"]
    name = "vLLM" if args.engine == "vllm" else "HF static"
    return result(
        "pass" if ok else "fail",
        f"{agreement['prefix_agree']}/{agreement['prompts']} greedy completions agree on their first "
        f"{args.prefix} tokens ({agreement['identical']} identical); {name} {cand_tokens / cand_s:.0f} tok/s "
        f"vs refill {ref_tokens / ref_s:.0f} tok/s ({(cand_tokens / cand_s) / (ref_tokens / ref_s):.2f}x); "
        f"{args.model} {dtype}, {args.prompts} prompts x {args.max_tokens} tokens on {args.device}",
        **figures,
    )


# --- attnpo with vLLM colocate -----------------------------------------------------------------------


def check_attnpo(args: argparse.Namespace) -> dict[str, Any]:
    """A short `attnpo train` run: vLLM colocated on a GPU, or (`--engine refill`, to test this part on
    CPU) the core's refill engine; three random heads, resolved against the model's shape."""

    if args.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        return result("skip", "vllm not installed (uv sync --extra vllm)")
    if reason := cuda_missing(args.device):
        return result("skip", reason)
    from attncore.config import load_config
    from attncore.synthetic.config import SyntheticConfig
    from attncore.synthetic.dataset import generate_examples
    from attnpo.train import TrainConfig, run_train

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    problems = work / "problems.jsonl"
    examples = generate_examples(SyntheticConfig(count=32, seed=1))
    problems.write_text(
        "".join(json.dumps({"id": e.id, "problem": e.problem.text, "answer": str(e.problem.answer)}) + "\n"
                for e in examples)
    )  # fmt: skip
    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    engine = [f"rollout.engine={args.engine}"]
    if args.engine == "vllm":
        engine.append("rollout.vllm={mode: colocate, gpu_memory_utilization: 0.25, max_model_len: 1024}")
    cfg = load_config(
        TrainConfig,
        None,
        [
            f"model.name={args.model}", f"model.device={args.device}", f"model.dtype={dtype}",
            f"data.file={problems}", *engine, f"rollout.max_tokens={args.max_tokens}",
            "method.heads.kind=random", "method.heads.n=3", "method.rescaling.curriculum_steps=0",
            "prompts_per_step=4", "group_size=4", f"steps={args.steps}", f"save_every={args.steps}",
            "grading.workers=2", "tracking.mode=disabled", f"out={work / 'run'}", "overwrite=true",
        ],
    )  # fmt: skip
    batches: list[tuple[int, tuple[int, ...]]] = []

    def seen(trainer, batch) -> None:
        batches.append((batch.global_step, tuple(batch.inputs["advantages"].shape)))

    start = time.perf_counter()
    trained = run_train(cfg, progress=False, on_step_batch=seen)
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "attnpo/reward" in r]
    finite = all(math.isfinite(r.get("loss", math.nan)) and math.isfinite(r["attnpo/reward"]) for r in steps)
    token_level = bool(batches) and all(len(shape) == 2 for _, shape in batches)
    stepped = sorted({s for s, _ in batches}) == list(range(1, args.steps + 1))
    saved = (work / "run" / "checkpoints" / f"checkpoint-{args.steps}").is_dir()
    ok = (
        trained.steps == args.steps
        and len(steps) == args.steps
        and finite
        and token_level
        and stepped
        and saved
    )
    last = steps[-1] if steps else {}
    return result(
        "pass" if ok else "fail",
        f"{trained.steps}/{args.steps} steps with {args.engine} rollouts in {seconds:.0f} s (model load "
        f"included); token advantages in every loss forward: {token_level and stepped}; finite loss and "
        f"reward: {finite}; checkpoint saved: {saved}; last step accuracy "
        f"{last.get('attnpo/accuracy', math.nan):.2f}, mean tokens {last.get('attnpo/total_tokens', math.nan):.0f}, "
        f"share rescaled {last.get('attnpo/share_rescaled', math.nan):.2f}",
        seconds=seconds,
        steps=trained.steps,
        metrics=steps,
    )


# --- report -------------------------------------------------------------------------------------------


def collect(folder: Path) -> dict[str, dict[str, Any]]:
    """Each part's result; a part that left no result (crash, timeout) becomes a fail with its exit
    code and the last line of its log."""
    found = {}
    for part in PARTS:
        path = folder / f"{part}.json"
        if path.is_file():
            found[part] = json.loads(path.read_text())
            continue
        rc_path, log = folder / f"{part}.rc", folder / f"{part}.log"
        if not rc_path.is_file():
            continue
        rc = rc_path.read_text().strip()
        lines = [
            line for line in (log.read_text(errors="replace") if log.is_file() else "").splitlines() if line
        ]
        why = "timed out" if rc in ("124", "137") else f"exit {rc}"
        found[part] = result("fail", f"{why}, no result; last log line: {lines[-1][:200] if lines else '-'}")
    return found


def render(found: dict[str, dict[str, Any]]) -> str:
    passed = sum(r["status"] == "pass" for r in found.values())
    failed = sum(r["status"] == "fail" for r in found.values())
    lines = [
        f"gpu_check {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()}: "
        f"{passed} pass, {failed} fail, {len(found) - passed - failed} skip",
    ]
    lines += [f"{part:<9} {r['status']:<4}  {r['summary']}" for part, r in found.items()]
    return "\n".join(lines) + "\n"


def report(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    found = collect(folder)
    text = render(found)
    print(text, end="")
    (folder / "gpu_check.md").write_text("```\n" + text + "```\n")
    return 1 if any(r["status"] == "fail" for r in found.values()) else 0


# --- command line -------------------------------------------------------------------------------------

CHECKS = {"env": check_env, "capture": check_capture, "rollouts": check_rollouts, "attnpo": check_attnpo}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    for part in PARTS:
        p = sub.add_parser(part)
        p.add_argument("--result", required=True, help="JSON file the part's result is written to")
        p.add_argument("--device", default="cuda")
        p.add_argument("--model", default=EMBEDDED)
        p.add_argument("--threads", type=int, default=None)
        if part == "capture":
            p.add_argument("--length", type=int, default=96)
        if part == "rollouts":
            p.add_argument("--engine", choices=["vllm", "hf"], default="vllm")
            p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None)
            p.add_argument("--prompts", type=int, default=64)
            p.add_argument("--max-tokens", type=int, default=256)
            p.add_argument("--slots", type=int, default=64)
            p.add_argument("--prefix", type=int, default=16)
        if part == "attnpo":
            p.add_argument("--engine", choices=["vllm", "refill"], default="vllm")
            p.add_argument("--steps", type=int, default=3)
            p.add_argument("--max-tokens", type=int, default=128)
            p.add_argument("--work", required=True, help="folder of the short training run")
    rep = sub.add_parser("report")
    rep.add_argument("folder")
    args = parser.parse_args(argv)
    if args.part == "report":
        return report(args)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        outcome = CHECKS[args.part](args)
    except Exception as exc:  # one part's crash is that part's fail, with its cause
        traceback.print_exc()
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        outcome = result("fail", f"{type(exc).__name__}: {first}")
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    Path(args.result).write_text(json.dumps(outcome, indent=1, default=str))
    print(f"{args.part}: {outcome['status']}  {outcome['summary']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
