"""The method config: release defaults, ablation switches by override, one-line errors, head sources."""

from __future__ import annotations

import pytest
import yaml

from attncore.config import load_config
from attncore.errors import ConfigError, UserError
from attnpo.config import HeadsConfig, KimiReward, MethodConfig, TraineffReward


def write(tmp_path, data):
    path = tmp_path / "method.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_are_the_release_recipe(tmp_path):
    cfg = load_config(MethodConfig, write(tmp_path, {"heads": {"kind": "list", "heads": [[16, 2], [20, 9]]}}))
    assert cfg.reward == TraineffReward(alpha=0.2, eps=1e-8, double_sigmoid=False)
    assert (cfg.advantage.kind, cfg.rescaling.beta, cfg.rescaling.lam, cfg.rescaling.delta) == (
        "rloo",
        2,
        2,
        0,
    )
    assert (cfg.rescaling.curriculum_steps, cfg.rescaling.neg_factor, cfg.rescaling.gamma_variant) == (
        1000,
        0,
        "code",
    )
    assert cfg.rescaling.baseline == "uniform"  # the release's p^beta * |F|/|o|


def test_ablations_by_override(tmp_path):
    path = write(tmp_path, {"heads": {"kind": "list", "heads": [[1, 0]]}})
    a1 = load_config(MethodConfig, path, ["rescaling.enabled=false"])
    assert not a1.rescaling.enabled
    a6 = load_config(MethodConfig, path, ["rescaling.gamma_variant=paper_notes", "rescaling.neg_adv=false"])
    assert (a6.rescaling.gamma_variant, a6.rescaling.neg_adv, a6.rescaling.pos_adv) == (
        "paper_notes",
        False,
        True,
    )
    kimi = load_config(MethodConfig, path, ["reward.kind=kimi"])
    assert kimi.reward == KimiReward()
    a8 = load_config(MethodConfig, path, ["rescaling.baseline=thinking"])
    assert a8.rescaling.baseline == "thinking"
    a7 = load_config(MethodConfig, path, ["heads.kind=random", "heads.n=2"])
    assert (a7.heads.kind, a7.heads.n) == ("random", 2)


def test_one_line_errors(tmp_path):
    path = write(tmp_path, {"rescaling": {"enabled": False}})
    with pytest.raises(ConfigError, match=r"unknown key 'rescaling\.gama'"):
        load_config(MethodConfig, path, ["rescaling.gama=1"])
    with pytest.raises(ConfigError, match="reward: Input tag 'shortest' found using 'kind'"):
        load_config(MethodConfig, path, ["reward.kind=shortest"])
    with pytest.raises(ConfigError, match="scale applies to kind=grpo"):
        load_config(MethodConfig, path, ["advantage.scale=batch"])
    assert (
        load_config(MethodConfig, path, ["advantage.kind=grpo", "advantage.scale=batch"]).advantage.scale
        == "batch"
    )
    resolved = load_config(MethodConfig, path, [])  # a resolved config (every default written) reloads
    assert load_config(MethodConfig, write(tmp_path, resolved.model_dump(mode="json"))) == resolved
    with pytest.raises(ConfigError, match="rescaling needs heads"):
        load_config(MethodConfig, write(tmp_path, {}))
    with pytest.raises(ConfigError, match="kind=file needs path"):
        load_config(MethodConfig, path, ["heads.kind=file"])
    with pytest.raises(
        ConfigError, match=r"rescaling\.baseline='mean': Input should be 'uniform' or 'thinking'"
    ):
        load_config(MethodConfig, path, ["rescaling.baseline=mean"])
    with pytest.raises(ConfigError, match=r"rescaling\.delta=1"):
        load_config(MethodConfig, path, ["rescaling.delta=1"])


def test_head_sources(tmp_path):
    drawn = HeadsConfig(kind="random", n=4, seed=3).resolve(num_layers=5, num_heads=3)
    assert len(set(drawn)) == 4 and all(0 <= layer < 5 and 0 <= head < 3 for layer, head in drawn)
    assert drawn == HeadsConfig(kind="random", n=4, seed=3).resolve(num_layers=5, num_heads=3)
    assert drawn != HeadsConfig(kind="random", n=4, seed=4).resolve(num_layers=5, num_heads=3)
    with pytest.raises(UserError, match="exceeds"):
        HeadsConfig(kind="random", n=16).resolve(num_layers=5, num_heads=3)
    assert HeadsConfig(kind="list", heads=[[4, 2], [0, 1]]).resolve(5, 3) == [(4, 2), (0, 1)]
    with pytest.raises(UserError, match=r"outside the model's 5 layers"):
        HeadsConfig(kind="list", heads=[[5, 0]]).resolve(5, 3)
    heads_file = tmp_path / "heads.yaml"
    heads_file.write_text(
        yaml.safe_dump({"model": "m", "heads": [{"layer": 2, "head": 1}, {"layer": 0, "head": 0}]})
    )
    assert HeadsConfig(path=str(heads_file)).resolve(5, 3) == [(2, 1), (0, 0)]
    with pytest.raises(UserError, match="not found"):
        HeadsConfig(path=str(tmp_path / "none.yaml")).resolve(5, 3)
