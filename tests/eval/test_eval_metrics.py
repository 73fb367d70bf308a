"""Unit tier: retrieval ranks, mIoU and the SCLIP post-processing against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cosmos.eval.retrieval import caption_ranks, recall_metrics
from cosmos.eval.runner import retrieval_chance, segmentation_chance
from cosmos.eval.seg_datasets import SegSettings, reduce_zero_label
from cosmos.eval.segmentation import confusion_matrix, iou_metrics, postprocess

# 3 images, 5 captions: image 0 owns captions 0 and 1, image 1 owns 2, image 2 owns 3 and 4.
SIM = torch.tensor([
    [0.1, 0.9, 0.5, 0.2, 0.0],
    [0.8, 0.1, 0.3, 0.2, 0.4],
    [0.3, 0.2, 0.9, 0.1, 0.25],
])
OWNER = [0, 0, 1, 2, 2]


def test_ranks_by_hand():
    i2t, t2i = caption_ranks(SIM, torch.tensor(OWNER))
    # image 0: its best caption (1, 0.9) is top; image 1: 0.8 and 0.4 beat its 0.3; image 2: best GT 0.25,
    # beaten by 0.3 and 0.9.
    assert i2t.tolist() == [0, 2, 2]
    # caption 0: 0.8, 0.3 beat 0.1; caption 1: top; caption 2: 0.5, 0.9 beat 0.3; caption 3: 0.2, 0.2 beat 0.1;
    # caption 4: 0.4 beats 0.25.
    assert t2i.tolist() == [2, 0, 2, 2, 1]


def test_recall_metrics_by_hand():
    m = recall_metrics(SIM, OWNER, ks=(1, 2, 5))
    assert m["image_to_text_R@1"] == pytest.approx(100 / 3)
    assert m["image_to_text_R@2"] == pytest.approx(100 / 3)
    assert m["image_to_text_R@5"] == pytest.approx(100)
    assert m["text_to_image_R@1"] == pytest.approx(20)
    assert m["text_to_image_R@2"] == pytest.approx(40)
    assert m["text_to_image_R@5"] == pytest.approx(100)
    assert m["image_to_text_mean_rank"] == pytest.approx(4 / 3 + 1)
    assert m["image_to_text_median_rank"] == 3
    assert m["text_to_image_mean_rank"] == pytest.approx(7 / 5 + 1)
    assert m["text_to_image_median_rank"] == 3


def test_an_image_without_captions_is_an_error():
    with pytest.raises(ValueError, match="at least one caption"):
        caption_ranks(SIM, torch.tensor([0, 0, 0, 2, 2]))


def test_retrieval_chance():
    c = retrieval_chance([0, 0, 1, 2, 2], ks=(1,))
    assert c["text_to_image_R@1"] == pytest.approx(100 / 3)
    # I2T R@1 = mean over images of (#GT captions / 5) = (2 + 1 + 2) / 15
    assert c["image_to_text_R@1"] == pytest.approx(100 * 5 / 15)


GT = np.array([[0, 0, 1], [1, 255, 2]])
PRED = np.array([[0, 1, 1], [1, 3, 0]])


def test_miou_by_hand_with_ignore_and_absent_class():
    """Rule (mmseg IoUMetric): per class IoU = TP/(TP+FP+FN) over non-255 pixels; a class absent from both
    prediction and ground truth is 0/0 = NaN and is excluded by nanmean."""
    cm = confusion_matrix(PRED, GT, 4)
    # the ignored pixel (GT 255, predicted 3) is dropped, so class 3 appears nowhere
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    m = iou_metrics(cm)
    assert m["iou"][:3] == pytest.approx([100 / 3, 200 / 3, 0.0])
    assert math.isnan(m["iou"][3])
    assert m["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3 * 100)
    assert m["aAcc"] == pytest.approx(60)
    assert m["mAcc"] == pytest.approx((0.5 + 1 + 0) / 3 * 100)


def test_class_predicted_but_absent_from_gt_counts_as_zero():
    pred = PRED.copy()
    pred[1, 2] = 3  # the class-2 pixel is now predicted as 3, which has no ground truth
    m = iou_metrics(confusion_matrix(pred, GT, 4))
    assert m["iou"][3] == 0.0
    assert m["mIoU"] == pytest.approx((1 / 2 + 2 / 3 + 0 + 0) / 4 * 100)


def test_reduce_zero_label():
    assert reduce_zero_label(np.array([0, 1, 5, 255])).tolist() == [255, 0, 4, 255]


def test_segmentation_chance_matches_uniform_expectation():
    n = np.array([6, 2, 0])
    # expected cm[g, p] = n_g / 3: IoU_0 = 2 / (6 + 8/3 - 2), IoU_1 = (2/3) / (2 + 8/3 - 2/3), class 2 NaN
    expect = 100 * np.mean([2 / (6 + 8 / 3 - 2), (2 / 3) / (2 + 8 / 3 - 2 / 3)])
    assert segmentation_chance(n) == pytest.approx(expect)


def test_postprocess_synonyms_prob_thd_and_area_thd():
    # queries: 0 -> class 0 (background), 1 and 2 -> class 1 (synonyms), 3 -> class 2; 1 x 4 pixels
    owner = torch.tensor([0, 1, 1, 2])
    logits = torch.tensor([
        [0.0, 0.0, 0.0, 0.0],
        [5.0, 0.0, 0.0, 0.0],
        [0.0, 5.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 5.0],
    ]).view(4, 1, 4)
    pred = postprocess(logits, owner, 3, SegSettings(logit_scale=1.0))
    assert pred.flatten().tolist() == [1, 1, 0, 2]  # pixel 2: all queries tie -> argmax picks the first
    # prob_thd: a uniform pixel (max prob 0.25) falls to background
    pred = postprocess(logits, owner, 3, SegSettings(logit_scale=1.0, prob_thd=0.5))
    assert pred.flatten().tolist() == [1, 1, 0, 2]
    # area_thd 0.4: class 2 covers 1/3 of the foreground argmax area -> zeroed -> its pixel goes elsewhere
    pred = postprocess(logits, owner, 3, SegSettings(logit_scale=1.0, area_thd=0.4))
    assert pred.flatten().tolist() == [1, 1, 0, 0]
