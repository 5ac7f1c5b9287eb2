"""wandb tracking: offline by itself without an API key, online with one, off with --no-wandb."""

from __future__ import annotations

import pytest

from attncore.tracking import Tracker, TrackingConfig, resolve_mode


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc entry for api.wandb.ai


def test_auto_mode_follows_the_api_key(no_wandb_env, monkeypatch):
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled", "an explicit WANDB_MODE wins over auto"
    assert resolve_mode("offline") == "offline"


def test_netrc_key_counts_as_configured(no_wandb_env, tmp_path):
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert resolve_mode("auto") == "online"


@pytest.mark.slow
def test_offline_run_lands_beside_the_outputs(no_wandb_env, tmp_path):
    out = tmp_path / "run"
    tracker = Tracker(TrackingConfig(), {"lr": 0.1}, out, job="test")
    assert tracker.mode == "offline"
    tracker.log({"loss": 1.5}, step=0)
    tracker.summary({"final": 2})
    tracker.finish()
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_disabled_tracker_logs_nothing(tmp_path):
    tracker = Tracker(TrackingConfig(mode="disabled"), {}, tmp_path / "off", job="test")
    tracker.log({"loss": 1.0})
    tracker.finish()
    assert tracker.run is None and not (tmp_path / "off").exists()
