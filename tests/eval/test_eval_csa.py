"""CSA (spec 7.3) against an explicit per-head computation, and dense features against the model's own."""

from __future__ import annotations

import torch
from open_clip.transformer import ResidualAttentionBlock

from cosmos.eval.csa import csa_block, dense_features
from cosmos.models import build_model


def test_csa_block_equals_hand_computation():
    torch.manual_seed(0)
    d, heads, hd = 4, 2, 2
    block = ResidualAttentionBlock(d, heads, mlp_ratio=2.0, batch_first=True).eval()
    x = torch.randn(1, 3, d)
    # by hand, one head at a time: A = softmax(s q q^T) + softmax(s k k^T), no renormalization
    xn = block.ln_1(x)[0]
    w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
    q, k, v = (xn @ w[i * d:(i + 1) * d].T + b[i * d:(i + 1) * d] for i in range(3))
    s = hd ** -0.5
    heads_out = []
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        a = torch.softmax(s * q[:, sl] @ q[:, sl].T, -1) + torch.softmax(s * k[:, sl] @ k[:, sl].T, -1)
        assert torch.allclose(a.sum(-1), torch.full((3,), 2.0))
        heads_out.append(a @ v[:, sl])
    attn = torch.cat(heads_out, -1) @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
    x1 = x[0] + attn                                  # residual kept
    expect = x1 + block.mlp(block.ln_2(x1))           # FFN kept
    assert torch.allclose(csa_block(block, x)[0], expect, atol=1e-6)


def test_dense_features_without_csa_match_encode_image_dense():
    torch.manual_seed(0)
    model = build_model("cosmos-tiny").eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = dense_features(model.visual, images, csa=False)
        ref = model.encode_image_dense(images)
        with_csa = dense_features(model.visual, images, csa=True)
    assert ours.shape == (2, 8, 8, 128)
    assert torch.allclose(ours.reshape(2, 64, 128), ref, atol=1e-5)
    assert not torch.allclose(with_csa, ours, atol=1e-3)  # CSA changes the last block


def test_dense_features_accept_other_sizes():
    model = build_model("cosmos-tiny").eval()
    with torch.no_grad():
        assert dense_features(model.visual, torch.randn(1, 3, 48, 64)).shape == (1, 12, 16, 128)


def test_batched_segmentation_equals_one_image_at_a_time(tiny_raw, release_ckpt):
    from cosmos.eval.seg_datasets import read_benchmark
    from cosmos.eval.segmentation import evaluate_segmentation
    from cosmos.eval.sources import load_eval_models

    em = load_eval_models({"kind": "cosmos_release", "path": str(release_ckpt)}, model_name="cosmos-tiny",
                          weights="teacher")["teacher"]
    data = read_benchmark("synthetic_bg", str(tiny_raw / "voc_bg"), short_side=64, crop=32, stride=16,
                          logit_scale=65, prob_thd=0.1, area_thd=0.1)
    templates = ["a photo of a {}."]
    one = evaluate_segmentation(em, data, templates, keep_examples=3, batch_images=1)
    # 5 per batch: the last batch is short, and batches never split an image's windows
    batched = evaluate_segmentation(em, data, templates, keep_examples=3, batch_images=5)
    import json  # NaN (absent classes) compares equal in JSON text, not as floats
    assert json.dumps(one[:2], sort_keys=True) == json.dumps(batched[:2], sort_keys=True)
    for (img_a, pred_a, lbl_a), (img_b, pred_b, lbl_b) in zip(one[2], batched[2]):
        assert (pred_a == pred_b).all() and (lbl_a == lbl_b).all() and (img_a == img_b).all()
