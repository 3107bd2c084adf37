"""DSPy programs, installed as `instret.programs`."""

from instret.programs.answering import (METHODS, ChainOfThoughtQA, GenericGuideQA, InstructionRetrievalQA,
                                        PassageRAGQA, ZeroShotQA, make_program)
from instret.programs.guide_writer import GuideWriter

__all__ = ["GuideWriter", "InstructionRetrievalQA", "ZeroShotQA", "ChainOfThoughtQA", "PassageRAGQA",
           "GenericGuideQA", "METHODS", "make_program"]
