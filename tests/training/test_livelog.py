"""`repair_live`: a dvclive folder cut off mid-write is brought back to the resume step (hand-made files)."""

from __future__ import annotations

from cosmos.training.livelog import repair_live

HEADER = "timestamp\tstep\tloss\n"


def _write(root, rel, text):
    path = root / "plots" / "metrics" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_past_the_resume_step_and_a_partial_row_are_dropped(tmp_path):
    loss = _write(tmp_path, "train/loss.tsv", HEADER + "1\t0\t2.5\n2\t1\t2.4\n3\t2\t2.3\n4\t3\t2.")
    said = repair_live(tmp_path, step=1)
    assert loss.read_text() == HEADER + "1\t0\t2.5\n2\t1\t2.4\n"
    assert said == ["plots/metrics/train/loss.tsv: 2 rows dropped"]
    assert repair_live(tmp_path, step=1) == []  # already clean: untouched


def test_a_file_with_no_row_kept_or_a_partial_header_is_removed(tmp_path):
    late = _write(tmp_path, "val/r1.tsv", HEADER + "1\t8\t0.1\n")
    cut = _write(tmp_path, "lr.tsv", "timest")
    assert repair_live(tmp_path, step=4) == ["plots/metrics/val/r1.tsv: 1 row dropped"]
    assert not late.exists() and not cut.exists()


def test_an_unreadable_summary_is_removed_and_a_good_one_kept(tmp_path):
    (tmp_path / "metrics.json").write_text('{"step": 3, "loss": 2.', encoding="utf-8")
    assert repair_live(tmp_path, step=3) == ["metrics.json: unreadable, removed"]
    assert not (tmp_path / "metrics.json").exists()
    (tmp_path / "metrics.json").write_text('{"step": 3}', encoding="utf-8")
    assert repair_live(tmp_path, step=3) == [] and (tmp_path / "metrics.json").exists()


def test_a_missing_folder_and_a_series_without_steps_are_left_alone(tmp_path):
    assert repair_live(tmp_path / "absent", step=5) == []
    other = _write(tmp_path, "x.tsv", "a\tb\n1\t2\n")
    assert repair_live(tmp_path, step=0) == [] and other.read_text() == "a\tb\n1\t2\n"
