"""All-gather of features across data-parallel ranks, as the reference ``gather_features`` (``loss.py:21-65``).

The reference runs with ``--local-loss`` and ``--gather-with-grad`` both off. Each rank therefore
all-gathers every feature tensor *without* grad and then puts its own shard back in place, so the local
rows keep their autograd history while other ranks' rows are constants. Every rank then builds the full
``[global_B, global_B]`` logit matrix.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def distributed_world() -> tuple[int, int]:
    """Return ``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialized."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All-gather each ``[B_local, D]`` tensor into ``[world*B_local, D]``, rank-major, local shard with grad.

    Identity (returns the inputs) in a single process, so every caller runs unchanged in unit tests.
    All ranks must pass tensors of the same shape (equal per-rank batch, as the reference's loaders give).
    """
    rank, world = distributed_world()
    if world == 1:
        return tensors
    gathered = []
    for tensor in tensors:
        shards = [torch.empty_like(tensor) for _ in range(world)]
        with torch.no_grad():
            dist.all_gather(shards, tensor.detach().contiguous())
        # all_gather returns detached copies; re-inserting the live tensor keeps the local gradient path.
        shards[rank] = tensor
        gathered.append(torch.cat(shards, dim=0))
    return tuple(gathered)
