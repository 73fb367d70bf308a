"""Caption handling: text cropping (reference section 3.2) and CLIP BPE tokenization."""

from cosmos.text.textcrop import (
    DREAMLIP_FIELDS,
    SAMPLING_MODES,
    random_sample_from_list,
    sample_captions,
    split_caption,
)
from cosmos.text.tokenizer import build_tokenizer, tokenize_caption_batch

__all__ = [
    "DREAMLIP_FIELDS",
    "SAMPLING_MODES",
    "build_tokenizer",
    "random_sample_from_list",
    "sample_captions",
    "split_caption",
    "tokenize_caption_batch",
]
