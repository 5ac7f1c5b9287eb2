"""Synthetic overthinking testbed: word problems, R1-style traces with known essential steps, an oracle.

The models of the papers cannot run here and nobody labels steps by hand, so this package builds data
whose step labels are known by construction:

- `problems`: multi-step arithmetic word problems (difficulty = number of operations, 1-6);
- `templates`, `traces`: R1-style traces mixing essential steps with labelled redundant ones;
- `oracle`: labels the steps of any trace on a known problem, model-generated ones included;
- `dataset`: records (the shared `Problem` fields plus the ground truth) in JSONL or Parquet;
- `stats`: figures of a generated set; `cli`: the `generate` and `label` commands.
"""
