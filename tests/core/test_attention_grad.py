"""Differentiable stepwise capture against eager attention + autograd: values and parameter gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from attncore import attention_grad
from attncore.aggregate import stepwise_attention
from attncore.attention_grad import StepwiseGradCapture
from attncore.errors import UserError
from attncore.models import load_model
from attncore.tiny import random_padded_batch

TOL = 1e-5
SMOLLM2_GRAD_TOL = 1e-4
"""30 fp32 layers: against an fp64 eager run of this test's loss (right padding), eager fp32's parameter
gradients are 2.4e-5 off and the capture's 2.5e-5 (`difference`, relative to the largest entry), so two
fp32 runs differ by their two rounding errors: 3.8e-5 (right) and 4.2e-5 (left padding) measured.
1e-5 is below fp32's own noise over 30 layers; 1e-4 leaves a margin for BLAS and thread counts."""
LENGTHS = [20, 15, 8]


def gpt2_model(**overrides: float) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, GPT2Config

    sizes = dict(vocab_size=300, n_positions=64, n_embd=64, n_layer=3, n_head=4)
    dropouts = dict(attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0)
    config = GPT2Config(**sizes, **{**dropouts, **overrides}, attn_implementation="sdpa")
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


@pytest.fixture(scope="module", params=["llama", "qwen2", "gpt2"])
def model(request, tiny_model_dir):
    if request.param == "gpt2":
        return gpt2_model()
    return load_model(str(tiny_model_dir(request.param))).model  # 4 query heads on 2 KV heads


def padded_batch(lengths: list[int], side: str, vocab: int, seed: int = 0):
    """Random ids padded on `side`, their mask, and random step (B, 4, T) / unit (B, 5, T) memberships
    inside each row's real tokens (steps: contiguous runs covering them; units: 1-2 tokens each)."""
    gen = torch.Generator().manual_seed(seed)
    ids, mask = random_padded_batch(lengths, vocab, gen, side)
    width = ids.shape[1]
    steps = torch.zeros(len(lengths), 4, width)
    units = torch.zeros(len(lengths), 5, width)
    for b, n in enumerate(lengths):
        start = width - n if side == "left" else 0
        cuts = sorted(torch.randperm(n - 1, generator=gen)[:3].add(1).tolist())
        for s, (a, e) in enumerate(zip([0, *cuts], [*cuts, n], strict=True)):
            steps[b, s, start + a : start + e] = 1
        for c in range(5):
            width_c = 1 + c % 2
            first = int(torch.randint(0, n - width_c + 1, (1,), generator=gen))
            units[b, c, start + first : start + first + width_c] = 1
    return ids, mask, steps, units


def value_modules(model: torch.nn.Module) -> list[tuple[torch.nn.Module, slice]]:
    """Each layer's value projection and which slice of its output is V_l (molsaki-spec §6)."""
    if hasattr(model, "transformer"):  # GPT-2: the last third of c_attn
        width = model.config.n_embd
        return [(block.attn.c_attn, slice(2 * width, 3 * width)) for block in model.transformer.h]
    return [(layer.self_attn.v_proj, slice(None)) for layer in model.model.layers]


def eager_reference(model, ids, mask, steps, units):
    """Eager copy: logits, stepwise matrices from `output_attentions`, values from forward hooks."""
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    values = []
    for module, part in value_modules(eager):
        module.register_forward_hook(lambda m, args, out, part=part: values.append(out[..., part]))
    out = eager(ids, attention_mask=mask, output_attentions=True, use_cache=False)
    matrices = torch.stack([stepwise_attention(a, steps, units) for a in out.attentions], 1)
    return eager, out.logits, matrices, torch.stack(values, 1)


def captured(model, ids, mask, steps, units, layers=None):
    with StepwiseGradCapture(model) as capture:
        capture.arm(steps, units, layers)
        logits = model(ids, attention_mask=mask, use_cache=False).logits
        got = capture.collect()
    return logits, got


def real(outputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the positions of padding tokens (B, ..., T, d): SDPA and eager differ there, by design
    (a query that sees no key gets zeros from SDPA, a uniform average from eager)."""
    shape = (mask.shape[0],) + (1,) * (outputs.dim() - 3) + (mask.shape[1], 1)
    return outputs * mask.reshape(shape)


def loss_of(logits, matrices, values, mask, seed: int = 1):
    """A fixed random linear functional of all three outputs at real tokens, so every gradient path
    is exercised."""
    gen = torch.Generator().manual_seed(seed)
    parts = (real(logits, mask) * 0.1, matrices, real(values, mask))
    return sum((t * torch.randn(t.shape, generator=gen)).sum() for t in parts)


def difference(got: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute difference, relative to the reference's largest entry when that exceeds 1
    (fp32 sums of values of size ~100 differ by ~1e-5 in absolute terms whatever the kernel)."""
    got, reference = got.detach(), reference.detach()
    return float((got - reference).abs().max() / reference.abs().max().clamp_min(1))


def max_grad_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """`difference` of the gradients of a and b, worst over all parameters."""

    def grad(p: torch.nn.Parameter) -> torch.Tensor:  # None where the loss does not reach p
        return torch.zeros_like(p) if p.grad is None else p.grad

    grads = [(grad(p), grad(q)) for p, q in zip(a.parameters(), b.parameters(), strict=True)]
    return max(difference(g, h) for g, h in grads)


@pytest.mark.parametrize("side", ["left", "right"])
def test_values_and_gradients_equal_eager(model, side):
    ids, mask, steps, units = padded_batch(LENGTHS, side, model.config.vocab_size)
    model.zero_grad()
    eager, ref_logits, ref_matrices, ref_values = eager_reference(model, ids, mask, steps, units)
    loss_of(ref_logits, ref_matrices, ref_values, mask).backward()
    logits, got = captured(model, ids, mask, steps, units)
    loss_of(logits, got.matrices, got.values, mask).backward()
    assert got.layers == tuple(range(model.config.num_hidden_layers))
    assert got.matrices.shape == (3, len(got.layers), 4, 5)
    assert ref_matrices.abs().max() > 0.5  # the comparison is not between zeros
    assert difference(got.matrices, ref_matrices) <= TOL
    assert difference(real(got.values, mask), real(ref_values, mask)) <= TOL
    assert difference(real(logits, mask), real(ref_logits, mask)) <= TOL
    assert max(float(p.grad.abs().max()) for p in eager.parameters()) > 0.1
    assert max_grad_difference(model, eager) <= TOL
    assert model.config._attn_implementation == "sdpa"


def test_gradient_of_the_matrices_alone_equals_eager(tiny_model_dir):
    """The attention path by itself (no logits or values in the loss) reaches q and k projections."""
    model = load_model(str(tiny_model_dir("qwen2"))).model
    ids, mask, steps, units = padded_batch(LENGTHS, "left", model.config.vocab_size, seed=3)
    model.zero_grad()
    eager, _, ref_matrices, _ = eager_reference(model, ids, mask, steps, units)
    (ref_matrices * torch.arange(ref_matrices.numel()).reshape(ref_matrices.shape).sin()).sum().backward()
    _, got = captured(model, ids, mask, steps, units)
    (got.matrices * torch.arange(got.matrices.numel()).reshape(got.matrices.shape).sin()).sum().backward()
    q_grad = model.model.layers[2].self_attn.q_proj.weight.grad
    assert q_grad.abs().max() > 1e-3
    assert max_grad_difference(model, eager) <= TOL


def sliding_window_qwen2() -> torch.nn.Module:
    """A tiny Qwen2 (GQA) whose layers all attend through a 5-token sliding window."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    sizes = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2)
    heads = dict(num_attention_heads=4, num_key_value_heads=2)
    window = dict(use_sliding_window=True, sliding_window=5, max_window_layers=0)
    config = Qwen2Config(**sizes, **heads, **window, attn_implementation="sdpa")
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("window", [False, True], ids=["full", "sliding"])
def test_row_chunks_weighted_units_and_windows_equal_eager(tiny_model_dir, monkeypatch, side, window):
    """Several row chunks (3 rows each, so each chunk scores only the unit keys its rows can see),
    weighted and overlapping memberships whose unit keys differ between batch rows, and a sliding
    window that hides early unit keys: values and gradients still equal eager's."""
    monkeypatch.setattr(attention_grad, "ROW_CHUNK", 3)
    model = sliding_window_qwen2() if window else load_model(str(tiny_model_dir("qwen2"))).model
    ids, mask, steps, units = padded_batch(LENGTHS, side, model.config.vocab_size, seed=5)
    gen = torch.Generator().manual_seed(6)
    units = units * torch.rand(units.shape, generator=gen).add(0.5)  # weights in [0.5, 1.5)
    units[:, 1] += units[:, 0] * 0.3  # unit 1 also holds unit 0's tokens
    steps = steps * torch.rand(steps.shape, generator=gen).add(0.5)
    model.zero_grad()
    eager, ref_logits, ref_matrices, ref_values = eager_reference(model, ids, mask, steps, units)
    loss_of(ref_logits, ref_matrices, ref_values, mask).backward()
    logits, got = captured(model, ids, mask, steps, units)
    loss_of(logits, got.matrices, got.values, mask).backward()
    assert ref_matrices.abs().max() > 0.5
    assert difference(got.matrices, ref_matrices) <= TOL
    assert difference(real(logits, mask), real(ref_logits, mask)) <= TOL
    assert max_grad_difference(model, eager) <= TOL


def test_no_unit_keys_gives_zero_matrices(tiny_model_dir):
    """Units with no token anywhere in the batch: zero matrices, and the layer outputs of plain SDPA."""
    model = load_model(str(tiny_model_dir("llama"))).model
    ids, mask, steps, units = padded_batch(LENGTHS, "left", model.config.vocab_size)
    plain = model(ids, attention_mask=mask, use_cache=False).logits
    logits, got = captured(model, ids, mask, steps, torch.zeros_like(units))
    assert got.matrices.shape == (3, 4, 4, 5) and not got.matrices.any()
    assert (real(logits, mask) - real(plain, mask)).abs().max() <= TOL


def test_layer_subset_leaves_other_layers_plain(tiny_model_dir):
    model = load_model(str(tiny_model_dir("llama"))).model
    ids, mask, steps, units = padded_batch(LENGTHS, "left", model.config.vocab_size)
    _, _, ref_matrices, ref_values = eager_reference(model, ids, mask, steps, units)
    _, got = captured(model, ids, mask, steps.bool(), units.bool(), layers=[3, 1])  # 0/1 as booleans
    assert got.layers == (1, 3)
    assert (got.matrices - ref_matrices[:, [1, 3]]).abs().max() <= TOL
    assert real(got.values - ref_values[:, [1, 3]], mask).abs().max() <= TOL


def test_attention_dropout_keeps_matrices_on_the_softmax():
    """With attention dropout in training, A uses the pre-dropout softmax; the layer output keeps dropout."""
    model = gpt2_model(attn_pdrop=0.5).train()
    ids, mask, steps, units = padded_batch(LENGTHS, "left", 300)
    eval_copy = copy.deepcopy(model).eval()  # layer 0's inputs do not depend on attention dropout
    reference, _, ref_matrices, _ = eager_reference(eval_copy, ids, mask, steps, units)
    ref_matrices[:, 0].sum().backward()
    first_logits, got = captured(model, ids, mask, steps, units)
    got.matrices[:, 0].sum().backward()
    assert (got.matrices[:, 0] - ref_matrices[:, 0]).abs().max() <= TOL
    weight = model.transformer.h[0].attn.c_attn.weight
    assert weight.grad.abs().max() > 1e-3
    assert (weight.grad - reference.transformer.h[0].attn.c_attn.weight.grad).abs().max() <= TOL
    second_logits, _ = captured(model, ids, mask, steps, units)
    assert (first_logits - second_logits).abs().max() > 1e-3


def largest_saved_map(forward, rows: int, columns: int) -> int:
    """Run `forward` and return the largest saved tensor whose last two dims are (rows, columns), in
    elements."""
    saved: list[torch.Size] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return max((s.numel() for s in saved if tuple(s[-2:]) == (rows, columns)), default=0)


def test_backward_saves_no_per_head_attention_maps(tiny_model_dir):
    """Eager training saves (B, H, T, T) probabilities per layer; the capture saves at most the
    model's own (B, 1, T, T) mask, and over the K unit keys only a (B, 1, T, K) mask, no per-head map."""
    model = load_model(str(tiny_model_dir("llama"))).model
    batch, length, heads = 2, 48, model.config.num_attention_heads
    ids, mask, steps, units = padded_batch([length, length - 10], "left", model.config.vocab_size)
    unit_keys = int(units.ne(0).any(1).any(0).sum())
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    eager_largest = largest_saved_map(
        lambda: eager(ids, attention_mask=mask, output_attentions=True), length, length
    )

    def forward():
        return captured(model, ids, mask, steps, units)

    assert eager_largest == batch * heads * length * length
    assert largest_saved_map(forward, length, length) <= batch * length * length
    assert 0 < largest_saved_map(forward, length, unit_keys) <= batch * length * unit_keys


def test_user_errors(tiny_model_dir):
    model = load_model(str(tiny_model_dir("llama"))).model
    ids, mask, steps, units = padded_batch(LENGTHS, "left", model.config.vocab_size)
    capture = StepwiseGradCapture(model)
    with pytest.raises(UserError, match="active capture"):
        capture.arm(steps, units)
    with capture:
        with pytest.raises(UserError, match="batch rows"):
            capture.arm(steps[:2], units)
        with pytest.raises(UserError, match=r"\(batch, groups, positions\)"):
            capture.arm(steps[0], units)
        with pytest.raises(UserError, match="subset of the model's 4 layers"):
            capture.arm(steps, units, layers=[4])
        with pytest.raises(UserError, match="collect"):
            capture.collect()
        capture.arm(steps[:, :, :-1], units[:, :, :-1])
        with pytest.raises(UserError, match="19 query and 19 key positions; the forward has 3, 20 and 20"):
            model(ids, attention_mask=mask)
        capture.arm(steps, units)
        with pytest.raises(UserError, match=r"no forward reached layers \[0, 1, 2, 3\]"):
            capture.collect()
        model.gradient_checkpointing_enable()
        with pytest.raises(UserError, match="gradient checkpointing"):
            capture.arm(steps, units)
        model.gradient_checkpointing_disable()


@pytest.mark.slow
def test_smollm2_values_and_gradients_equal_eager(smollm2):
    model = smollm2.model
    ids, mask, steps, units = padded_batch([40, 23], "left", model.config.vocab_size)
    model.zero_grad()
    eager, ref_logits, ref_matrices, ref_values = eager_reference(model, ids, mask, steps, units)
    loss_of(ref_logits, ref_matrices, ref_values, mask).backward()
    logits, got = captured(model, ids, mask, steps, units)
    loss_of(logits, got.matrices, got.values, mask).backward()
    assert got.matrices.shape == (2, 30, 4, 5) and got.values.shape == (2, 30, 40, 192)
    assert difference(got.matrices, ref_matrices) <= TOL
    assert difference(real(got.values, mask), real(ref_values, mask)) <= TOL
    assert difference(real(logits, mask), real(ref_logits, mask)) <= TOL
    assert max_grad_difference(model, eager) <= SMOLLM2_GRAD_TOL
    model.zero_grad(set_to_none=True)
