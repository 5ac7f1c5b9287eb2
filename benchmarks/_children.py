"""Mode against mode, each measured in child processes (`attention_capture.py`,
`stepwise_capture_grad.py`): the script runs itself once per mode for memory (so each peak is its own,
see `_memory`) and once for the times of all modes, which run round-robin so that other jobs on the
cores disturb each mode alike. The child prints one JSON line; the parent reads it."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence


def add_child_options(parser: argparse.ArgumentParser, modes: Sequence[str]) -> None:
    """The hidden options a parent passes to its children: `--child-memory MODE`, `--child-timing MODES`."""
    parser.add_argument("--child-memory", choices=modes, help=argparse.SUPPRESS)
    parser.add_argument("--child-timing", nargs="+", choices=modes, help=argparse.SUPPRESS)


def run_as_child(
    args: argparse.Namespace,
    threads: int,
    memory: Callable[[str, int], dict],
    timing: Callable[[list[str], int, int], dict],
) -> bool:
    """In a child (either option given): on `threads` torch threads, print the JSON line of
    `memory(mode, length)` or `timing(modes, length, repeats)` at the first of `--lengths`, and return
    True; in the parent, return False."""
    if not (args.child_memory or args.child_timing):
        return False
    import torch

    torch.set_num_threads(threads)
    if args.child_memory:
        print(json.dumps(memory(args.child_memory, args.lengths[0])))
    else:
        print(json.dumps(timing(args.child_timing, args.lengths[0], args.repeats)))
    return True


def best_times(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """Best-of-`repeats` wall and process-CPU seconds of each mode's run, the modes round-robin."""
    best = {mode: {"seconds": float("inf"), "cpu_seconds": float("inf")} for mode in runs}
    for _ in range(repeats):
        for mode, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            best[mode]["seconds"] = min(best[mode]["seconds"], time.perf_counter() - wall)
            best[mode]["cpu_seconds"] = min(best[mode]["cpu_seconds"], time.process_time() - cpu)
    return best


def run_child(script: str, args: list[str], threads: int) -> dict:
    """Run `script` as a child measurement on `threads` OpenMP threads and parse its JSON line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_modes(
    script: str, length: int, modes: Sequence[str], repeats: int, threads: int, extra: Sequence[str] = ()
) -> dict[str, dict]:
    """Each mode's memory at `length` from its own child, then its best times from one child running
    all `modes` (`extra`: further options for every child); progress lines on stderr."""
    at = ["--lengths", str(length)]
    by_mode = {mode: run_child(script, ["--child-memory", mode, *at, *extra], threads) for mode in modes}
    best = run_child(script, ["--child-timing", *modes, *at, "--repeats", str(repeats), *extra], threads)
    for mode, measured in by_mode.items():
        measured.update(best[mode])
        print(f"T={length} {mode}: {json.dumps(measured)}", file=sys.stderr, flush=True)
    return by_mode


def ratio(by_mode: dict[str, dict], num: str, den: str, key: str) -> str:
    """A table cell: `num`'s figure `key` over `den`'s, or "–" where either mode was not run."""
    if num not in by_mode or den not in by_mode:
        return "–"
    return f"{by_mode[num][key] / by_mode[den][key]:.2f}"
