"""cosmos: COSMOS cross-modality self-distillation (CVPR 2025), CLIP and SiLC baselines, as a reproducible pipeline.

The library owns the logic; the DVC stages in ``stages/`` only read ``params.yaml``, call one function of
this package and write outputs. Nothing here reads ``params.yaml`` or ``conf/`` by itself.
"""

__version__ = "0.1.0"
