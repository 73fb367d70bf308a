"""SiLC baseline: DINO-style local-to-global self-distillation added to CLIP (Naeem et al., ECCV 2024).

SiLC has no public code. Its paper summary (seed 003) says: an EMA teacher sees only global views; the
student's local crops must predict the teacher's global output with a DINO-style cross-entropy; the
total loss is CLIP InfoNCE plus this term. Everything the summary leaves open follows DINO (Caron et
al., ICCV 2021, and its released defaults), and each such choice is marked ``[DINO]`` below:

- projection head: 3-layer MLP with GELU, hidden 2048, bottleneck 256, L2-normalised bottleneck, then a
  weight-normalised linear layer to ``K`` prototypes whose norm is frozen at 1 [DINO];
- ``K = 65536`` prototypes, student temperature 0.1, teacher temperature 0.04 with an optional linear
  warm-up from ``warmup_teacher_temp`` (0.04, i.e. no warm-up, DINO's default), centre momentum 0.9 [DINO];
- pairs: every student crop (global and local) against every teacher global crop, skipping the pairs in
  which both sides see the same view [DINO]; this is "local-to-global" in the wide DINO sense.

What the head reads (pooled image embedding vs. backbone token) is the training loop's choice.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from cosmos.losses.gather import Gathering, distributed_world, gather_features


class DINOHead(nn.Module):
    """MLP projection to ``out_dim`` prototype logits: ``[N, in_dim] -> [N, out_dim]`` (DINO section 3.1)."""

    def __init__(self, in_dim: int, out_dim: int = 65536, *, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 num_layers: int = 3, norm_last_layer: bool = True):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for index, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if index < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.apply(self._init_linear)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        # A frozen unit norm keeps the prototypes on the sphere; DINO reports it stabilises training.
        magnitude.requires_grad_(not norm_last_layer)

    @staticmethod
    def _init_linear(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher and the student over views (DINO eq. 1-2).

    Args:
        out_dim: number of prototypes ``K``.
        student_temp: student softmax temperature (0.1).
        teacher_temp: final teacher temperature (0.04).
        warmup_teacher_temp, warmup_teacher_temp_steps: linear warm-up of the teacher temperature over
            the first steps (DINO uses epochs; we index by global step).
        center_momentum: EMA momentum of the centre (0.9).
        gathering: with ``with_grad`` (the CLIP term then gets the single-process gradient under DDP) the term
            is each rank's local mean, which DDP's gradient mean turns into the single-process gradient too.
    """

    def __init__(self, out_dim: int, *, student_temp: float = 0.1, teacher_temp: float = 0.04,
                 warmup_teacher_temp: float = 0.04, warmup_teacher_temp_steps: int = 0,
                 center_momentum: float = 0.9, gathering: Gathering = Gathering()):
        super().__init__()
        self.gathering = gathering
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        warmup = np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_steps)
        self.teacher_temp_warmup = warmup
        self.teacher_temp = teacher_temp

    def teacher_temp_at(self, step: int) -> float:
        """Teacher temperature at global ``step`` (linear warm-up, then constant)."""
        if step < len(self.teacher_temp_warmup):
            return float(self.teacher_temp_warmup[step])
        return self.teacher_temp

    def forward(self, student_out: Sequence[torch.Tensor], teacher_out: Sequence[torch.Tensor],
                step: int = 0) -> dict[str, torch.Tensor]:
        """``student_out``: head logits of all crops ``[g1, g2, l1..]``, each ``[B, K]``; ``teacher_out``: of ``[g1, g2]``.

        Student view ``v`` and teacher view ``q`` share an image view when ``v == q`` (the list orders agree),
        and those pairs are skipped. Returns ``{"silc_distill_loss"}`` and updates the centre.
        """
        if len(teacher_out) > len(student_out):
            raise ValueError("the teacher's global views must be the leading student views")
        temp = self.teacher_temp_at(step)
        targets = [F.softmax((t.detach() - self.center) / temp, dim=-1) for t in teacher_out]
        log_probs = [F.log_softmax(s / self.student_temp, dim=-1) for s in student_out]
        # Under DDP each rank's term is the global-batch mean, with grad on its own rows only: the semantics of the
        # CLIP term's gather (cosmos.losses.gather). A local mean would give the DINO term the single-process
        # gradient while DDP leaves the CLIP term 1/world of it, so the terms' balance would change with the
        # number of GPUs (docs/training.md, "DDP equals one process").
        gather = (lambda losses: losses) if self.gathering.with_grad else (lambda losses: gather_features(losses)[0])
        terms = [gather((-q * log_p).sum(dim=-1)).mean()
                 for iq, q in enumerate(targets) for v, log_p in enumerate(log_probs) if v != iq]
        if not terms:
            raise ValueError("no (student, teacher) pair left after skipping same-view pairs")
        self.update_center(teacher_out)
        return {"silc_distill_loss": torch.stack(terms).mean()}

    @torch.no_grad()
    def update_center(self, teacher_out: Sequence[torch.Tensor]) -> None:
        """EMA of the teacher's mean logit over all global views and all ranks."""
        logits = torch.cat([t.detach() for t in teacher_out])
        batch_sum = logits.sum(dim=0, keepdim=True)
        _, world = distributed_world()
        if world > 1:
            dist.all_reduce(batch_sum)
        batch_center = batch_sum / (logits.shape[0] * world)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)
