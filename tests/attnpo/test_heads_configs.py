"""The shipped find-heads configs name the right label sources; the presets hold the released heads
and the testbed's discovered ones.

(Loading every shipped config with overrides is tests/core/test_config.py's job.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from attncore.config import load_config
from attnpo.artifact import read_artifact, read_heads
from attnpo.find_heads import FindHeadsConfig

HERE = Path(__file__).resolve().parents[2] / "experiments" / "attnpo" / "heads"
CONFIGS = sorted(HERE.glob("*.yaml"))


def test_configs_cover_the_testbed_the_1_5b_and_the_7b():
    kinds = {p.name: load_config(FindHeadsConfig, p).labels.kind for p in CONFIGS}
    assert kinds == {
        "testbed.yaml": "oracle",
        "deepseek-r1-distill-qwen-1.5b.yaml": "judges",
        "deepseek-r1-distill-qwen-7b.yaml": "judges",
    }


def test_preset_holds_the_released_heads():
    path = HERE / "presets" / "deepseek-r1-distill-qwen-1.5b.yaml"
    assert read_heads(path) == [(16, 2), (20, 9), (23, 2)]
    assert read_artifact(path).model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"


def test_testbed_preset_holds_the_heads_discovered_on_the_v3_model():
    path = HERE / "presets" / "testbed-mini.yaml"
    assert read_heads(path) == [(15, 6), (26, 7), (14, 1)]
    artifact = read_artifact(path)
    assert artifact.model == "testbed-mini" and artifact.ensemble["sra"] == 0.970


def test_heads_file_errors_are_one_line(tmp_path):
    from attncore.errors import UserError

    bad = tmp_path / "heads.yaml"
    bad.write_text("format: attnpo-heads/1\nmodel: m\nheads: []\n")
    with pytest.raises(UserError, match=r"heads\.yaml: heads: List should have at least 1 item"):
        read_heads(bad)
    bad.write_text("format: other/2\nmodel: m\nheads: [{layer: 0, head: 1}]\n")
    with pytest.raises(UserError, match="is not 'attnpo-heads/1'"):
        read_heads(bad)
    with pytest.raises(UserError, match="heads file not found"):
        read_heads(tmp_path / "none.yaml")
