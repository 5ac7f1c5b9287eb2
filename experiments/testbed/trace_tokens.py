"""Training tokens of testbed recipes, counted as the recipe's trainer counts them (no model is loaded).

    uv run python experiments/testbed/trace_tokens.py RECIPE.yaml... --tokenizer DIR

DIR is a testbed tokenizer (e.g. ~/.cache/attncore/models/testbed-mini: SmolLM2's with the think tokens).
Per recipe: its training traces' tokens per epoch (prompt + completion + EOS, `tokenize_examples`), the
completion tokens, the longest sequence, and the share of the thinking steps' tokens in redundant steps.
Training time grows with the tokens per epoch, so a recipe's build time can be compared before it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers import AutoTokenizer

from attncore.config import load_config
from attncore.synthetic.dataset import generate_examples
from attncore.synthetic.testbed_model import TestbedModelConfig, tokenize_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", type=Path, nargs="+")
    parser.add_argument("--tokenizer", type=Path, required=True)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(str(args.tokenizer))
    print("| recipe | traces | tokens per epoch | completion tokens | longest | redundant step tokens |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in args.recipes:
        cfg = load_config(TestbedModelConfig, path)
        examples = generate_examples(cfg.data)
        rows = tokenize_examples(examples, tokenizer, cfg.training.max_length)
        tokens = sum(len(row["input_ids"]) for row in rows)
        completion = sum(sum(row["completion_mask"]) for row in rows)
        longest = max(len(row["input_ids"]) for row in rows)
        redundant = total = 0
        for example in examples:
            for step in example.trace.steps:
                n = len(tokenizer.encode(step.text, add_special_tokens=False))
                total += n
                redundant += n * (not step.essential)
        print(
            f"| {path.name} | {len(rows)} | {tokens:,} | {completion:,} | {longest} | {redundant / total:.3f} |"
        )


if __name__ == "__main__":
    main()
