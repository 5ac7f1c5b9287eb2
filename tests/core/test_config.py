"""Config loading: strict keys, dotted overrides, one-line errors naming field, value and file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import Field, model_validator

from attncore.config import Config, ConfigError, apply_overrides, load_config, parse_override, save_resolved


class Sampling(Config):
    temperature: float = 0.0
    n: int = 1


class Job(Config):
    name: str = "job"
    sampling: Sampling = Sampling()
    tags: list[str] = Field(default_factory=list)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_file_and_overrides_merge(tmp_path):
    path = write(tmp_path, "name: base\nsampling:\n  temperature: 0.6\n")
    cfg = load_config(Job, path, ["sampling.n=4", "tags=[a, b]"])
    assert cfg == Job(name="base", sampling=Sampling(temperature=0.6, n=4), tags=["a", "b"])


class Stage(Config):
    sampling: Sampling = Sampling(temperature=0.6, n=8)
    label: str = "stage"


class Pipeline(Config):
    stage: Stage = Stage(label="tuned", sampling=Sampling(temperature=0.9, n=2))


def test_override_changes_one_key_of_a_tuned_section(tmp_path):
    """An override keeps the rest of a section whose default is a tuned instance; a file section replaces it."""
    assert load_config(Stage, None, ["sampling.n=4"]).sampling == Sampling(temperature=0.6, n=4)
    cfg = load_config(Pipeline, None, ["stage.sampling.n=5"])
    assert cfg.stage == Stage(label="tuned", sampling=Sampling(temperature=0.9, n=5))
    path = write(tmp_path, "stage:\n  label: mine\n")
    assert load_config(Pipeline, path).stage == Stage(label="mine")
    assert load_config(Pipeline, path, ["stage.sampling.n=3"]).stage.sampling == Sampling(
        temperature=0.6, n=3
    )
    with pytest.raises(
        ConfigError, match=r"command-line override: unknown key 'stage\.sampling\.temprature'"
    ):
        load_config(Pipeline, None, ["stage.sampling.temprature=1"])


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    path = write(tmp_path, "sampling:\n  temprature: 0.6\n")
    with pytest.raises(ConfigError) as err:
        load_config(Job, path)
    message = str(err.value)
    assert "sampling.temprature" in message and str(path) in message and "unknown key" in message
    assert "\n" not in message


def test_unknown_key_from_override_names_the_override(tmp_path):
    with pytest.raises(ConfigError, match=r"command-line override: unknown key 'sampling\.tempo'"):
        load_config(Job, None, ["sampling.tempo=1"])


def test_bad_value_names_field_value_and_file(tmp_path):
    path = write(tmp_path, "sampling:\n  n: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(Job, path)
    assert f"{path}: sampling.n='many'" in str(err.value)


def test_invalid_yaml_reports_line(tmp_path):
    path = write(tmp_path, "name: a\nsampling: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML \(line \d+\)"):
        load_config(Job, path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Job, tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Job, write(tmp_path, "- a\n- b\n"))


def test_override_parsing():
    assert parse_override("a.b=0.5") == (["a", "b"], 0.5)
    assert parse_override("flag=true") == (["flag"], True)
    assert parse_override("x=null") == (["x"], None)
    assert parse_override("s=hello world") == (["s"], "hello world")
    assert parse_override("empty=") == (["empty"], "")
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        parse_override("novalue")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_saved_resolved_config_round_trips(tmp_path):
    cfg = load_config(Job, None, ["sampling.temperature=0.7", "tags=[x]"])
    saved = save_resolved(cfg, tmp_path / "out")
    assert yaml.safe_load(saved.read_text()) == {
        "name": "job",
        "sampling": {"temperature": 0.7, "n": 1},
        "tags": ["x"],
    }
    assert load_config(Job, saved) == cfg


class Kinded(Config):
    """A validator that asks which fields the user set, as `ExtractConfig` does."""

    kind: str = "a"
    only_b: Sampling = Sampling()
    sampling: Sampling = Sampling(temperature=0.5)
    out: str = "out"

    @model_validator(mode="after")
    def _only_b_for_kind_b(self) -> Kinded:
        if self.kind != "b" and "only_b" in self.model_fields_set:
            raise ValueError("only_b does not apply to kind 'a'")
        return self


def test_an_override_does_not_mark_untouched_fields_as_set(tmp_path):
    path = write(tmp_path, "kind: a\nsampling:\n  n: 2\n")
    cfg = load_config(Kinded, path, ["out=elsewhere"])
    assert cfg.out == "elsewhere" and cfg.model_fields_set == {"kind", "sampling", "out"}
    assert load_config(Kinded, None, ["sampling.n=3"]).sampling == Sampling(temperature=0.5, n=3)
    with pytest.raises(ConfigError, match=r"^command-line override: .*only_b does not apply"):
        load_config(Kinded, path, ["only_b.n=2"])


# Job configs only: an experiment's sweep.yaml is a wandb sweep file (tests/core/sweeps/test_spec.py).
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
# Shipped YAMLs that are not job configs: wandb sweep files, released key-focus-head artifacts and
# accelerate launch configs (tests/attnpo/test_scaleout_configs.py loads those).
NOT_CONFIGS = ("*/sweep.yaml", "attnpo/heads/presets/*.yaml", "attnpo/accelerate/*.yaml")
SHIPPED = sorted(
    path
    for path in EXPERIMENTS.rglob("*.yaml")
    if not any(path.relative_to(EXPERIMENTS).match(pattern) for pattern in NOT_CONFIGS)
)


def shipped_config_class(path: Path) -> type[Config]:
    from attncore.eval.config import SuiteConfig
    from attncore.store.config import ExtractConfig
    from attncore.synthetic.testbed_model import TestbedModelConfig
    from attnpo.find_heads import FindHeadsConfig
    from attnpo.train import TrainConfig as AttnPOTrainConfig
    from cotattn.config import RationalesConfig, TeacherTargetsConfig, TrainConfig

    relative = path.relative_to(EXPERIMENTS)
    if relative.parts[0] == "cotattn":  # a pair folder holds one config per stage, named by the stage
        stages = {"rationales": RationalesConfig, "teacher": TeacherTargetsConfig, "train": TrainConfig}
        return SuiteConfig if path.stem.split("_")[0] == "eval" else stages[path.stem.split("_")[0]]
    if relative.parts[0] == "attnpo" and path.stem in ("train", "validation"):  # an 8-GPU recipe folder
        return AttnPOTrainConfig if path.stem == "train" else SuiteConfig
    if relative.parts[:2] == ("attnpo", "quickstart"):  # one config per stage, named by the stage
        return FindHeadsConfig if path.stem == "heads" else AttnPOTrainConfig
    folders = {
        "attention": ExtractConfig,
        "eval": SuiteConfig,
        "testbed": TestbedModelConfig,
        "attnpo/heads": FindHeadsConfig,
        "attnpo/testbed": AttnPOTrainConfig,
    }
    return folders[str(path.parent.relative_to(EXPERIMENTS))]


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(EXPERIMENTS)) for p in SHIPPED])
def test_every_shipped_config_takes_overrides(path):
    """Each YAML config under experiments/ with dotted overrides resolves to itself with those keys
    changed: a top-level value, and one key inside a section set to the value it already has."""
    cls = shipped_config_class(path)
    plain = load_config(cls, path).model_dump()
    key = next(name for name in ("out", "name") if name in cls.model_fields)
    section = next(name for name in ("model", "training", "teacher", "student") if name in cls.model_fields)
    inner = next(iter(plain[section]))
    changed = load_config(cls, path, [f"{key}=elsewhere", f"{section}.{inner}={plain[section][inner]}"])
    assert changed.model_dump() == {**plain, key: "elsewhere"}
