"""The embedded engine: llama.cpp's own HTTP server, inside this process, for `local/...` models.

    local/qwen2.5-coder-0.5b                        a catalog model (weights pulled on first use)
    local/models/my-model.gguf, local//abs/m.gguf   any GGUF file (relative, absolute)
    local/qwen2.5-coder-0.5b+adapter.gguf:0.8       base model plus LoRA adapters (`:scale` optional)

`make_lm("local/...")` returns an ordinary `dspy.LM` on the OpenAI-compatible path
(`openai/<alias>`), whose engine starts the server at the model's first request (a rerun
answered from DSPy's cache never loads the weights), on a free loopback port, waits until
`/health` answers, and sends through DSPy's native lm15 client. One server per model (and set
of adapters) per process, shared by every LM that names it, stopped at exit.

Settings (`ModelSpec.num_ctx` and these keys of `ModelSpec.extra`):
  num_ctx     tokens of context per slot; unset: the smallest power of two ≥ 4096 holding each
              request (prompt estimated from its characters, plus max_tokens), grown on demand
  n_parallel  slots, i.e. requests decoded together in one batch (default 4): eval threads batch
  n_threads   generation threads (default: one per two cores, see `default_threads`; "auto": every
              core if the machine is idle when the server starts, see `idle_threads`)
  n_threads_batch  threads for batches: prompts, and several slots decoding together (default: n_threads)
  poll        how hard llama.cpp's threads spin while waiting for each other, 0-100 (llama.cpp's
              default: 50); 0 makes them sleep instead
  port        a fixed port instead of a free one
Prompt caching is on: each slot keeps its last prompt's KV cache and a new request goes to the
slot whose cached prompt shares the most with it, so the instructions every prompt of a
signature starts with are processed once per slot.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import re
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from instret.lm.local.gguf import GGUFError, check_gguf

logger = logging.getLogger(__name__)

PREFIX = "local/"
DEFAULT_PARALLEL = 4
MIN_SLOT_CTX = 4096  # a guide prompt (~1,800 tokens) plus a 2,000-token guide fits
ENGINE_SETTINGS = ("n_parallel", "n_threads", "n_threads_batch", "poll", "port")
HEALTH_TIMEOUT = 120.0
CACHE_RAM_MIB = 512  # llama.cpp keeps old prompts' KV in RAM for reuse; its default is 8 GiB
_SCALE = re.compile(r"(.+):([0-9]*\.?[0-9]+)")


class LocalEngineError(RuntimeError):
    """A local model could not be started; the message says why and what to do."""


def default_threads() -> int:
    """llama.cpp threads: one per two cores (at least one), for generation and batches alike.

    llama.cpp's threads wait for each other at every step by spinning; decoding a token (or one
    token for each of 4 slots) is little work per step, so when a core is taken by anything else
    (the embedder, another program, a second local model) one thread falls behind and the others
    spin. Measured on 2 cores with the 0.5B (README, Local models): alone, 2 threads
    generate 22 tokens/s and 1 thread 11; beside one busy process, 2 threads fall to 3.6 (4 slots
    decoding together: 5.5 against 19 on 1 thread) while 1 thread keeps 11. Spinning less
    (`poll` 0) does not help. Batches use the same count: 2 batch threads collapse the same way.
    """
    return max(1, (os.cpu_count() or 2) // 2)


def idle_threads(seconds: float = 0.5) -> int:
    """`n_threads="auto"`: every core when the machine is idle now, else `default_threads()`.

    For a job where this model is the only busy thing in the process (writing guides: the
    embedder has finished), on a quiet machine twice the speed on 2 cores; the machine is
    looked at once, when the server starts, so a load that starts later still slows it."""
    cores = os.cpu_count() or 2
    idle = _idle_cores(seconds)
    return cores if idle is not None and idle >= cores - 0.25 else default_threads()


def _idle_cores(seconds: float) -> float | None:
    """Cores idle over the next `seconds` (Linux's /proc/stat); None where that cannot be read."""
    def snapshot():
        with open("/proc/stat") as stat:
            ticks = [int(t) for t in stat.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # idle + iowait

    try:
        (total, idle), _ = snapshot(), time.sleep(seconds)
        total2, idle2 = snapshot()
    except (OSError, ValueError, IndexError):
        return None
    return (os.cpu_count() or 1) * (idle2 - idle) / max(1, total2 - total)


@dataclass(frozen=True)
class LocalModel:
    """What a `local/...` model string names: weights (a catalog name or a GGUF path) and adapters."""

    weights: str
    adapters: tuple[tuple[str, float], ...] = ()

    @property
    def in_catalog(self) -> bool:
        from instret.lm.local.catalog import CATALOG

        return self.weights in CATALOG

    @property
    def alias(self) -> str:
        """The name the server answers to, and DSPy's cache key: stable across runs and ports."""
        base = self.weights if self.in_catalog else _stable_name(self.weights)
        return "+".join([base] + [_stable_name(path) + ("" if scale == 1.0 else f":{scale:g}")
                                  for path, scale in self.adapters])

    def __str__(self) -> str:
        return PREFIX + "+".join([self.weights] + [path if scale == 1.0 else f"{path}:{scale:g}"
                                                    for path, scale in self.adapters])

    def weights_path(self, *, pull: bool = True, progress: bool = True) -> Path:
        """The GGUF file; a catalog model missing from the cache is pulled first when `pull`."""
        if not self.in_catalog:
            return Path(self.weights).expanduser().resolve()
        from instret.lm.local import catalog

        path = catalog.cached_path(self.weights)
        if path is None:
            if not pull or os.environ.get("INSTRET_NO_PULL", "").lower() in ("1", "true", "yes"):
                raise LocalEngineError(f"the weights of {PREFIX}{self.weights} are not downloaded: run "
                                       f"`instret models pull {PREFIX}{self.weights}`")
            path = catalog.pull(self.weights, progress=progress)
        return path


def is_local(model: str) -> bool:
    return isinstance(model, str) and model.startswith(PREFIX)


def parse_local(model: str) -> LocalModel:
    """`local/<catalog name or .gguf path>[+<adapter.gguf>[:scale]]...` → `LocalModel`."""
    from instret.lm.local.catalog import CATALOG

    if not is_local(model) or model == PREFIX:
        raise ValueError(f"{model!r} is not a local model: write local/<name> ({', '.join(CATALOG)}) "
                         f"or local/<path to a .gguf file>")
    base, *adapter_parts = model[len(PREFIX):].split("+")
    if base not in CATALOG and not base.endswith(".gguf"):
        raise ValueError(f"{model!r}: {base!r} is neither a catalog model ({', '.join(CATALOG)}) nor a path "
                         f"ending in .gguf")
    adapters = []
    for part in adapter_parts:
        match = _SCALE.fullmatch(part)
        path, scale = (match.group(1), float(match.group(2))) if match else (part, 1.0)
        if not path.endswith(".gguf"):
            raise ValueError(f"{model!r}: the LoRA adapter {path!r} must be a .gguf file "
                             f"(llama.cpp's convert_lora_to_gguf.py writes one)")
        adapters.append((path, scale))
    return LocalModel(base, tuple(adapters))


@dataclass(frozen=True)
class EngineSettings:
    n_ctx: int  # per slot
    n_parallel: int = DEFAULT_PARALLEL
    n_threads: int | str | None = None  # "auto": see `idle_threads`
    n_threads_batch: int | None = None
    poll: int | None = None
    port: int | None = None


class LocalServer:
    """One llama.cpp server in this process. `url` is its root, `base_url` the OpenAI `/v1`."""

    def __init__(self, model: LocalModel, weights: Path, settings: EngineSettings):
        self.model, self.weights, self.settings = model, weights, settings
        self.url: str | None = None
        self._server = None
        self.started_seconds: float | None = None
        self.context_length: int | None = None  # the model's trained window

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def n_ctx(self) -> int:
        return self.settings.n_ctx

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> "LocalServer":
        info = _check_files(self.model, self.weights)
        self.context_length = info.context_length
        if self.context_length and self.settings.n_ctx > self.context_length:
            self.settings = replace(self.settings, n_ctx=self.context_length)
        port = self.settings.port
        if port:
            _check_port_free(port)
        try:
            import xllamacpp
        except ImportError as error:  # no wheel for this platform, or a broken install
            raise LocalEngineError(f"{self.model} needs llama.cpp's Python server, xllamacpp ({error}): "
                                   "`pip install xllamacpp`, or name an Ollama or OpenAI-compatible model instead") from None
        params = xllamacpp.CommonParams()
        params.model.path = str(self.weights)
        params.model_alias = {self.model.alias}
        params.hostnames = ["127.0.0.1"]
        params.port = port or 0  # 0: the server binds a free port itself, so no other process can race for it
        params.n_parallel = self.settings.n_parallel
        params.n_ctx = self.settings.n_ctx * self.settings.n_parallel  # llama.cpp splits n_ctx between slots
        threads = self.settings.n_threads
        params.cpuparams.n_threads = idle_threads() if threads == "auto" else threads or default_threads()
        params.cpuparams_batch.n_threads = self.settings.n_threads_batch or params.cpuparams.n_threads
        if self.settings.poll is not None:
            params.cpuparams.poll = params.cpuparams_batch.poll = self.settings.poll
        params.cache_prompt = True
        params.cache_ram_mib = CACHE_RAM_MIB
        params.warmup = False
        params.verbosity = int(os.environ.get("INSTRET_LLAMA_VERBOSITY", "1"))  # 1: llama.cpp's errors only
        params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(_path(path)), scale)
                                for path, scale in self.model.adapters]
        clock = time.perf_counter()
        try:
            self._server = xllamacpp.Server(params)
        except RuntimeError as error:
            raise LocalEngineError(self._start_problem(error)) from None
        self.url = self._server.listening_address.rstrip("/")
        self._wait_healthy()
        self.started_seconds = time.perf_counter() - clock
        logger.info("%s: llama.cpp serving at %s (%d slots × %d tokens, %d threads) after %.1f s", self.model,
                    self.url, self.settings.n_parallel, self.settings.n_ctx, params.cpuparams.n_threads,
                    self.started_seconds)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            del server  # xllamacpp stops the HTTP thread and frees the model when the Server is released
            logger.info("%s: llama.cpp at %s stopped", self.model, self.url)

    def _wait_healthy(self) -> None:
        deadline, last = time.monotonic() + HEALTH_TIMEOUT, None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError as error:  # 503 while loading, refused before listening
                last = error
            time.sleep(0.2)
        self.stop()
        raise LocalEngineError(f"{self.model}: llama.cpp at {self.url} was not healthy after {HEALTH_TIMEOUT:.0f} s ({last})")

    def _start_problem(self, error: Exception) -> str:
        port = self.settings.port
        if port and not _port_free(port):
            return f"{self.model}: port {port} on 127.0.0.1 is taken by another program; leave `port` unset to use a free one"
        return (f"{self.model}: llama.cpp could not load {self.weights} ({error}); its own messages are above. "
                f"Set INSTRET_LLAMA_VERBOSITY=3 for its full log.")


_SERVERS: list[LocalServer] = []
_LOCK = threading.Lock()


def local_server(model: "str | LocalModel", *, n_ctx: int | None = None, n_parallel: int | None = None,
                 n_threads: int | str | None = None, n_threads_batch: int | None = None, poll: int | None = None,
                 port: int | None = None, progress: bool = True) -> LocalServer:
    """The running server of `model` whose slots hold `n_ctx` tokens, else a new one.

    A server started earlier with a smaller context keeps serving whoever holds it, until exit.
    """
    model = parse_local(model) if isinstance(model, str) else model
    want = EngineSettings(n_ctx=max(MIN_SLOT_CTX, n_ctx or 0), n_parallel=n_parallel or DEFAULT_PARALLEL,
                          n_threads=n_threads, n_threads_batch=n_threads_batch, poll=poll, port=port)
    with _LOCK:
        for server in reversed(_SERVERS):
            have = server.settings
            whole_window = bool(server.context_length) and have.n_ctx >= server.context_length
            if (server.running and server.model == model and (have.n_ctx >= want.n_ctx or whole_window)
                    and have.n_parallel >= want.n_parallel and port in (None, have.port)):
                return server
        server = LocalServer(model, model.weights_path(progress=progress), want).start()
        if not _SERVERS:
            atexit.register(stop_all)
        _SERVERS.append(server)
        return server


def running_servers() -> list[LocalServer]:
    with _LOCK:
        return [server for server in _SERVERS if server.running]


def stop_all() -> None:
    """Stop every local server of this process (registered with atexit at the first start)."""
    with _LOCK:
        servers = list(_SERVERS)
        _SERVERS.clear()
    for server in servers:
        server.stop()


def slot_context(prompt_tokens: int, max_tokens: int, context_length: int | None = None) -> int:
    """The per-slot window for a request: a power of two ≥ `MIN_SLOT_CTX`, at most the trained window."""
    size = max(MIN_SLOT_CTX, 1 << math.ceil(math.log2(max(prompt_tokens + max_tokens, 1))))
    return min(size, context_length) if context_length else size


def _check_files(model: LocalModel, weights: Path):
    try:
        info = check_gguf(weights)
        for path, _ in model.adapters:
            check_gguf(_path(path), adapter=True)
    except (GGUFError, OSError) as error:
        fix = f"; `instret models pull {model.weights}` fetches it again" if model.in_catalog else ""
        raise LocalEngineError(f"{model}: {error}{fix}") from None
    return info


def _path(path: str) -> Path:
    return Path(path).expanduser().resolve()


def _stable_name(path: str) -> str:
    """The file's stem plus a short hash of its absolute path: two `model.gguf` files differ."""
    import hashlib

    resolved = str(_path(path))
    return f"{Path(path).stem}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _check_port_free(port: int) -> None:
    if not _port_free(port):
        raise LocalEngineError(f"port {port} on 127.0.0.1 is taken by another program; "
                               "leave `port` unset so the local engine picks a free one")
