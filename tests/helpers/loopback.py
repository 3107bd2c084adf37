"""A loopback model server for tests: Ollama's native API and the OpenAI-compatible API, stdlib only.

    with LoopbackServer(models=["m"], responder=answers(answer="Paris")) as server:
        fast = {"cache": False, "num_retries": 0}  # DSPy's disk cache would hide requests
        lm = make_lm(ModelSpec("ollama_chat/m", api_base=server.url, num_ctx=4096, extra=fast))
        lm = make_lm(ModelSpec("openai/m", api_base=server.url + "/v1", extra=fast))  # OpenAI-compatible
        ...
        server.requests_for("/api/chat")[-1].options["num_ctx"]; server.hits["/api/chat"]

As a process: `python tests/helpers/loopback.py --port 0 [--latency S] [--models a,b]` prints
"READY <url>" once listening and stops cleanly on SIGTERM or SIGINT.

Chat answers come from `responder(request: ChatRequest) -> str` (or a plain string); the default,
`dspy_responder`, answers any DSPy ChatAdapter/JSONAdapter prompt in that adapter's format.
`faults` injects failures into the inference paths (`fault_paths`): a list consumed one entry per
request (None = no fault) or a callable `faults(record: Recorded) -> kind | None`. Kinds:
"http500", "http429" (any "http<NNN>"), "timeout" (hang `hang` s, then close), "refuse" (RST),
"close" (FIN, no response), "truncated" (half the JSON body / half a stream), "empty" (empty
content), "malformed" (prose without field markers).
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from .loopback_faults import *  # noqa: F403  (ChatRequest, Recorded, answers, dspy_responder, ...)
    from .loopback_faults import __all__ as _helpers
except ImportError:  # run as a script, or imported with tests/ on sys.path
    from loopback_faults import *  # noqa: F403
    from loopback_faults import __all__ as _helpers

__all__ = ["LoopbackServer", "INFERENCE_PATHS", *_helpers]
INFERENCE_PATHS = ("/api/chat", "/api/generate", "/v1/chat/completions", "/api/embed", "/api/embeddings",
                   "/v1/embeddings")


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 answering Ollama and OpenAI-compatible requests.

    `models`: served model names ("m" also matches "m:latest"; "*" accepts any), a set that tests
    may edit while the server runs. `latency`: seconds before each inference response. `dim`:
    embedding size. `context_length`/`parameters`: what /api/show reports. `/v1/chat/completions`
    honours `stop` and `max_tokens` and, asked for `logprobs`, scores each token with
    `logprob(token, request) -> float` (default: deterministic, in [-0.5, 0]).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, models=("m",), responder=None,
                 latency: float = 0.0, faults=None, fault_paths=INFERENCE_PATHS, dim: int = 384,
                 context_length: int = 32768, parameters: dict | None = None, hang: float = 30.0,
                 version: str = "0.12.6", logprob=None):
        self.host, self.port, self.models = host, port, set(models)
        self.logprob = logprob  # (token, ChatRequest) -> float for OpenAI `logprobs`; None: deterministic
        self.responder = responder if responder is not None else dspy_responder
        self.latency, self.fault_paths, self.dim, self.hang = latency, fault_paths, dim, hang
        self.context_length, self.version = context_length, version
        self.parameters = dict(DEFAULT_PARAMETERS if parameters is None else parameters)
        self.faults = faults
        self._lock = threading.RLock()  # a faults callable may read server.requests
        self._requests: list[Recorded] = []
        self._hits: collections.Counter = collections.Counter()
        self._stopping = threading.Event()
        self._httpd = self._thread = None

    def start(self) -> "LoopbackServer":
        self._stopping.clear()
        self._httpd = ThreadingHTTPServer((self.host, self.port), _Handler)
        self._httpd.daemon_threads, self._httpd.owner = True, self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"loopback:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes "timeout" hangs and latency sleeps
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def faults(self):
        """None, a callable, or a deque of remaining kinds (assigning a list copies it)."""
        return self._faults

    @faults.setter
    def faults(self, schedule) -> None:
        if schedule is None or callable(schedule):
            self._faults = schedule
        else:
            self._faults = collections.deque(check_fault(kind) for kind in schedule)

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    @property
    def hits(self) -> collections.Counter:
        with self._lock:
            return collections.Counter(self._hits)

    def requests_for(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._hits.clear()

    def has_model(self, name: str) -> bool:
        models = set(self.models)
        return "*" in models or tagged(name) in {tagged(m) for m in models}

    def _record(self, rec: Recorded):
        """Store the request; return the fault it draws, if any."""
        with self._lock:
            self._requests.append(rec)
            self._hits[rec.path] += 1
            schedule = self._faults
            if schedule is None or (self.fault_paths is not None and rec.path not in self.fault_paths):
                return None
            if callable(schedule):
                return check_fault(schedule(rec))
            return schedule.popleft() if schedule else None

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)


class _Drop(Exception):
    """Leave without a response; `reset` sends an RST instead of a FIN."""

    def __init__(self, reset: bool = False):
        self.reset = reset


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the body then waits ~40 ms
    # for the client's delayed ACK on every request.
    disable_nagle_algorithm = True
    server_version = "loopback/1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    @property
    def owner(self) -> LoopbackServer:
        return self.server.owner

    def _send(self, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _json(self, obj, status: int = 200, headers: dict | None = None, fault=None) -> None:
        data = json.dumps(obj).encode()
        if fault == "truncated":
            data = data[: max(1, len(data) // 2)]
        self._send(status, data, "application/json; charset=utf-8", headers)

    def _stream(self, lines: list[str], content_type: str, fault=None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in lines[: max(1, len(lines) // 2)] if fault == "truncated" else lines:
            data = line.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        if fault == "truncated":  # no terminating chunk: the body ends mid-stream
            raise _Drop()
        self.wfile.write(b"0\r\n\r\n")

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        if self.path.startswith("/v1/"):
            kind = "invalid_request_error" if status < 500 else "server_error"
            code = "model_not_found" if status == 404 else None
            return self._json({"error": {"message": message, "type": kind, "param": None, "code": code}},
                              status, headers)
        self._json({"error": message}, status, headers)

    def do_HEAD(self) -> None:
        self._send(200, b"", "text/plain")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        self.path = path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                body = {"_raw": raw.decode("utf-8", "replace")}
            body = body if isinstance(body, dict) else {"_raw": body}
            model = str(body.get("model") or body.get("name") or "")
            if path.startswith("/v1/models/"):
                path, model = "/v1/models/{id}", path[len("/v1/models/"):]
            # HTTP header names are case-insensitive, and clients differ (openai>=3.57 sends
            # `authorization`): keep the parsed message, whose lookups ignore case.
            fault = self.owner._record(Recorded(method, self.path, model, body, self.headers))
            if path in INFERENCE_PATHS:
                self.owner._sleep(self.owner.latency)
            if self._pre_fault(fault):
                return
            route = ROUTES.get((method, path))
            if route is None:
                return self._error(404, f"404 page not found: {method} {path}")
            if route in NEEDS_MODEL and not self.owner.has_model(model):
                return self._error(404, f"model '{model}' not found")
            route(self, body, model, fault)
        except _Drop as drop:
            self.close_connection = True
            if drop.reset:  # close now with linger 0: the client gets an RST, not a FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.rfile.close()
                self.connection.close()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a responder bug should reach the test, not hang it
            self._error(500, f"loopback: {type(exc).__name__}: {exc}")

    def _pre_fault(self, fault) -> bool:
        """Act on a fault that replaces the whole response; True once a response was sent."""
        status = http_status(fault)
        if status is not None:
            self._error(status, f"loopback fault {fault}", {"Retry-After": "0"} if status == 429 else None)
            return True
        if fault == "timeout":
            self.owner._sleep(self.owner.hang)
        if fault in ("timeout", "refuse", "close"):
            raise _Drop(reset=fault == "refuse")
        return False

    def _answer(self, request: ChatRequest, fault) -> str:
        if fault in ("empty", "malformed"):
            return "" if fault == "empty" else MALFORMED_TEXT
        responder = self.owner.responder
        return responder(request) if callable(responder) else str(responder)

    # -- Ollama
    def ollama_chat(self, body, model, fault) -> None:
        generate = self.path == "/api/generate"
        if generate:
            messages = [{"role": "system", "content": body["system"]}] if body.get("system") else []
            messages.append({"role": "user", "content": body.get("prompt", "")})
        else:
            messages = body.get("messages") or []
        stream = body.get("stream", True) is not False  # Ollama streams unless told not to
        request = ChatRequest(model, messages, dict(body.get("options") or {}), self.path, stream, body)
        content = self._answer(request, fault)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

        def piece(text: str, done: bool) -> dict:
            out = {"model": model, "created_at": now}
            out.update({"response": text} if generate else {"message": {"role": "assistant", "content": text}})
            out["done"] = done
            if done:
                out.update(done_reason="stop", total_duration=1_000_000, load_duration=100_000,
                           prompt_eval_count=count_tokens(request.text), prompt_eval_duration=200_000,
                           eval_count=count_tokens(content), eval_duration=700_000)
                out.update({"context": [1, 2, 3]} if generate else {})
            return out

        if not stream:
            return self._json(piece(content, True), fault=fault)
        lines = [json.dumps(piece(p, False)) + "\n" for p in pieces(content)] + [json.dumps(piece("", True)) + "\n"]
        self._stream(lines, "application/x-ndjson", fault)

    def ollama_tags(self, body, model, fault) -> None:
        self._json({"models": [ollama_tag_entry(m) for m in sorted(set(self.owner.models) - {"*"})]})

    def ollama_show(self, body, model, fault) -> None:
        owner = self.owner
        self._json(ollama_show_payload(model, owner.context_length, owner.dim, owner.parameters))

    def ollama_pull(self, body, model, fault) -> None:
        with self.owner._lock:
            self.owner.models.add(model)
        if body.get("stream", True) is False:
            return self._json({"status": "success"}, fault=fault)
        blob, total = digest(model), 1_000_000
        lines = [{"status": "pulling manifest"}]
        lines += [{"status": f"pulling {blob[:12]}", "digest": f"sha256:{blob}", "total": total, "completed": done}
                  for done in (0, total // 4, total // 2, total)]
        lines += [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}]
        self._stream([json.dumps(line) + "\n" for line in lines], "application/x-ndjson", fault)

    def ollama_embed(self, body, model, fault) -> None:
        dim = int(body.get("dimensions") or self.owner.dim)
        if self.path == "/api/embeddings":  # the legacy endpoint: one prompt, one vector
            return self._json({"embedding": embedding(str(body.get("prompt", "")), dim)}, fault=fault)
        texts = body.get("input", [])
        texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
        self._json({"model": model, "embeddings": [embedding(t, dim) for t in texts], "total_duration": 1_000_000,
                    "load_duration": 100_000, "prompt_eval_count": sum(count_tokens(t) for t in texts)}, fault=fault)

    def ollama_version(self, body, model, fault) -> None:
        self._json({"version": self.owner.version})

    def ollama_ps(self, body, model, fault) -> None:
        self._json({"models": []})

    def root(self, body, model, fault) -> None:
        self._send(200, b"Ollama is running", "text/plain; charset=utf-8")

    # -- OpenAI-compatible
    def v1_chat(self, body, model, fault) -> None:
        options = {k: v for k, v in body.items() if k not in ("model", "messages")}
        request = ChatRequest(model, body.get("messages") or [], options, self.path, bool(body.get("stream")), body)
        # Like a real server: cut at the first stop sequence or after max_tokens, never generate past them.
        content, finish = apply_stop(self._answer(request, fault), body.get("stop"),
                                     body.get("max_completion_tokens") or body.get("max_tokens"))
        prompt_tokens, completion_tokens = count_tokens(request.text), count_tokens(content)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model,
                "system_fingerprint": "loopback"}
        wants_logprobs = body.get("logprobs") is True

        def logprobs(tokens: list[str]):  # OpenAI's format, scored by the server's `logprob` callable
            return (openai_logprobs(tokens, request, self.owner.logprob, int(body.get("top_logprobs") or 0))
                    if wants_logprobs else None)

        if not request.stream:
            choices = [{"index": i, "message": {"role": "assistant", "content": content},
                        "logprobs": logprobs(logprob_tokens(content)), "finish_reason": finish}
                       for i in range(int(body.get("n") or 1))]
            return self._json(dict(base, object="chat.completion", choices=choices, usage=usage), fault=fault)

        def chunk(choices: list, **extra) -> str:
            return f"data: {json.dumps(dict(base, object='chat.completion.chunk', choices=choices, **extra))}\n\n"

        def delta(part: dict, finish=None, scored=None) -> str:
            return chunk([{"index": 0, "delta": part, "logprobs": scored, "finish_reason": finish}])

        parts = [[token] for token in logprob_tokens(content)] if wants_logprobs else [[p] for p in pieces(content)]
        lines = [delta({"role": "assistant", "content": ""})]
        lines += [delta({"content": "".join(part)}, scored=logprobs(part)) for part in parts]
        lines.append(delta({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            lines.append(chunk([], usage=usage))
        self._stream(lines + ["data: [DONE]\n\n"], "text/event-stream", fault)

    def v1_models(self, body, model, fault) -> None:
        self._json({"object": "list", "data": [self._v1_entry(m) for m in sorted(set(self.owner.models) - {"*"})]})

    def _v1_entry(self, name: str) -> dict:
        return {"id": name, "object": "model", "created": 1735689600, "owned_by": "loopback"}

    def v1_model(self, body, model, fault) -> None:
        self._json(self._v1_entry(model))

    def v1_embeddings(self, body, model, fault) -> None:
        texts = body.get("input", [])
        if isinstance(texts, str) or (texts and isinstance(texts[0], int)):
            texts = [texts]
        texts = [t if isinstance(t, str) else json.dumps(t) for t in texts]  # token arrays hash as text
        dim = int(body.get("dimensions") or self.owner.dim)
        data = []
        for i, text in enumerate(texts):
            vector = embedding(text, dim)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(count_tokens(t) for t in texts)
        self._json({"object": "list", "data": data, "model": model,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, fault=fault)


H = _Handler
ROUTES = {
    ("GET", "/"): H.root, ("GET", "/api/version"): H.ollama_version, ("GET", "/api/tags"): H.ollama_tags,
    ("GET", "/api/ps"): H.ollama_ps, ("POST", "/api/chat"): H.ollama_chat, ("POST", "/api/generate"): H.ollama_chat,
    ("POST", "/api/show"): H.ollama_show, ("POST", "/api/pull"): H.ollama_pull, ("POST", "/api/embed"): H.ollama_embed,
    ("POST", "/api/embeddings"): H.ollama_embed, ("POST", "/v1/chat/completions"): H.v1_chat,
    ("GET", "/v1/models"): H.v1_models, ("GET", "/v1/models/{id}"): H.v1_model, ("POST", "/v1/embeddings"): H.v1_embeddings,
}
NEEDS_MODEL = {H.ollama_chat, H.ollama_show, H.ollama_embed, H.v1_chat, H.v1_model, H.v1_embeddings}
del H


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Loopback Ollama/OpenAI-compatible model server for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--models", default="m", help="comma-separated; '*' accepts any model")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--context-length", type=int, default=32768)
    parser.add_argument("--faults", default="", help="comma-separated schedule; '-' means no fault")
    args = parser.parse_args(argv)
    faults = [None if f == "-" else f for f in args.faults.split(",")] if args.faults else None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with LoopbackServer(args.host, args.port, models=[m for m in args.models.split(",") if m], latency=args.latency,
                        faults=faults, dim=args.dim, context_length=args.context_length) as server:
        print(f"READY {server.url}", flush=True)
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
