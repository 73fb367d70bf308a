"""CLIP BPE tokenizer with a configurable context length (reference section 3.2, "Tokenization").

The reference tokenizes with open_clip's ``SimpleTokenizer(context_length=77)``: ``'lower'`` cleaning,
``[SOT] + bpe + [EOT]``, zero padding, and truncation that keeps ``EOT`` as the last token so that the
text tower's argmax pooling still finds it. Our tiny CPU model uses a shorter context (24); the same
truncation rule applies, so long global captions lose their tail but keep their EOT.
"""

from __future__ import annotations

from typing import Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer

REFERENCE_CONTEXT_LENGTH = 77


def build_tokenizer(context_length: int = REFERENCE_CONTEXT_LENGTH) -> SimpleTokenizer:
    """Return open_clip's ``SimpleTokenizer``; calling it maps ``list[str]`` to ``LongTensor[N, context_length]``."""
    if context_length < 2:
        raise ValueError(f"context_length must leave room for SOT and EOT, got {context_length}")
    return SimpleTokenizer(context_length=context_length)


def tokenize_caption_batch(tokenizer: SimpleTokenizer, captions: Sequence[Sequence[str]]) -> torch.Tensor:
    """Tokenize ``B`` samples of ``k`` captions each into caption-major ``[k*B, L]`` (reference ``train.py:123-128``).

    Row ``j*B + b`` holds caption ``j`` of sample ``b``, i.e. the order ``[G1(B), G2(B), L1(B), ...]``
    that the model's cross-modal branch and the losses chunk into views.
    """
    num_captions = {len(per_sample) for per_sample in captions}
    if len(num_captions) != 1:
        raise ValueError(f"every sample must carry the same number of captions, got {sorted(num_captions)}")
    tokens = torch.stack([tokenizer(list(per_sample)) for per_sample in captions])  # [B, k, L]
    return tokens.transpose(0, 1).reshape(-1, tokens.shape[-1])
