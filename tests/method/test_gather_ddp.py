"""Two gloo ranks on CPU: CosmosLoss equals the single-process loss; gradients follow the stated relation.

Relation (reference ``gather_features`` without grad, local shard put back; section 4 "Multi-GPU"):
each rank computes the full global-by-global loss L, but only its own rows carry grad. Every sample's
feature appears with grad on exactly one rank, and there in every row and column where it appears, so

- the gradient w.r.t. a rank's local features equals the matching rows of the single-process gradient
  dL/dx (factor 1);
- a replicated parameter reached through the features (the encoder) gets, after DDP's mean all-reduce,
  (1/W) * sum_r dL/dtheta|rank r = dL/dtheta / W: the single-process gradient divided by world size;
- a replicated parameter that multiplies every logit (the temperature) sees the full dL/ds on every
  rank, so after the mean all-reduce it keeps the single-process gradient (no 1/W).
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from cosmos.losses import CosmosLoss, gather_features

WORLD, GLOBAL_B, DIM, N_CROPS, N_CAPTIONS = 2, 8, 6, 4, 4


def _global_inputs():
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(N_CROPS, GLOBAL_B, DIM, generator=g, dtype=torch.float64),
        "text": torch.randn(N_CAPTIONS, GLOBAL_B, DIM, generator=g, dtype=torch.float64),
        "h_i": torch.randn(N_CROPS, GLOBAL_B, DIM, generator=g, dtype=torch.float64),
        "h_t": torch.randn(N_CAPTIONS, GLOBAL_B, DIM, generator=g, dtype=torch.float64),
        "t_img": torch.randn(2, GLOBAL_B, DIM, generator=g, dtype=torch.float64),
        "t_txt": torch.randn(2, GLOBAL_B, DIM, generator=g, dtype=torch.float64),
        "encoder": torch.randn(DIM, DIM, generator=g, dtype=torch.float64),
    }


def _loss_and_grads(inputs):
    """Run CosmosLoss on leaf copies of ``inputs``; returns (total loss, grads of leaves)."""
    leaves = {k: v.clone().requires_grad_(k not in ("t_img", "t_txt")) for k, v in inputs.items()}
    scale = torch.tensor(14.0, dtype=torch.float64, requires_grad=True)
    distill_scale = torch.tensor(9.0, dtype=torch.float64, requires_grad=True)

    def views(x):
        return list(F.normalize(x, dim=-1).unbind(0))

    out = CosmosLoss()(
        image_features=views(leaves["image"] @ leaves["encoder"]), text_features=views(leaves["text"]),
        img_crossmodal_features=views(leaves["h_i"]), txt_crossmodal_features=views(leaves["h_t"]),
        teacher_image_features=views(leaves["t_img"]), teacher_text_features=views(leaves["t_txt"]),
        logit_scale=scale, distill_logit_scale=distill_scale)
    total = out["clip_loss"] + out["distill_loss"]
    total.backward()
    grads = {k: v.grad for k, v in leaves.items() if v.requires_grad}
    grads["scale"], grads["distill_scale"] = scale.grad, distill_scale.grad
    return {"clip_loss": out["clip_loss"].detach(), "distill_loss": out["distill_loss"].detach()}, grads


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        local_b = GLOBAL_B // WORLD
        rows = slice(rank * local_b, (rank + 1) * local_b)
        local = {k: (v if k == "encoder" else v[:, rows]) for k, v in _global_inputs().items()}
        losses, grads = _loss_and_grads(local)
        for name in ("encoder", "scale", "distill_scale"):  # what DDP does to replicated parameters
            dist.all_reduce(grads[name])
            grads[name] /= WORLD
        torch.save({"losses": losses, "grads": grads}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gather_is_identity_without_process_group():
    x = torch.randn(3, 2)
    assert gather_features(x)[0] is x


@pytest.mark.timeout(60)
def test_two_rank_loss_and_gradients_match_single_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    single_losses, single_grads = _loss_and_grads(_global_inputs())
    local_b = GLOBAL_B // WORLD
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        for name, value in single_losses.items():
            torch.testing.assert_close(result["losses"][name], value, atol=1e-6, rtol=0)
        rows = slice(rank * local_b, (rank + 1) * local_b)
        for name in ("image", "text", "h_i", "h_t"):
            torch.testing.assert_close(result["grads"][name], single_grads[name][:, rows], atol=1e-9, rtol=0)
        torch.testing.assert_close(result["grads"]["encoder"], single_grads["encoder"] / WORLD, atol=1e-9, rtol=0)
        for name in ("scale", "distill_scale"):
            torch.testing.assert_close(result["grads"][name], single_grads[name], atol=1e-9, rtol=0)
