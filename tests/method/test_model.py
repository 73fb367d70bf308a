"""COSMOS model: reference state-dict parity (spec 2.2), multi-crop forward and cross-modal branch (spec 1.2)."""

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F

from cosmos.models import AttentionalCrossPooler, build_model
from cosmos.models.towers import text_forward

B = 2
EXTRA_SHAPES = {
    "distill_logit_scale": (),
    "image_token_mapping.weight": (512, 768),
    "image_token_mapping.bias": (512,),
    "text_token_mapping.weight": (512, 512),
    "text_token_mapping.bias": (512,),
    **{
        f"{pool}.{name}": shape
        for pool in ("visual.attn_cross_pool", "text_attn_cross_pool")
        for name, shape in {
            "attn.in_proj_weight": (1536, 512), "attn.in_proj_bias": (1536,),
            "attn.out_proj.weight": (512, 512), "attn.out_proj.bias": (512,),
            "ln_q.weight": (512,), "ln_q.bias": (512,), "ln_k.weight": (512,), "ln_k.bias": (512,),
        }.items()
    },
}


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name,n_params", [("ViT-B-16", 152_382_466), ("ViT-B-32", 154_039_042)])
def test_vit_b_state_dict_matches_reference(name, n_params):
    # Meta tensors: exact shapes and counts without allocating ~600 MB per model.
    with torch.device("meta"):
        cosmos_model = build_model(name)
        plain = open_clip.create_model(name, pretrained=None, device="meta")
    ours, base = _shapes(cosmos_model), _shapes(plain)
    assert len(ours) == 323 and len(base) == 302
    assert {k: ours[k] for k in base} == base
    assert {k: v for k, v in ours.items() if k not in base} == EXTRA_SHAPES
    assert sum(p.numel() for p in cosmos_model.parameters()) == n_params


def test_named_parameter_order_matches_reference():
    with torch.device("meta"):
        model = build_model("ViT-B-16")
    groups = []
    for name, _ in model.named_parameters():
        parts = name.split(".")
        group = ".".join(parts[:2]) if parts[0] == "visual" else parts[0]
        if not groups or groups[-1] != group:
            groups.append(group)
    assert groups == [
        "positional_embedding", "text_projection", "logit_scale", "distill_logit_scale",
        "visual.class_embedding", "visual.positional_embedding", "visual.proj", "visual.conv1", "visual.ln_pre",
        "visual.transformer", "visual.attn_cross_pool", "visual.ln_post",
        "transformer", "token_embedding", "ln_final", "text_attn_cross_pool",
        "image_token_mapping", "text_token_mapping",
    ]


# ----------------------------------------------------------------------------------- cosmos-tiny forward


def _captions(n, ctx=24, seed=0):
    """Random ids with SOT, a varying-length body, EOT (the argmax id) and zero padding."""
    g = torch.Generator().manual_seed(seed)
    text = torch.zeros(n, ctx, dtype=torch.long)
    for i in range(n):
        length = int(torch.randint(3, ctx - 1, (1,), generator=g))
        text[i, 0] = 49406
        text[i, 1:length] = torch.randint(1, 49000, (length - 1,), generator=g)
        text[i, length] = 49407
    return text


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("cosmos-tiny").eval()


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    crops = [torch.randn(B, 3, 32, 32) for _ in range(2)] + [torch.randn(B, 3, 16, 16) for _ in range(4)]
    return crops, _captions(6 * B)


def test_student_forward_keys_shapes_and_norms(tiny, batch):
    crops, texts = batch
    out = tiny(crops, texts, batch_size=B, return_tokens=True)
    assert set(out) == {"image_features", "text_features", "img_crossmodal_features", "txt_crossmodal_features",
                        "logit_scale", "distill_logit_scale", "image_tokens", "text_tokens"}
    for key in ("image_features", "text_features", "img_crossmodal_features", "txt_crossmodal_features"):
        assert out[key].shape == (6 * B, 128)
        torch.testing.assert_close(out[key].norm(dim=-1), torch.ones(6 * B))
    assert out["image_tokens"].shape == (2 * B, 64, 128)  # first resolution group (g1, g2), 8x8 patches
    assert out["text_tokens"].shape == (6 * B, 24, 128)  # every position, padding included
    assert out["logit_scale"].shape == () and math.isclose(out["distill_logit_scale"].item(), 1 / 0.07, rel_tol=1e-5)


def test_outputs_are_crop_major_and_caption_major(tiny, batch):
    crops, texts = batch
    out = tiny(crops, texts, batch_size=B)
    for c, crop in enumerate(crops):
        torch.testing.assert_close(out["image_features"][c * B:(c + 1) * B], tiny.encode_image(crop), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["text_features"], tiny.encode_text(texts), atol=1e-5, rtol=0)


def _mha_by_hand(pool, query, tokens):
    """One sample of AttentionalCrossPooler, written out: [D] query over [L, C] tokens -> [D]."""
    attn, d = pool.attn, query.shape[-1]
    w_q, w_k, w_v = attn.in_proj_weight.split(d)
    b_q, b_k, b_v = attn.in_proj_bias.split(d)
    q, kv = pool.ln_q(query), pool.ln_k(tokens)
    h = attn.num_heads
    q = (q @ w_q.T + b_q).reshape(h, 1, d // h)
    k = (kv @ w_k.T + b_k).reshape(-1, h, d // h).transpose(0, 1)
    v = (kv @ w_v.T + b_v).reshape(-1, h, d // h).transpose(0, 1)
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d // h), dim=-1)
    return (weights @ v).reshape(d) @ attn.out_proj.weight.T + attn.out_proj.bias


def test_cross_branch_matches_spec_equation(tiny, batch):
    crops, texts = batch
    out = tiny(crops, texts, batch_size=B)
    with torch.no_grad():
        f_img = torch.cat([tiny.encode_image(c, normalize=False) for c in crops])
        f_txt = tiny.encode_text(texts, normalize=False)
        _, g1_tokens = tiny._encode_image_groups(crops[0])
        img_tok = tiny.image_token_mapping(g1_tokens)
        txt_tok = tiny.text_token_mapping(text_forward(tiny, texts[:B])[1])
        for row in (0, B + 1, 5 * B):  # g1 sample 0, g2 sample 1, last local crop sample 0
            i = row % B
            h_i = F.normalize(f_img[row] + _mha_by_hand(tiny.text_attn_cross_pool, f_img[row], txt_tok[i]), dim=-1)
            h_t = F.normalize(f_txt[row] + _mha_by_hand(tiny.visual.attn_cross_pool, f_txt[row], img_tok[i]), dim=-1)
            torch.testing.assert_close(out["img_crossmodal_features"][row], h_i, atol=1e-5, rtol=0)
            torch.testing.assert_close(out["txt_crossmodal_features"][row], h_t, atol=1e-5, rtol=0)


def test_cross_branch_keys_values_come_from_g1_and_G1_only(tiny, batch):
    crops, texts = batch
    with torch.no_grad():
        ref = tiny(crops, texts, batch_size=B)
        g2_changed = tiny([crops[0], crops[1] + 1.0, *crops[2:]], texts, batch_size=B)
        g1_changed = tiny([crops[0] + 1.0, *crops[1:]], texts, batch_size=B)
        G2_changed = tiny(crops, torch.cat([texts[:B], _captions(B, seed=7), texts[2 * B:]]), batch_size=B)
        G1_changed = tiny(crops, torch.cat([_captions(B, seed=7), texts[B:]]), batch_size=B)
    same = dict(atol=1e-6, rtol=0)
    torch.testing.assert_close(g2_changed["txt_crossmodal_features"], ref["txt_crossmodal_features"], **same)
    assert not torch.allclose(g1_changed["txt_crossmodal_features"], ref["txt_crossmodal_features"], **same)
    # Captions other than G1 only change their own rows, never the image side.
    torch.testing.assert_close(G2_changed["img_crossmodal_features"], ref["img_crossmodal_features"], **same)
    assert not torch.allclose(G1_changed["img_crossmodal_features"], ref["img_crossmodal_features"], **same)


def test_teacher_forward_has_no_cross_branch(tiny, batch):
    crops, texts = batch
    out = tiny(crops[:2], texts[:2 * B])
    assert set(out) == {"image_features", "text_features", "logit_scale", "distill_logit_scale"}
    torch.testing.assert_close(out["image_features"], tiny.encode_image(torch.cat(crops[:2])), atol=1e-5, rtol=0)


def test_cross_attn_off_keeps_parameters_and_skips_branch(batch):
    crops, texts = batch
    model = build_model("cosmos-tiny", cross_attn=False)
    assert model.state_dict().keys() == build_model("cosmos-tiny").state_dict().keys()
    out = model(crops, texts, batch_size=B)
    assert "img_crossmodal_features" not in out and "txt_crossmodal_features" not in out


def test_every_student_parameter_gets_a_gradient(batch):
    crops, texts = batch
    torch.manual_seed(0)
    model = build_model("cosmos-tiny").train()
    out = model(crops, texts, batch_size=B)
    torch.manual_seed(2)
    loss = sum((v * torch.randn_like(v)).sum() for v in out.values())
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_dense_features_and_input_validation(tiny, batch):
    crops, texts = batch
    assert tiny.encode_image_dense(crops[0]).shape == (B, 64, 128)
    assert tiny.encode_image_dense(crops[2]).shape == (B, 16, 128)  # 16 px local crop, 4x4 grid
    with pytest.raises(ValueError, match="context_length|token ids"):
        tiny.encode_text(texts[:, :20])
    with pytest.raises(ValueError, match="batch_size"):
        tiny(crops, texts, batch_size=B + 1)


def test_pooler_attention_weights():
    torch.manual_seed(0)
    pool = AttentionalCrossPooler(32, 32, n_head=8)
    query, tokens = torch.randn(3, 32), torch.randn(3, 5, 32)
    out, weights = pool(query, tokens, return_attention=True)
    assert out.shape == (3, 1, 32) and weights.shape == (3, 1, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 1))
    torch.testing.assert_close(out, pool(query, tokens), atol=1e-6, rtol=0)


def test_build_model_names_and_overrides():
    model = build_model("cosmos-tiny", cross_attn_heads=4, text_cfg={"context_length": 16})
    assert model.context_length == 16 and model.text_attn_cross_pool.attn.num_heads == 4
    assert model.visual.attn_cross_pool.attn.in_proj_weight.shape == (384, 128)
    with pytest.raises(KeyError, match="unknown model"):
        build_model("no-such-model")
