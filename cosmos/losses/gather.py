"""All-gather of features across data-parallel ranks, as the reference ``gather_features`` (``loss.py:21-65``).

The reference runs with ``--local-loss`` and ``--gather-with-grad`` both off. Each rank therefore
all-gathers every feature tensor *without* grad and then puts its own shard back in place, so the local
rows keep their autograd history while other ranks' rows are constants. Every rank then builds the full
``[global_B, global_B]`` logit matrix.

:class:`Gathering` carries OpenCLIP's two scaling options (``--local-loss``, ``--gather-with-grad``), which
the contrastive losses honour (:mod:`cosmos.losses.clip`). With ``with_grad`` the gather is differentiable
(:class:`_GatherWithGrad`: its backward sums every rank's gradient into the owner's shard).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


def distributed_world() -> tuple[int, int]:
    """Return ``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialized."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class Gathering:
    """How the contrastive losses use the other ranks' rows (OpenCLIP ``--local-loss`` / ``--gather-with-grad``).

    - default (both off, the reference): every rank builds the full ``[N, N]`` logits (``N = world*B_local``)
      from features gathered without grad; a tower parameter's DDP gradient is ``dL/dtheta / world``.
    - ``local_loss``: each rank builds only its ``[B_local, N]`` rows (labels offset by ``rank*B_local``) and
      its loss is the mean over its own rows: O(B_local*N) logit memory instead of O(N^2).
    - ``with_grad``: the gather is differentiable, so each rank's loss also reaches the other ranks' features;
      with or without ``local_loss``, every parameter's DDP gradient then equals the single-process gradient
      of the global-batch loss (derived in docs/training.md, tested in tests/training/test_gathering.py).
    - ``local_loss`` without ``with_grad`` drops the gradient that other ranks' rows send to this rank's
      features (OpenCLIP allows it; its gradient is no scaled copy of the single-process one).
    """

    local_loss: bool = False
    with_grad: bool = False


def gather_features(*tensors: torch.Tensor, with_grad: bool = False) -> tuple[torch.Tensor, ...]:
    """All-gather each ``[B_local, D]`` tensor into ``[world*B_local, D]``, rank-major, local shard with grad.

    Identity (returns the inputs) in a single process, so every caller runs unchanged in unit tests.
    All ranks must pass tensors of the same shape (equal per-rank batch, as the reference's loaders give).
    ``with_grad``: every shard carries grad (the backward sums all ranks' gradients into the owner's rows).
    """
    rank, world = distributed_world()
    if world == 1:
        return tensors
    if with_grad:
        return tuple(_GatherWithGrad.apply(tensor) for tensor in tensors)
    gathered = []
    for tensor in tensors:
        shards = [torch.empty_like(tensor) for _ in range(world)]
        with torch.no_grad():
            dist.all_gather(shards, tensor.detach().contiguous())
        # all_gather returns detached copies; re-inserting the live tensor keeps the local gradient path.
        shards[rank] = tensor
        gathered.append(torch.cat(shards, dim=0))
    return tuple(gathered)


class _GatherWithGrad(torch.autograd.Function):
    """``[B_local, D] -> [world*B_local, D]`` all-gather whose backward returns this rank's rows of the gradient
    summed over all ranks (every rank's loss reads every shard). An all-reduce rather than a reduce-scatter,
    which gloo lacks; the gradient is as small as the features."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        _, world = distributed_world()
        shards = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(shards, tensor.contiguous())
        return torch.cat(shards, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        rank, world = distributed_world()
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(world, dim=0)[rank]
