"""DSPy programs, installed as `instret.programs`."""

from instret.programs.answering import (ChainOfThoughtQA, GenericGuideQA, InstructionRetrievalQA, PassageRAGQA,
                                        ZeroShotQA)
from instret.programs.guide_writer import GuideWriter
from instret.programs.intervention import FirstStepQA, OnUncertaintyQA, QuestCoTQA, TeacherCoTQA
from instret.programs.methods import METHODS, make_program
from instret.programs.solution_guidance import SolutionGuidanceQA

__all__ = ["GuideWriter", "InstructionRetrievalQA", "ZeroShotQA", "ChainOfThoughtQA", "PassageRAGQA",
           "GenericGuideQA", "QuestCoTQA", "FirstStepQA", "OnUncertaintyQA", "TeacherCoTQA", "SolutionGuidanceQA",
           "METHODS", "make_program"]
