"""`instret doctor` and `instret models ...`. Heavy imports stay inside the command functions."""

from __future__ import annotations

import argparse
import sys

HOST_HELP = "Ollama server URL (default: $OLLAMA_HOST or http://localhost:11434)"


def register(commands) -> None:
    """Add this module's subcommands to the `instret` parser."""
    models = commands.add_parser("models", help="list, pull and inspect Ollama models").add_subparsers(
        title="models commands")
    listing = models.add_parser("list", help="models the Ollama server holds")
    listing.add_argument("--host", help=HOST_HELP)
    listing.set_defaults(run=_list)

    pull = models.add_parser("pull", help="download a model onto the Ollama server, with a progress bar")
    pull.add_argument("name", help="e.g. qwen2.5:3b (an ollama_chat/ prefix is accepted)")
    pull.add_argument("--host", help=HOST_HELP)
    pull.add_argument("--no-progress", action="store_true")
    pull.set_defaults(run=_pull)

    show = models.add_parser("show", help="a model's context length, size and capabilities")
    show.add_argument("name")
    show.add_argument("--host", help=HOST_HELP)
    show.set_defaults(run=_show)

    doctor = commands.add_parser("doctor", help="check model servers, models, the embedder and Chroma before a long run")
    # SUPPRESS keeps `instret --config F doctor` working: a default here would overwrite the top-level value.
    doctor.add_argument("--config", default=argparse.SUPPRESS, help="TOML file naming teacher, student and embedder")
    doctor.add_argument("--chroma-url", help="also check the Chroma server at this URL (`chroma run`)")
    doctor.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for each server (default 3)")
    doctor.set_defaults(run=_doctor)


def _fail(message: str) -> int:
    print(f"instret: error: {message}", file=sys.stderr)
    return 1


def _list(args) -> int:
    from instret.lm.ollama_models import OllamaUnavailable, default_host, list_models

    host = args.host or default_host()
    try:
        models = list_models(host)
    except OllamaUnavailable as error:
        return _fail(f"{error}, or point --host at the right server.")
    if not models:
        print(f"The Ollama server at {host} holds no models; get one with `instret models pull qwen2.5:3b`.")
        return 0
    rows = [("NAME", "SIZE", "PARAMETERS", "QUANTIZATION", "MODIFIED")]
    rows += [(m.name, _size(m.size), m.parameter_size or "-", m.quantization or "-", m.modified_at or "-")
             for m in models]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _pull(args) -> int:
    from ollama import ResponseError

    from instret.lm.ollama_models import OllamaUnavailable, default_host, ollama_name, pull_model

    host, name = args.host or default_host(), ollama_name(args.name)
    try:
        status = pull_model(name, host, progress=not args.no_progress)
    except OllamaUnavailable as error:
        return _fail(f"{error}, or point --host at the right server; then run this command again.")
    except ResponseError as error:
        return _fail(f"the Ollama server at {host} could not pull {name}: {error}. "
                     "Check the name at https://ollama.com/library.")
    print(f"{name}: {status} (on {host})")
    return 0


def _show(args) -> int:
    from ollama import ResponseError

    from instret.lm.ollama_models import OllamaUnavailable, default_host, ollama_name, show_model

    host, name = args.host or default_host(), ollama_name(args.name)
    try:
        info = show_model(name, host)
    except OllamaUnavailable as error:
        return _fail(f"{error}, or point --host at the right server.")
    except ResponseError as error:
        hint = f"; get it with `instret models pull {name}`" if error.status_code == 404 else ""
        return _fail(f"the Ollama server at {host}: {error}{hint}")
    num_ctx = str(info.num_ctx) if info.num_ctx else "not set in the Modelfile (Ollama's default window applies)"
    print(info.name)
    for label, value in (("family", info.family), ("parameters", info.parameter_size),
                         ("quantization", info.quantization),
                         ("context length", f"{info.context_length} tokens (trained window)" if info.context_length else None),
                         ("num_ctx", num_ctx), ("capabilities", ", ".join(info.capabilities))):
        print(f"  {label:<15} {value or '-'}")
    return 0


def _doctor(args) -> int:
    from instret.lm.config import load_settings
    from instret.cli.doctor import doctor_checks

    settings = load_settings(getattr(args, "config", None))
    print(f"settings: {settings.source or 'defaults and INSTRET_* environment variables'}")
    problems = total = 0
    for check in doctor_checks(settings, chroma_url=args.chroma_url, timeout=args.timeout):
        print(check.line(), flush=True)
        total += 1
        problems += not check.ok
    if problems:
        print(f"\n{problems} of {total} checks found a problem; fix them and run `instret doctor` again.")
        return 1
    print(f"\nAll {total} checks passed.")
    return 0


def _size(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "-"
    size = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
