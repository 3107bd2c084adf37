"""The CLI reference, written at build time from the real argparse parser (nothing hand-copied).

mkdocs-gen-files runs this file; `tests/docs/test_site.py` imports it to check that every
subcommand the parser has gets its section.
"""

from __future__ import annotations

import argparse
import os
from contextlib import contextmanager

PAGE = "reference/cli.md"
WIDTH = "100"  # argparse wraps help to the terminal's width: fix it, so the page does not depend on it


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) for the parser and every subcommand below it, depth first."""
    yield path, parser
    for action in parser._actions:  # argparse has no public way to list subparsers
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # an alias names the same parser again
                    seen.add(id(sub))
                    yield from commands(sub, path + (name,))


@contextmanager
def fixed_width():
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before


def markdown(parser: argparse.ArgumentParser) -> str:
    lines = ["# CLI reference", "",
             "Every command's `--help`, as the installed `instret` prints it. This page is generated from",
             "the argparse parsers when the site is built.", ""]
    with fixed_width():
        for path, sub in commands(parser):
            title = " ".join((parser.prog,) + path)
            lines += [f"## `{title}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def main() -> None:
    import mkdocs_gen_files

    from instret.cli.main import _parser

    with mkdocs_gen_files.open(PAGE, "w") as file:
        file.write(markdown(_parser()))
    mkdocs_gen_files.set_edit_path(PAGE, "instret/cli/main.py")


if __name__ == "<run_path>":  # how mkdocs-gen-files runs its scripts (runpy.run_path)
    main()
