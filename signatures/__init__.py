"""Typed DSPy signatures, installed as `instret.signatures`."""

from instret.signatures.answering import answer_signature
from instret.signatures.guide_writing import WriteClusterGuide
from instret.signatures.intervention import (ContinueSolution, NextStep, QuestionFirstSolution, WriteFirstSteps,
                                             intervention_signature)
from instret.signatures.solution_guidance import (WriteGuidance, answer_with_guidance_signature,
                                                  guidance_signature)

__all__ = ["WriteClusterGuide", "answer_signature", "WriteFirstSteps", "NextStep", "ContinueSolution",
           "QuestionFirstSolution", "intervention_signature",
           "WriteGuidance", "guidance_signature", "answer_with_guidance_signature"]
