"""Options every command that reads question files shares, and the one way they are read."""

from __future__ import annotations


def add_data_options(parser) -> None:
    parser.add_argument("--format", default="auto", help="input format (default: detected from the content)")
    parser.add_argument("--field", action="append", default=[], metavar="NAME=COLUMN",
                        help="field mapping for your own JSONL/CSV, e.g. --field text=prompt --field answer=target")
    parser.add_argument("--skip-bad-rows", action="store_true", help="skip and report malformed rows instead of stopping")


def load_data(paths, args):
    """A `LoadReport` for `paths`, read with the command's --format, --field and --skip-bad-rows.

    Mistakes in those options are reported in the command line's terms (`--field text=COLUMN`),
    naming the files they were for."""
    from instret.data.loaders import InputError, load_questions

    try:
        return load_questions(paths, format=args.format, fields=args.field or None, skip_bad_rows=args.skip_bad_rows)
    except InputError as error:
        raise ValueError(error.cli_message) from None
