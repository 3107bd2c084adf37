"""DSPy programs, installed as `instret.programs`."""

from instret.programs.guide_writer import GuideWriter

__all__ = ["GuideWriter"]
