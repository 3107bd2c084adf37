"""The public API (`instret`'s names) and every CLI command and flag stay as users know them.

`tests/fixtures/interface.json` was written from the release before `lm/` was split by role.
New commands, flags and names may be added; none of these may go or be renamed (a deliberate
removal updates the file in the same commit, so it is reviewed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "interface.json"


def cli_flags(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Every command path ('instret corpus build') → its option strings and positional arguments."""
    flags, commands = [], []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            commands.extend(action.choices.items())
        elif action.option_strings:
            flags.extend(action.option_strings)
        else:
            flags.append(f"<{action.dest}>")
    found = {" ".join(("instret",) + path): sorted(flags)}
    for name, command in commands:
        found.update(cli_flags(command, path + (name,)))
    return found


def test_every_cli_command_and_flag_is_still_there():
    from instret.cli.main import _parser

    now = cli_flags(_parser())
    missing = {command: sorted(set(flags) - set(now.get(command, ())))
               for command, flags in json.loads(FIXTURE.read_text())["cli"].items()}
    assert {command: flags for command, flags in missing.items() if flags} == {}


def test_the_flag_walk_sees_nested_commands():
    from instret.cli.main import _parser

    flags = cli_flags(_parser())
    assert "--guides" in flags["instret corpus build"] and "<question>" in flags["instret answer"]


def test_public_names_are_unchanged_and_import():
    import instret

    assert set(json.loads(FIXTURE.read_text())["public"]) <= set(instret._PUBLIC)
    assert all(getattr(instret, name) is not None for name in instret._PUBLIC)
