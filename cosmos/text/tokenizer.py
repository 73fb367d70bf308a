"""CLIP BPE tokenizer with a configurable context length (reference section 3.2, "Tokenization").

The reference tokenizes with open_clip's ``SimpleTokenizer(context_length=77)``: ``'lower'`` cleaning,
``[SOT] + bpe + [EOT]``, zero padding, and truncation that keeps ``EOT`` as the last token so that the
text tower's argmax pooling still finds it. Our tiny CPU model uses a shorter context (24); the same
truncation rule applies, so long global captions lose their tail but keep their EOT.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer

REFERENCE_CONTEXT_LENGTH = 77


class CachedTokenizer:
    """open_clip's ``SimpleTokenizer`` with a per-caption LRU cache: ``list[str] -> LongTensor[N, context_length]``.

    Tokenizing is a pure function of the text, and the ftfy clean-up it starts with costs about 0.1 ms per
    caption, which the training loader pays for 8 captions per sample; sentences recur across samples
    (local captions are single sentences of the long caption), so repeats are served from the cache.
    """

    def __init__(self, context_length: int, max_entries: int = 1 << 16):
        self.tokenizer = SimpleTokenizer(context_length=context_length)
        self.context_length = context_length
        self.max_entries = max_entries
        self._rows: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._rows))
        if missing:
            for text, row in zip(missing, self.tokenizer(missing)):
                self._rows[text] = row
        rows = []
        for text in texts:
            self._rows.move_to_end(text)
            rows.append(self._rows[text])
        while len(self._rows) > self.max_entries:
            self._rows.popitem(last=False)
        return torch.stack(rows) if rows else torch.zeros(0, self.context_length, dtype=torch.long)

    def __getattr__(self, name: str):
        # encoder / decoder / decode and the rest of SimpleTokenizer's interface
        if name == "tokenizer":
            raise AttributeError(name)
        return getattr(self.tokenizer, name)


def build_tokenizer(context_length: int = REFERENCE_CONTEXT_LENGTH) -> CachedTokenizer:
    """open_clip's CLIP BPE tokenizer (cached per caption); calling it maps ``list[str]`` to ``LongTensor[N, L]``."""
    if context_length < 2:
        raise ValueError(f"context_length must leave room for SOT and EOT, got {context_length}")
    return CachedTokenizer(context_length)


def tokenize_caption_batch(tokenizer: CachedTokenizer, captions: Sequence[Sequence[str]]) -> torch.Tensor:
    """Tokenize ``B`` samples of ``k`` captions each into caption-major ``[k*B, L]`` (reference ``train.py:123-128``).

    Row ``j*B + b`` holds caption ``j`` of sample ``b``, i.e. the order ``[G1(B), G2(B), L1(B), ...]``
    that the model's cross-modal branch and the losses chunk into views.
    """
    num_captions = {len(per_sample) for per_sample in captions}
    if len(num_captions) != 1:
        raise ValueError(f"every sample must carry the same number of captions, got {sorted(num_captions)}")
    tokens = torch.stack([tokenizer(list(per_sample)) for per_sample in captions])  # [B, k, L]
    return tokens.transpose(0, 1).reshape(-1, tokens.shape[-1])
