"""`instret doctor` and `instret models ...`. Heavy imports stay inside the command functions."""

from __future__ import annotations


def register(commands) -> None:
    """Add this module's subcommands to the `instret` parser."""
