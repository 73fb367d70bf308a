"""Every speed-up switch of issue 12 computes what the stock path computes: outputs, loss and gradients.

``model.fused_blocks``, ``model.trim_text``, ``model.trim_vision`` and ``model.shared_cross_kv`` are meant to be exact (float reassociation only), so each is
compared on and off on identical weights and inputs, in fp32, at tolerances far below any training effect.
``optim.fused`` and the foreach EMA are compared with the update rules they replace.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cosmos.method import Objective, build_student
from cosmos.models import build_model
import torch.nn.functional as F

from cosmos.models.blocks import MATH_ATTENTION_MAX_KEYS, attention_kernel, check_fusable, run_blocks
from cosmos.models.towers import text_forward, trim_buckets, vision_forward
from cosmos.teacher import EMATeacher
from cosmos.training.optim import build_optimizer
from cosmos.training.runtime import tune_malloc
from tests.method.test_sample_transform import make_batch, switches_for

B = 4
TOL = {"atol": 2e-5, "rtol": 1e-4}


def _pair(**off):
    """The same cosmos-tiny student twice: all speed-ups on, and with ``off`` switched off."""
    switches = switches_for("cosmos")
    torch.manual_seed(0)
    fast = build_student("cosmos-tiny", switches)
    slow = build_student("cosmos-tiny", switches, **off)
    slow.load_state_dict(fast.state_dict())
    return switches, fast, slow


def _loss_and_grads(student, switches, batch):
    teacher = EMATeacher(student)
    with torch.no_grad():  # a teacher that differs from the student, as after some training
        for p in teacher.parameters():
            p.mul_(0.9)
    losses = Objective(switches)(student, teacher, batch, step=0)
    total = sum(losses.values())
    total.backward()
    return {k: v.detach() for k, v in losses.items()}, {n: p.grad for n, p in student.named_parameters()}


ALL_OFF = {"fused_blocks": False, "trim_text": False, "trim_vision": False, "shared_cross_kv": False,
           "math_attention": False}


@pytest.mark.parametrize("off", [{"fused_blocks": False}, {"trim_text": False}, {"trim_vision": False},
                                 {"shared_cross_kv": False}, ALL_OFF], ids=str)
def test_a_cosmos_step_is_the_same_with_the_speedups_on_and_off(off):
    switches, fast, slow = _pair(**off)
    batch = make_batch(switches, batch_size=B)
    fast_losses, fast_grads = _loss_and_grads(fast, switches, batch)
    slow_losses, slow_grads = _loss_and_grads(slow, switches, batch)
    for name in slow_losses:
        torch.testing.assert_close(fast_losses[name], slow_losses[name], atol=1e-6, rtol=1e-6)
    assert fast_grads.keys() == slow_grads.keys()
    for name, grad in slow_grads.items():
        assert grad is not None and fast_grads[name] is not None, name
        torch.testing.assert_close(fast_grads[name], grad, **TOL, msg=name)


def test_fused_blocks_equal_openclip_blocks_with_and_without_the_causal_mask():
    torch.manual_seed(0)
    model = build_model("cosmos-tiny").train()
    check_fusable(model.transformer)
    x = torch.randn(3, model.context_length, model.transformer.width, requires_grad=True)
    stock = model.transformer(x, attn_mask=model.attn_mask)
    fused = run_blocks(model.transformer, x, causal=True)
    torch.testing.assert_close(fused, stock, atol=1e-5, rtol=1e-5)
    (g_stock,) = torch.autograd.grad(stock.square().sum(), x)
    (g_fused,) = torch.autograd.grad(fused.square().sum(), x)
    torch.testing.assert_close(g_fused, g_stock, **TOL)
    v = torch.randn(2, 17, model.visual.transformer.width)
    torch.testing.assert_close(run_blocks(model.visual.transformer, v, causal=False), model.visual.transformer(v),
                               atol=1e-5, rtol=1e-5)


def test_trimmed_text_keeps_every_pooled_embedding_and_the_requested_tokens():
    torch.manual_seed(0)
    model = build_model("cosmos-tiny").eval()
    ctx = model.context_length
    ends = [ctx, 5, 3, ctx - 1, 9, 2, 4]  # EOT index + 1 per row
    text = torch.zeros(len(ends), ctx, dtype=torch.long)
    for row, end in enumerate(ends):
        text[row, : end - 1] = torch.randint(1, 1000, (end - 1,))
        text[row, end - 1] = 49407
    full_pooled, full_tokens = text_forward(model, text)
    for rows in (0, 2, len(ends)):
        pooled, tokens = text_forward(model, text, token_rows=rows)
        torch.testing.assert_close(pooled, full_pooled, atol=1e-5, rtol=1e-5)
        assert tokens.shape == (rows, ctx, model.transformer.width)
        torch.testing.assert_close(tokens, full_tokens[:rows], atol=1e-5, rtol=1e-5)


def test_trimmed_vision_keeps_every_pooled_embedding_the_requested_tokens_and_their_gradients():
    torch.manual_seed(0)
    model = build_model("cosmos-tiny").train()
    images = torch.randn(5, 3, 32, 32, requires_grad=True)
    full_pooled, full_tokens = vision_forward(model.visual, images, fused=True)
    (g_full,) = torch.autograd.grad(full_pooled.square().sum() + full_tokens[:2].square().sum(), images)
    for rows in (0, 2, 5):
        pooled, tokens = vision_forward(model.visual, images, fused=True, token_rows=rows)
        torch.testing.assert_close(pooled, full_pooled, atol=1e-5, rtol=1e-5)
        assert tokens.shape == (rows, 64, model.visual.transformer.width)
        torch.testing.assert_close(tokens, full_tokens[:rows], atol=1e-5, rtol=1e-5)
    pooled, tokens = vision_forward(model.visual, images, fused=True, token_rows=2)
    (g_trim,) = torch.autograd.grad(pooled.square().sum() + tokens.square().sum(), images)
    torch.testing.assert_close(g_trim, g_full, **TOL)


@pytest.mark.parametrize("size", [32, 16])
def test_the_matmul_patch_embedding_equals_the_convolution(size):
    from cosmos.models.towers import _patch_embed
    torch.manual_seed(0)
    conv = build_model("cosmos-tiny").visual.conv1
    images = torch.randn(3, 3, size, size)
    (fused, grid), (stock, stock_grid) = _patch_embed(conv, images, True), _patch_embed(conv, images, False)
    assert grid == stock_grid == (size // 4, size // 4)
    torch.testing.assert_close(fused, stock, atol=1e-5, rtol=1e-5)
    (g_fused,) = torch.autograd.grad(fused.square().sum(), conv.weight)
    (g_stock,) = torch.autograd.grad(stock.square().sum(), conv.weight)
    torch.testing.assert_close(g_fused, g_stock, **TOL)


def test_shared_cross_kv_gives_each_view_row_the_tiled_rows_attention():
    torch.manual_seed(0)
    fast, slow = build_model("cosmos-tiny"), build_model("cosmos-tiny", shared_cross_kv=False)
    slow.load_state_dict(fast.state_dict())
    b, views, e = 3, 4, fast.embed_dim
    img_feat, txt_feat = torch.randn(views * b, e), torch.randn(2 * b, e)
    img_tok, txt_tok = torch.randn(b, 64, e), torch.randn(b, 24, e)
    for got, want in zip(fast._cross_modal(img_feat, txt_feat, img_tok, txt_tok),
                         slow._cross_modal(img_feat, txt_feat, img_tok, txt_tok)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_math_attention_is_chosen_only_for_short_low_precision_cpu_attention():
    def kernel(dtype, keys, on=True):
        return type(attention_kernel(torch.zeros(1, dtype=dtype), keys, on)).__name__
    null = "nullcontext"
    assert kernel(torch.bfloat16, MATH_ATTENTION_MAX_KEYS) != null
    assert kernel(torch.bfloat16, MATH_ATTENTION_MAX_KEYS + 1) == null
    assert kernel(torch.float32, 16) == null and kernel(torch.bfloat16, 16, on=False) == null
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernel(torch.float32, 16) != null


def test_the_math_kernel_is_as_accurate_as_flash_in_bf16_forward_and_backward():
    torch.manual_seed(0)
    q, k, v = (2 * torch.randn(24, 4, 65, 32, dtype=torch.float64) for _ in range(3))
    exact = [t.clone().requires_grad_() for t in (q, k, v)]
    out = F.scaled_dot_product_attention(*exact, is_causal=True)
    grads = torch.autograd.grad(out.square().sum(), exact)
    errors = {}
    for on in (True, False):
        low = [t.to(torch.bfloat16).requires_grad_() for t in (q, k, v)]
        with attention_kernel(low[0], 65, on):
            o = F.scaled_dot_product_attention(*low, is_causal=True)
            g = torch.autograd.grad(o.float().square().sum(), low)
        errors[on] = [(o.double() - out).abs().mean().item()] + [
            ((a.double() - b).abs().mean() / b.abs().mean()).item() for a, b in zip(g, grads)]
    for math_err, flash_err in zip(errors[True], errors[False]):
        assert math_err <= 1.1 * flash_err, errors
    assert max(errors[True]) < 2e-2, errors


def test_a_bf16_cosmos_step_agrees_with_math_attention_on_and_off():
    switches, fast, slow = _pair(math_attention=False)
    batch = make_batch(switches, batch_size=B)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast_losses, _ = _loss_and_grads(fast, switches, batch)
        slow_losses, _ = _loss_and_grads(slow, switches, batch)
    for name in slow_losses:  # bf16 rounding of two kernels, far below a training effect
        torch.testing.assert_close(fast_losses[name], slow_losses[name], atol=2e-2, rtol=1e-2)


def test_trim_buckets_minimise_padded_positions():
    # sorted lengths 2 3 4 5 9 | 77: splits cost 1*2+5*77=387, 2*3+4*77=314, 3*4+3*77=243, 4*5+2*77=174,
    # 5*9+1*77=122, 6*77=462; the least is after the 9
    assert trim_buckets([77, 5, 3, 9, 2, 4]) == [([4, 2, 5, 1, 3], 9), ([0], 77)]
    assert trim_buckets([7, 7, 7]) == [([0, 1, 2], 7)]
    assert trim_buckets([]) == []


def test_fused_blocks_refuse_a_block_they_do_not_compute():
    model = build_model("cosmos-tiny")
    model.transformer.resblocks[1].attn = nn.MultiheadAttention(128, 4, add_zero_attn=True, batch_first=True)
    with pytest.raises(NotImplementedError, match="fused_blocks=false"):
        check_fusable(model.transformer)


def test_fused_adamw_makes_the_same_updates_as_the_default_adamw():
    torch.manual_seed(0)
    models = [build_model("cosmos-tiny") for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optims = [build_optimizer(m, lr=1e-3, weight_decay=0.5, fused=fused) for m, fused in zip(models, (False, True))]
    assert optims[1].defaults["fused"] and not optims[0].defaults["fused"]
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=g) for p in models[0].parameters()]
        for model, opt in zip(models, optims):
            for p, grad in zip(model.parameters(), grads):
                p.grad = grad.clone()
            opt.step()
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-6, msg=name)


def test_foreach_ema_is_the_reference_update():
    torch.manual_seed(0)
    student = build_model("cosmos-tiny")
    teacher = EMATeacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    expected = copy.deepcopy(teacher.module)
    with torch.no_grad():  # the reference's loop: param_k.mul_(m).add_((1 - m) * param_q)
        for param_k, param_q in zip(expected.parameters(), student.parameters()):
            param_k.mul_(0.95).add_((1 - 0.95) * param_q)
    teacher.update(student, 0.95)
    for (name, a), b in zip(expected.named_parameters(), teacher.parameters()):
        torch.testing.assert_close(b, a, atol=1e-7, rtol=1e-6, msg=name)


def test_tune_malloc_applies_once_on_glibc():
    import platform

    applied = tune_malloc()
    assert applied == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    assert tune_malloc() == applied  # idempotent
