"""Host-side EOT ends (issue 26): ``text_ends`` from collate replaces the text tower's device sync, same outputs."""

from __future__ import annotations

import pytest
import torch

from cosmos.method import build_student
from tests.method.test_sample_transform import make_batch, switches_for

B = 3


def _student_and_batch():
    switches = switches_for("cosmos")
    torch.manual_seed(0)
    student = build_student("cosmos-tiny", switches).eval()
    return student, make_batch(switches, batch_size=B)


def test_collate_carries_the_eot_ends_on_the_host():
    batch = make_batch(switches_for("cosmos"), batch_size=B)
    ends, texts = batch["text_ends"], batch["texts"]
    assert ends.device.type == "cpu" and ends.dtype == torch.long and ends.shape == (texts.shape[0],)
    assert torch.equal(ends, texts.argmax(dim=-1) + 1)
    # argmax + 1 is the position after the EOT id (the largest id), where the tower may cut the row
    assert all(texts[row, end - 1] == texts.max() for row, end in enumerate(ends.tolist()))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("form", ["tensor", "list"])
def test_forward_with_text_ends_equals_forward_without(precision, form):
    student, batch = _student_and_batch()
    ends = batch["text_ends"] if form == "tensor" else batch["text_ends"].tolist()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        plain = student(batch["images"], batch["texts"], batch_size=B)
        hosted = student(batch["images"], batch["texts"], batch_size=B, text_ends=ends)
        enc_plain = student.encode_text(batch["texts"][: 2 * B])
        enc_hosted = student.encode_text(batch["texts"][: 2 * B], text_ends=ends[: 2 * B])
    assert plain.keys() == hosted.keys()
    assert all(torch.equal(plain[k], hosted[k]) for k in plain), [k for k in plain if not torch.equal(plain[k], hosted[k])]
    assert torch.equal(enc_plain, enc_hosted)


def test_forward_never_reads_the_ends_from_the_text_when_given(monkeypatch):
    """With ``text_ends`` the tower does not argmax the trimmed rows of the (device) text: the sync it replaces."""
    student, batch = _student_and_batch()
    texts = batch["texts"]
    rest = texts[B:].data_ptr()  # the rows cut after their EOT: all but G1's B rows, whose tokens are read
    seen = []
    real_argmax = torch.Tensor.argmax

    def spy(self, *args, **kwargs):
        seen.append(self.data_ptr())
        return real_argmax(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "argmax", spy)
    with torch.no_grad():
        student(batch["images"], texts, batch_size=B)
        assert rest in seen  # the spy sees the sync of the plain path
        seen.clear()
        student(batch["images"], texts, batch_size=B, text_ends=batch["text_ends"])
    assert rest not in seen


def test_bad_text_ends_fail_loudly():
    student, batch = _student_and_batch()
    texts, ends = batch["texts"], batch["text_ends"]
    cases = [
        (ends[:-1], "entries for"),
        (ends.float(), "integer tensor"),
        (ends.view(1, -1), "1-D integer tensor"),
        (torch.zeros_like(ends), r"must lie in \[1, 24\]"),
        (ends.clamp(max=2), "is not argmax"),
    ]
    for bad, message in cases:
        with torch.no_grad(), pytest.raises(ValueError, match=message):
            student(batch["images"], texts, batch_size=B, text_ends=bad)
    # a tensor off the host, as DistributedDataParallel would have copied it to a GPU
    with torch.no_grad(), pytest.raises(ValueError, match=r"on the host.*text_ends.tolist\(\)"):
        student(batch["images"], texts, batch_size=B, text_ends=ends.to("meta"))


def test_uint8_images_are_refused_by_the_model():
    student, batch = _student_and_batch()
    pixels = [torch.zeros(view.shape, dtype=torch.uint8) for view in batch["images"]]
    with torch.no_grad(), pytest.raises(TypeError, match="uint8 pixels: normalize them first"):
        student(pixels, batch["texts"], batch_size=B)
