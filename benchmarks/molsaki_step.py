"""A MoLSAKI training step against a DSS step on the same batch (issue 19's benchmark), through the real
`cotattn` trainer: `DistillTrainer.batch_losses` (answer and rationale forwards; for MoLSAKI the
rationale forward inside `StepwiseGradCapture`, the router, the stepwise KL) plus the backward pass, no
optimizer step. Student: the embedded SmolLM2-135M-Instruct, fp32, CPU.

The batch: the first `--batch` GSM8K training items of the reference data folder as student examples
(`cotattn.text.student_example`: worked solution as rationale, GSM8K's `<<...>>` notes removed), teacher
targets drawn at random with each example's (steps, units) shape (the teacher's values do not change
the cost).
- Time: one process, one model, a trainer per mode; after a warm-up step each, the modes alternate step
  by step for `--repeats` rounds and each keeps its best wall and process-CPU time, so a busy machine
  penalises both alike. (Timing each mode in its own process, one after the other, gave ratios of 1.0
  to 2.1 for the same code on the shared box.)
- Memory: a fresh subprocess per mode: model load, one warm-up step, the kernel's peak-RSS counter reset
  (writing 5 to /proc/self/clear_refs; Linux only), one step; the step's peak RSS above the RSS before it.

    ATTNCORE_DATA_DIR=<data folder> python benchmarks/molsaki_step.py [--batch 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

from _memory import step_memory

THREADS = 2
MODES = ("dss", "molsaki")
CALCULATOR = re.compile(r"<<[^>]*>>")


def build(modes: tuple[str, ...], batch_size: int):
    """The student, and per mode a trainer and its collated batch."""
    import torch
    from transformers import TrainingArguments

    from attncore.critical import CriticalConfig
    from attncore.data import read_jsonl
    from attncore.models import load_model
    from attncore.paths import data_dir
    from cotattn.batch import TrainItem, collate
    from cotattn.config import ArmConfig
    from cotattn.router import MoLRouter
    from cotattn.text import TaskFormat, student_example
    from cotattn.train import value_width
    from cotattn.trainer import DistillTrainer

    torch.set_num_threads(THREADS)
    folder = data_dir()
    if folder is None:
        sys.exit("error: the reference data folder is missing (set ATTNCORE_DATA_DIR)")
    rows = read_jsonl(folder / "train" / "gsm8k" / "train.jsonl")[:batch_size]
    loaded = load_model()
    model, tok = loaded.model.train(), loaded.tokenizer
    gen = torch.Generator().manual_seed(0)
    examples = []
    for i, row in enumerate(rows):
        worked, answer = row["answer"].split("####")
        examples.append(student_example(
            tok, str(i), row["question"], CALCULATOR.sub("", worked).strip(), answer.strip(),
            TaskFormat(), CriticalConfig(),
        ))  # fmt: skip
    targets = [torch.rand(len(ex.layout.steps), ex.unit_count, generator=gen) * 3 for ex in examples]
    args = TrainingArguments(output_dir="/tmp/molsaki_step_bench", report_to="none", use_cpu=True)
    steps = {}
    for mode in modes:
        items = [
            TrainItem(ex, t if mode == "molsaki" else None) for ex, t in zip(examples, targets, strict=True)
        ]
        router = MoLRouter(model.config.num_hidden_layers, value_width(model)) if mode == "molsaki" else None
        trainer = DistillTrainer(
            model=model, args=args, arm=ArmConfig(method=mode), router=router, train_dataset=items
        )
        batch = collate(items, tok.pad_token_id)

        def step(trainer=trainer, batch=batch) -> None:
            model.zero_grad(set_to_none=True)
            losses, _, _ = trainer.batch_losses(model, batch)
            losses.total.backward()

        steps[mode] = step
    shape = {
        "tokens": int(batch["answer_mask"].sum() + batch["rationale_mask"].sum()),
        "width": int(batch["rationale_ids"].shape[1]),
    }
    return steps, shape


def memory(mode: str, batch_size: int) -> dict:
    steps, _ = build((mode,), batch_size)
    steps[mode]()  # warm-up
    return step_memory(steps[mode])


def timing(batch_size: int, repeats: int) -> tuple[dict, dict]:
    steps, shape = build(MODES, batch_size)
    best = {mode: {"wall": float("inf"), "cpu": float("inf")} for mode in MODES}
    for mode in MODES:
        steps[mode]()  # warm-up
    for _ in range(repeats):
        for mode in MODES:
            wall, cpu = time.perf_counter(), time.process_time()
            steps[mode]()
            best[mode]["wall"] = min(best[mode]["wall"], time.perf_counter() - wall)
            best[mode]["cpu"] = min(best[mode]["cpu"], time.process_time() - cpu)
    return best, shape


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        print(json.dumps(memory(args.memory, args.batch)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    mem = {}
    for mode in MODES:
        cmd = [sys.executable, __file__, "--memory", mode, "--batch", str(args.batch)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
        mem[mode] = json.loads(out.strip().splitlines()[-1])
    best, shape = timing(args.batch, args.repeats)
    print(
        f"load average {os.getloadavg()[0]:.1f}; batch {args.batch}, {shape['tokens']} real tokens, rationale width {shape['width']}"
    )
    print("| mode | step s (wall) | step s (CPU) | step MiB | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        b, m = best[mode], mem[mode]
        print(f"| {mode} | {b['wall']:.3f} | {b['cpu']:.3f} | {m['step_mib']:.0f} | {m['peak_mib']:.0f} |")
    dss, mol = best["dss"], best["molsaki"]
    print(
        f"MoLSAKI / DSS: time {mol['wall'] / dss['wall']:.3f} (CPU {mol['cpu'] / dss['cpu']:.3f}), "
        f"step memory {mem['molsaki']['step_mib'] / max(mem['dss']['step_mib'], 1):.2f}, "
        f"peak RSS {mem['molsaki']['peak_mib'] / mem['dss']['peak_mib']:.3f}"
    )


if __name__ == "__main__":
    main()
