"""The EMA teacher of self-distillation (reference section 5) and where its update sits in a step."""

from cosmos.teacher.ema import EMAPlacement, EMATeacher, step_with_ema

__all__ = ["EMAPlacement", "EMATeacher", "step_with_ema"]
