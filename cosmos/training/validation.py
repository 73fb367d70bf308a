"""Learning curves: retrieval R@1 of the student and the teacher on a fixed image subset, during training.

Every ``train.val_every`` steps (and at the last step) the models encode the first ``train.val_images``
images of a COCO-layout retrieval set (``train.val_root``; the synthetic benchmark's ``raw/coco``) and all
their captions, and :func:`~cosmos.eval.ranks.caption_ranks` counts the hits exactly as the evaluation
stage does; the values go to dvclive as ``val/<weights>_{i2t,t2i}_R@1`` against the step (samples seen =
step x batch size). The subset is the evaluation set's prefix, so the last point equals the final
evaluation on that prefix: the curve shows how a run got there, it is not used to select anything.

The check leaves the run unchanged: models go back to their train/eval mode, gradients are not touched,
and the RNG state is restored afterwards, so a run with curves trains to bit-identical weights (tested).
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import nn

from cosmos.augment.multicrop import eval_transform
from cosmos.data.formats.coco import read_coco_captions
from cosmos.eval.ranks import caption_ranks
from cosmos.training.checkpoint import capture_rng, restore_rng

__all__ = ["RetrievalCurve"]


class RetrievalCurve:
    """Images ``[N, 3, S, S]`` and caption tokens ``[T, L]`` of a retrieval subset, encoded on demand."""

    def __init__(self, root: str | Path, n_images: int, image_size: int, tokenizer, batch_size: int = 128) -> None:
        data = read_coco_captions(root)
        n = min(n_images, len(data.image_paths))
        if n < 2:
            raise ValueError(f"train.val_images={n_images}: need at least 2 images from {root}")
        transform = eval_transform(image_size)
        images = []
        for path in data.image_paths[:n]:
            with Image.open(path) as img:
                images.append(transform(img.convert("RGB")))
        keep = [t for t, owner in enumerate(data.caption_to_image) if owner < n]
        self.images = torch.stack(images)
        self.tokens = tokenizer([data.captions[t] for t in keep])
        self.owner = torch.tensor([data.caption_to_image[t] for t in keep])
        self.batch_size = batch_size

    @torch.no_grad()
    def _embed(self, model: nn.Module, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        img = torch.cat([model.encode_image(x.to(device), normalize=True).float().cpu()
                         for x in self.images.split(self.batch_size)])
        txt = torch.cat([model.encode_text(t.to(device), normalize=True).float().cpu()
                         for t in self.tokens.split(4 * self.batch_size)])
        return img, txt

    def __call__(self, models: dict[str, nn.Module]) -> dict[str, float]:
        """``{<label>_i2t_R@1, <label>_t2i_R@1}`` (percent) for each model, in eval mode and full precision."""
        out: dict[str, float] = {}
        rng = capture_rng()
        try:
            for label, model in models.items():
                bare = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
                was_training = bare.training
                bare.eval()
                try:
                    device = next(bare.parameters()).device
                    img, txt = self._embed(bare, device)
                finally:
                    bare.train(was_training)
                i2t, t2i = caption_ranks(img @ txt.T, self.owner)
                out[f"{label}_i2t_R@1"] = 100.0 * (i2t < 1).float().mean().item()
                out[f"{label}_t2i_R@1"] = 100.0 * (t2i < 1).float().mean().item()
        finally:
            restore_rng(rng)
        return out


def read_curve(live_dir: str | Path, batch_size: int) -> dict[str, list[float]]:
    """The ``val/*`` learning curves a run logged to dvclive, as ``{"step", "samples", <metric>: [...]}``.

    A resumed run re-logs the steps between its last checkpoint and the kill (with the same values, the
    resume being exact); the last row of each step wins. Metrics logged at different steps are aligned on
    the union of steps (NaN where absent). An empty dict when the run logged no curve.
    """
    folder = Path(live_dir) / "plots" / "metrics" / "val"
    series: dict[str, dict[int, float]] = {}
    for tsv in sorted(folder.glob("*.tsv")) if folder.is_dir() else []:
        header, *rows = tsv.read_text(encoding="utf-8").splitlines()
        cols = header.split("\t")
        step_at, value_at = cols.index("step"), len(cols) - 1  # dvclive: [timestamp,] step, value
        series[tsv.stem] = {int(float(r.split("\t")[step_at])): float(r.split("\t")[value_at])
                            for r in rows if r.strip()}
    if not series:
        return {}
    steps = sorted({s for points in series.values() for s in points})
    out: dict[str, list[float]] = {"step": [float(s) for s in steps], "samples": [float(s * batch_size) for s in steps]}
    for name, points in series.items():
        out[name] = [points.get(s, float("nan")) for s in steps]
    return out
