"""Zero-shot evaluation of COSMOS / CLIP models (reference spec section 7), without mmseg or clip_benchmark.

- :mod:`cosmos.eval.sources`: load a model from our checkpoints, a released COSMOS ``.pt`` or OpenCLIP.
- :mod:`cosmos.eval.device`: ``eval.device`` (CPU or GPU) and float32 on the GPU.
- :mod:`cosmos.eval.embed`: batched, no-grad image and text embeddings on the device.
- :mod:`cosmos.eval.retrieval`: COCO / Karpathy / Flickr readers and R@K (spec 7.1).
- :mod:`cosmos.eval.classification`: ImageFolder zero-shot top-1/top-5 (spec 7.2).
- :mod:`cosmos.eval.seg_datasets`, :mod:`cosmos.eval.csa`, :mod:`cosmos.eval.segmentation`: the SCLIP
  protocol with correlative self-attention (spec 7.3).
- :mod:`cosmos.eval.compositional`: SugarCrepe accuracy.
- :mod:`cosmos.eval.pictures`: segmentation overlays and cross-attention maps.
- :mod:`cosmos.eval.runner`: what the ``eval_*`` DVC stages call.
- :mod:`cosmos.eval.launch`: evaluation in the stage's process or as a one-task submitit / Slurm job.
"""
