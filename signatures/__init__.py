"""Typed DSPy signatures, installed as `instret.signatures`."""

from instret.signatures.answering import answer_signature
from instret.signatures.guide_writing import WriteClusterGuide

__all__ = ["WriteClusterGuide", "answer_signature"]
