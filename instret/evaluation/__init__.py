"""Evaluate methods × students on a test set: run, statistics, report."""
