"""Training objectives. Every loss returns a dict of ``*_loss`` scalars; the training step sums them."""

from cosmos.losses.clip import contrastive_pair_loss, multi_view_clip_loss
from cosmos.losses.cosmos_loss import (
    COSMOS_PAIRINGS,
    IMAGE_DISTILL_PAIRINGS,
    NAMED_PAIRINGS,
    TEXT_DISTILL_PAIRINGS,
    UNIMODAL_PAIRINGS,
    CosmosLoss,
    chunk_views,
    distillation_loss,
)
from cosmos.losses.gather import Gathering, distributed_world, gather_features
from cosmos.losses.silc import DINOHead, DINOLoss

__all__ = [
    "COSMOS_PAIRINGS",
    "IMAGE_DISTILL_PAIRINGS",
    "NAMED_PAIRINGS",
    "TEXT_DISTILL_PAIRINGS",
    "UNIMODAL_PAIRINGS",
    "CosmosLoss",
    "DINOHead",
    "DINOLoss",
    "chunk_views",
    "contrastive_pair_loss",
    "distillation_loss",
    "distributed_world",
    "Gathering",
    "gather_features",
    "multi_view_clip_loss",
]
