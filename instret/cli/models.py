"""`instret doctor` and `instret models ...`. Heavy imports stay inside the command functions."""

from __future__ import annotations

import argparse
import sys

HOST_HELP = "Ollama server URL (default: $OLLAMA_HOST or http://localhost:11434)"


def register(commands) -> None:
    """Add this module's subcommands to the `instret` parser."""
    models = commands.add_parser("models", help="list, pull and inspect local and Ollama models").add_subparsers(
        title="models commands")
    listing = models.add_parser("list", help="local models (size, downloaded or not), then those the Ollama server holds")
    listing.add_argument("--host", help=HOST_HELP)
    listing.set_defaults(run=_list)

    pull = models.add_parser("pull", help="download a model's weights, with a progress bar: local/<name> into the "
                                          "user's cache (verified), anything else onto the Ollama server")
    pull.add_argument("name", help="e.g. local/qwen2.5-coder-1.5b, or qwen2.5:3b (an ollama_chat/ prefix is accepted)")
    pull.add_argument("--host", help=HOST_HELP)
    pull.add_argument("--no-progress", action="store_true")
    pull.set_defaults(run=_pull)

    show = models.add_parser("show", help="a model's context length, size and capabilities")
    show.add_argument("name", help="local/<name or .gguf path>, or an Ollama model")
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
    from instret.lm.servers.ollama import OllamaUnavailable, default_host, list_models

    _print_table(_local_rows())
    print()
    host = args.host or default_host()
    try:
        models = list_models(host)
    except OllamaUnavailable as error:
        if not args.host:  # Ollama is optional now that local models are the default
            print(f"Ollama: {error}.")
            return 0
        return _fail(f"{error}, or point --host at the right server.")
    if not models:
        print(f"The Ollama server at {host} holds no models; get one with `instret models pull qwen2.5:3b`.")
        return 0
    rows = [("NAME", "SIZE", "PARAMETERS", "QUANTIZATION", "MODIFIED")]
    rows += [(m.name, _size(m.size), m.parameter_size or "-", m.quantization or "-", m.modified_at or "-")
             for m in models]
    print(f"Ollama at {host}:")
    _print_table(rows)
    return 0


def _local_rows() -> list[tuple[str, ...]]:
    from instret.lm.local import catalog
    from instret.lm.config import DEFAULT_STUDENT, DEFAULT_TEACHER

    roles = {DEFAULT_TEACHER: "default teacher", DEFAULT_STUDENT: "default student"}
    rows = [("NAME", "SIZE", "STATUS", "DESCRIPTION")]
    for item in catalog.CATALOG.values():
        state = catalog.status(item.name)
        where = f"{state}: {catalog.model_path(item.name)}" if state == "present" else state
        role = roles.get(f"local/{item.name}")
        rows.append((f"local/{item.name}", _size(item.size), where, item.description + (f" [{role}]" if role else "")))
    return rows


def _print_table(rows) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _pull(args) -> int:
    from ollama import ResponseError

    from instret.lm.servers.ollama import OllamaUnavailable, default_host, ollama_name, pull_model

    if args.name.startswith("local/"):
        return _pull_local(args.name, progress=not args.no_progress)
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


def _pull_local(name: str, progress: bool) -> int:
    from instret.lm.local import catalog

    weights = name.removeprefix("local/").split("+")[0]
    if weights.endswith(".gguf"):
        return _fail(f"{name} names a file on this machine; there is nothing to pull (check it with "
                     f"`instret models show {name}`).")
    try:
        item = catalog.entry(weights)
        if catalog.cached_path(weights):
            print(f"local/{item.name}: already present at {catalog.model_path(weights)} (sha256 verified)")
            return 0
        path = catalog.pull(weights, progress=progress)
    except catalog.WeightsError as error:
        return _fail(str(error))
    print(f"local/{item.name}: {item.size:,} bytes, sha256 verified, at {path}")
    return 0


def _show_local(name: str) -> int:
    from instret.lm.local.gguf import GGUFError, check_gguf
    from instret.lm.local.engine import LocalEngineError, parse_local

    try:
        model = parse_local(name)
        info = check_gguf(model.weights_path(pull=False))
    except (ValueError, LocalEngineError, GGUFError, OSError) as error:
        return _fail(str(error))
    print(name)
    for label, value in (("file", str(info.path)), ("size", _size(info.file_size)), ("name", info.name),
                         ("architecture", info.architecture),
                         ("context length", f"{info.context_length} tokens (trained window)" if info.context_length else None),
                         ("adapters", ", ".join(f"{path} (scale {scale:g})" for path, scale in model.adapters))):
        print(f"  {label:<15} {value or '-'}")
    return 0


def _show(args) -> int:
    if args.name.startswith("local/"):
        return _show_local(args.name)
    from ollama import ResponseError

    from instret.lm.servers.ollama import OllamaUnavailable, default_host, ollama_name, show_model

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
