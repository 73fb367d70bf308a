"""The method: ablation switches, per-sample views and collation, and the training objective (issue "The method").

``DistillSwitches`` is the ``distill`` config group; ``SampleTransform`` + ``collate`` build the batch;
``build_student`` + ``Objective`` turn a batch into named ``*_loss`` terms. See ``docs/method.md``.
"""

from cosmos.method.objective import Objective, build_student
from cosmos.method.sample import SampleTransform, collate
from cosmos.method.switches import CAPTION_SOURCES, METHODS, DistillSwitches, SilcHead

__all__ = [
    "CAPTION_SOURCES",
    "METHODS",
    "DistillSwitches",
    "Objective",
    "SampleTransform",
    "SilcHead",
    "build_student",
    "collate",
]
