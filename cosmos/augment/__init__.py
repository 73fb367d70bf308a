"""Image augmentation: COSMOS/DINO multi-crop (reference section 3.3) and eval / single-crop transforms."""

from cosmos.augment.multicrop import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    MultiCrop,
    eval_transform,
    scale_blur_radius,
    single_crop_transform,
)

__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "MultiCrop",
    "eval_transform",
    "scale_blur_radius",
    "single_crop_transform",
]
