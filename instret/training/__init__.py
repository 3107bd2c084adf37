"""Improve programs for a domain: DSPy optimizers."""
