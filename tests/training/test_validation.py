"""Learning curves (cosmos/training/validation.py): the counts match the evaluator, the run is unchanged."""

from __future__ import annotations

import torch

from cosmos.eval.retrieval import recall_metrics
from cosmos.method import build_student
from cosmos.text.tokenizer import build_tokenizer
from cosmos.training.pretrain import learning_curve, pretrain
from cosmos.training.validation import RetrievalCurve, read_curve
from tests.training.test_loop import SWITCHES, _state, _train, _trainer


def test_curve_counts_hits_as_the_retrieval_evaluator(tiny_raw):
    torch.manual_seed(0)
    model = build_student("cosmos-tiny", SWITCHES).train()
    curve = RetrievalCurve(tiny_raw / "coco", 8, 32, build_tokenizer(model.context_length))
    assert curve.images.shape == (8, 3, 32, 32) and (curve.owner < 8).all()
    values = curve({"student": model})
    assert model.training, "the model goes back to train mode"
    with torch.no_grad():
        model.eval()
        sim = model.encode_image(curve.images, normalize=True) @ model.encode_text(curve.tokens, normalize=True).T
    expected = recall_metrics(sim, curve.owner)
    assert values["student_i2t_R@1"] == expected["image_to_text_R@1"]
    assert values["student_t2i_R@1"] == expected["text_to_image_R@1"]


def test_a_run_with_curves_trains_to_the_same_weights(tiny_shards, tiny_raw, tmp_path):
    plain = _trainer(tmp_path / "plain", tiny_shards, resume="none")
    plain.fit()
    train = _train(resume="none", val_every=2, val_images=6, val_root=str(tiny_raw / "coco"))
    curved = _trainer(tmp_path / "curved", tiny_shards, resume="none", val_every=2, val_images=6,
                      val_root=str(tiny_raw / "coco"))
    assert curved.fingerprint == plain.fingerprint, "curve settings do not shape the numbers"
    summary = pretrain(curved, live_dir=tmp_path / "live", show_progress=False, curve=learning_curve(curved, train),
                       val_every=2)
    a, b = _state(plain), _state(curved)
    assert not [k for k in a if not torch.equal(a[k], b[k])]
    assert {"student_i2t_R@1", "teacher_t2i_R@1"} <= set(summary["curve"])
    curve = read_curve(tmp_path / "live", batch_size=8)
    assert curve["step"] == [2.0, 4.0, 6.0] and curve["samples"] == [16.0, 32.0, 48.0]
    assert len(curve["teacher_i2t_R@1"]) == 3


def test_read_curve_keeps_the_last_row_of_a_re_logged_step(tmp_path):
    folder = tmp_path / "plots" / "metrics" / "val"
    folder.mkdir(parents=True)
    (folder / "teacher_i2t_R@1.tsv").write_text("step\tteacher_i2t_R@1\n5\t1.0\n10\t2.0\n10\t2.5\n15\t3.0\n")
    (folder / "student_i2t_R@1.tsv").write_text("timestamp\tstep\tstudent_i2t_R@1\n0\t10\t4.0\n")
    curve = read_curve(tmp_path, batch_size=32)
    assert curve["step"] == [5.0, 10.0, 15.0] and curve["teacher_i2t_R@1"] == [1.0, 2.5, 3.0]
    assert curve["student_i2t_R@1"][1] == 4.0 and curve["student_i2t_R@1"][0] != curve["student_i2t_R@1"][0]
    assert read_curve(tmp_path / "nothing", 32) == {}


def test_a_missing_curve_folder_is_said_and_skipped(tiny_shards, tmp_path, capsys):
    trainer = _trainer(tmp_path, tiny_shards, resume="none")
    assert learning_curve(trainer, _train(val_every=5, val_root=str(tmp_path / "nowhere"))) is None
    assert "no learning curve: train.val_root=" in capsys.readouterr().out
    assert learning_curve(trainer, _train(val_every=0, val_root=str(tmp_path))) is None
