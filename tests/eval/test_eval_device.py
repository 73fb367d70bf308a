"""``eval.device``, the encoding batch sizes and batched sliding windows (CPU only).

- device selection: ``auto`` falls back to the CPU, ``cuda`` without CUDA fails naming the fix, models land
  on the device and TF32 is off while evaluating;
- the batch sizes of the config reach every encoder call;
- sliding-window segmentation with all windows batched (and chunked by ``window_batch``) gives exactly the
  logits of SCLIP's one-window-at-a-time loop, on images whose last windows are shifted to the border.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cosmos.eval import runner
from cosmos.eval.device import full_fp32, resolve_device
from cosmos.eval.sources import load_eval_models


@pytest.fixture(scope="module")
def teacher(release_ckpt):
    return load_eval_models({"kind": "cosmos_release", "path": str(release_ckpt)}, model_name="cosmos-tiny",
                            weights="teacher")["teacher"]


def test_auto_is_the_cpu_without_cuda_and_cpu_is_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_without_cuda_fails_naming_the_cause_and_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"eval.device=cuda but .* no usable CUDA device .*Fix: eval.device=auto"):
        resolve_device("cuda")


def test_an_unknown_device_is_refused():
    with pytest.raises(ValueError, match=r"eval.device='gpu' must be one of \['auto', 'cpu', 'cuda'\]"):
        resolve_device("gpu")


def test_full_fp32_turns_tf32_off_and_restores_it():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with full_fp32():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_models_land_on_the_configured_device(eval_cfg):
    models = runner.models_for({**eval_cfg, "device": "cpu"}, "cosmos-tiny")
    assert [em.device for em in models.values()] == [torch.device("cpu")] * 2
    assert {p.device for em in models.values() for p in em.model.parameters()} == {torch.device("cpu")}


@pytest.mark.parametrize(("key", "value"), [("batch_size", 0), ("text_batch_size", -1), ("text_batch_size", 2.5)])
def test_batch_sizes_must_be_positive_integers(eval_cfg, key, value):
    with pytest.raises(ValueError, match=rf"eval.{key}={value!r} must be an integer >= 1"):
        runner.batch_sizes({**eval_cfg, key: value})


def test_the_configured_batch_sizes_reach_every_encoder_call(eval_cfg, tmp_path, monkeypatch):
    """Image batches of ``batch_size``, text batches of ``text_batch_size`` (retrieval's captions used to be
    ``4 x batch_size``; 256 = 4 x 64 keeps the default's numerics)."""
    import cosmos.eval.embed as embed

    seen = []
    for name in ("embed_images", "embed_texts"):
        real = getattr(embed, name)

        def spy(em, items, batch_size, *args, _real=real, _name=name, **kwargs):
            seen.append((_name, batch_size))
            return _real(em, items, batch_size, *args, **kwargs)

        for module in ("retrieval", "classification", "compositional", "segmentation"):
            mod = __import__(f"cosmos.eval.{module}", fromlist=[name])
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, spy)
    cfg = {**eval_cfg, "batch_size": 5, "text_batch_size": 7, "pictures": {"cross_attention": 0}, "weights": "student"}
    (tmp_path / "templates.json").write_text('["a photo of a {}."]')  # 1 template, not 80: a shorter test
    cfg["segmentation"] = {**cfg["segmentation"], "pictures": 0, "templates": str(tmp_path / "templates.json")}
    for fn in (runner.run_retrieval, runner.run_classification, runner.run_segmentation, runner.run_compositional):
        fn(cfg, "cosmos-tiny", tmp_path)
    assert {size for name, size in seen if name == "embed_images"} == {5}
    assert {size for name, size in seen if name == "embed_texts"} == {7}
    assert len(seen) >= 10


def _per_window_logits(em, img, queries, crop, stride, csa=True):
    """SCLIP's ``forward_slide``, as the evaluator computed it before batching: one window per forward."""
    _, _, h, w = img.shape
    total = torch.zeros(1, queries.shape[0], h, w)
    count = torch.zeros(1, 1, h, w)
    n_h = max(h - crop + stride - 1, 0) // stride + 1
    n_w = max(w - crop + stride - 1, 0) // stride + 1
    for i in range(n_h):
        for j in range(n_w):
            y2, x2 = min(i * stride + crop, h), min(j * stride + crop, w)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            window = img[..., y1:y2, x1:x2]
            feats = F.normalize(_dense(em, window, csa), dim=-1)
            logits = (feats @ queries.T).permute(0, 3, 1, 2)
            total[..., y1:y2, x1:x2] += F.interpolate(logits, size=window.shape[-2:], mode="bilinear",
                                                      align_corners=False)
            count[..., y1:y2, x1:x2] += 1
    return (total / count)[0]


def _dense(em, window, csa):
    from cosmos.eval.csa import dense_features

    with torch.no_grad():
        return dense_features(em.model.visual, window, csa=csa)


@pytest.mark.parametrize("window_batch", [None, 1, 4])
def test_batched_sliding_windows_equal_the_per_window_loop(teacher, window_batch):
    from cosmos.eval.segmentation import slide_logits_batch

    torch.manual_seed(0)
    imgs = torch.randn(2, 3, 40, 56)  # 2 x 3 windows of 32 at stride 16; the last row and column shifted back
    queries = F.normalize(torch.randn(5, 128), dim=-1)  # E = 128 for cosmos-tiny
    batched = slide_logits_batch(teacher, imgs, queries, crop=32, stride=16, window_batch=window_batch)
    assert batched.shape == (2, 5, 40, 56) and batched.device == teacher.device
    for b in range(2):
        assert torch.equal(batched[b], _per_window_logits(teacher, imgs[b:b + 1], queries, 32, 16))


def test_window_boxes_cover_the_image_with_equal_windows():
    from cosmos.eval.segmentation import window_boxes

    boxes = window_boxes(40, 56, 32, 16)
    assert boxes == [(0, 32, 0, 32), (0, 32, 16, 48), (0, 32, 24, 56),
                     (8, 40, 0, 32), (8, 40, 16, 48), (8, 40, 24, 56)]
    assert window_boxes(20, 20, 32, 16) == [(0, 20, 0, 20)]  # smaller than a window: one window, the image


def test_segmentation_window_and_image_batches_must_be_positive(teacher, tiny_raw):
    from cosmos.eval.seg_datasets import read_benchmark
    from cosmos.eval.segmentation import evaluate_segmentation, slide_logits_batch

    with pytest.raises(ValueError, match=r"eval.segmentation.window_batch=-1 must be >= 1"):
        slide_logits_batch(teacher, torch.zeros(1, 3, 32, 32), torch.zeros(2, 128), 32, 16, window_batch=-1)
    data = read_benchmark("synthetic_bg", str(tiny_raw / "voc_bg"), short_side=64, crop=32, stride=16)
    with pytest.raises(ValueError, match=r"eval.segmentation.batch_images=0 must be >= 1"):
        evaluate_segmentation(teacher, data, ["a {}."], batch_images=0)


def test_window_batches_leave_segmentation_metrics_unchanged(teacher, tiny_raw):
    import json

    from cosmos.eval.seg_datasets import read_benchmark
    from cosmos.eval.segmentation import evaluate_segmentation

    data = read_benchmark("synthetic_stuff", str(tiny_raw / "voc_stuff"), short_side=64, crop=32, stride=16)
    whole = evaluate_segmentation(teacher, data, ["a photo of a {}."], batch_images=4)
    chunked = evaluate_segmentation(teacher, data, ["a photo of a {}."], batch_images=4, window_batch=5)
    assert json.dumps(whole[:2], sort_keys=True) == json.dumps(chunked[:2], sort_keys=True)
