"""Shared fixtures: offline hub, tiny models built once per session, the embedded model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch

from attncore.tiny import make_tiny_model

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def one_thread():
    """The test runs on one torch thread (the machine is shared); the setting is restored after it. The
    attnpo and cotattn tests use it for every test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """Factory: `tiny_model_dir("qwen2")` -> folder of a random tiny model of that architecture."""
    built: dict[tuple, Path] = {}

    def build(arch: str = "llama", **sizes: int) -> Path:
        key = (arch, tuple(sorted(sizes.items())))
        if key not in built:
            built[key] = make_tiny_model(tmp_path_factory.mktemp(f"tiny-{arch}"), arch, **sizes)
        return built[key]

    return build


@pytest.fixture(scope="session")
def smollm2():
    """The embedded default model (dequantized once into the user cache, then reloaded in < 5 s)."""
    from attncore.models import load_model

    return load_model()


@pytest.fixture
def kill_after_shards():
    """Factory: `kill_after_shards(proc, manifest, deadline_s)` SIGKILLs a running job once its manifest
    lists two shards and returns how many it listed then (the kill-and-resume tests' midway point)."""

    def kill(proc: subprocess.Popen, manifest: Path, deadline_s: float) -> int:
        deadline = time.monotonic() + deadline_s
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "run ended before it could be killed"
            if manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 2:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return len(json.loads(manifest.read_text())["shards"])

    return kill
