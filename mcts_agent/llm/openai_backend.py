"""Backend for an OpenAI-compatible ``/v1/completions`` server (``vllm serve`` and others).

Each request of a batch is one HTTP POST; up to ``max_concurrency`` run at once and the
server batches them. Each attempt has a hard deadline of ``timeout`` seconds (connect,
headers and body together). Connection errors, timeouts, HTTP 429 and 5xx are retried
up to ``max_retries`` times with exponential backoff (``backoff * 2**k`` seconds, or
the server's ``Retry-After`` if larger, capped at 60 s); any other HTTP error cannot
succeed on a resend and raises ``ServerError`` at once with the server's message.

``server_extensions=True`` (the default) also sends vLLM's extra fields
(``return_token_ids``) and uses its ``/tokenize`` route for exact scoring; set it False
for servers that reject unknown fields. Stdlib only: no HTTP client dependency.

As in the other backends, ``token_ids``/``logprobs`` cover exactly the tokens of ``text``:
the EOS token and a token that carries a stop string are dropped (found from the
per-token strings of the logprobs block). Servers that send no token ids leave
``token_ids`` empty; servers that send no logprobs leave ``logprobs`` empty (counted in
``stats.extra["completions_without_logprobs"]``).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import socket
import ssl
import threading
import time
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

from mcts_agent.errors import BackendError, ConfigError, PromptTooLongError, ServerError
from mcts_agent.llm.chat import render_chat
from mcts_agent.llm.types import Backend, Completion, FinishReason, GenerationRequest

log = logging.getLogger(__name__)
T = TypeVar("T")
_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH}
_TOO_LONG_HINTS = ("maximum context length", "context length", "too long", "max_model_len")
_MAX_RETRY_AFTER = 60.0


class ServerPromptTooLongError(ServerError, PromptTooLongError):
    """The server rejected a prompt that does not fit the model's context."""


class HTTPStatusError(ServerError):
    """The server answered with an HTTP error status."""

    def __init__(self, message: str, status: int, server_message: str) -> None:
        super().__init__(message)
        self.status = status
        self.server_message = server_message


class _Retryable(Exception):
    """One attempt failed in a way a resend may fix."""

    def __init__(self, reason: str, connect_failed: bool = False, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.connect_failed = connect_failed
        self.retry_after = retry_after


def _server_message(body: bytes) -> str:
    """The error text of an OpenAI/vLLM/FastAPI error body, else the body itself (truncated)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500] or "<empty body>"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail")
            if msg:
                return str(msg)[:500]
        elif isinstance(err, str):
            return err[:500]
        if "detail" in data:
            return str(data["detail"])[:500]
    return text[:500]


def _tokens_within(tokens: Sequence[str], text: str) -> int:
    """Most leading tokens whose joined strings are a prefix of ``text``."""
    k, acc = 0, ""
    for tok in tokens:
        acc += tok
        if not text.startswith(acc):
            break
        k += 1
    return k


class _NoLabelReads(Exception):
    """The server answered a ``logprob_token_ids`` request without the asked-for tokens."""


class OpenAIBackend(Backend):
    """Policy backend over HTTP. ``model=None`` uses the first model the server lists."""

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_concurrency: int = 32,
        *,
        logprobs: bool = True,
        server_extensions: bool = True,
        tokenizer: str | None = None,
    ) -> None:
        super().__init__()
        if not timeout > 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if backoff < 0:
            raise ConfigError(f"backoff must be >= 0 seconds, got {backoff}")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"base_url must look like http://host:port/v1, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._url = url
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.logprobs = logprobs
        self.server_extensions = server_extensions
        self._model = model
        self._tokenizer_name = tokenizer
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="openai-backend")
        self._closed = False
        self._label_reads: bool | None = None  # whether the server honours logprob_token_ids (None: not tried)
        self.stats.extra.update(http_requests=0.0, http_attempts=0.0, http_retries=0.0, completions_without_logprobs=0.0)

    # -- HTTP ----------------------------------------------------------------------------

    def _count(self, key: str, n: float = 1.0) -> None:
        with self._lock:
            self.stats.extra[key] = self.stats.extra.get(key, 0.0) + n

    def _url_for(self, path: str) -> str:
        """``/completions`` -> base_url + path; ``^/tokenize`` -> server root + path."""
        if path.startswith("^"):
            return f"{self._url.scheme}://{self._url.netloc}{path[1:]}"
        return self.base_url + path

    def _attempt(self, method: str, url: str, payload: Any, text_ok: bool = False) -> Any:
        """One HTTP exchange under a hard deadline. Returns parsed JSON (or, with ``text_ok``, the text
        of a body that is not JSON); raises _Retryable or ServerError."""
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        deadline = time.monotonic() + self.timeout
        headers = {"Accept": "application/json"}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        conn = conn_cls(parts.hostname, parts.port, timeout=self.timeout)
        try:
            try:
                conn.connect()
            except ssl.SSLError as e:  # a bad certificate will not get better on a resend
                raise ServerError(f"TLS handshake with {url} failed: {e}") from e
            except OSError as e:
                if isinstance(e, (TimeoutError, socket.timeout)):
                    raise _Retryable(f"connecting to {url} timed out after {self.timeout:g}s", connect_failed=True) from e
                raise _Retryable(f"could not connect to {url}: {e}", connect_failed=True) from e
            sock = conn.sock  # kept: getresponse() may drop conn.sock but reads go through it
            conn.request(method, target, body=body, headers=headers)
            sock.settimeout(max(deadline - time.monotonic(), 1e-3))
            resp = conn.getresponse()
            chunks = []
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = resp.read1(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
            data = b"".join(chunks)
        except (TimeoutError, socket.timeout) as e:
            raise _Retryable(f"no complete answer from {url} within {self.timeout:g}s") from e
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise _Retryable(f"connection to {url} failed: {type(e).__name__}: {e}") from e
        finally:
            conn.close()
        status = resp.status
        if 200 <= status < 300:
            try:
                return json.loads(data)
            except ValueError as e:
                if text_ok:
                    return data.decode(errors="replace")
                raise ServerError(f"{method} {url} answered HTTP {status} with a body that is not JSON: {data[:200]!r}") from e
        msg = _server_message(data)
        if status == 429 or status >= 500:
            try:
                retry_after = float(resp.getheader("Retry-After") or 0.0)
            except ValueError:
                retry_after = 0.0
            raise _Retryable(f"{url} answered HTTP {status}: {msg}", retry_after=retry_after)
        err_cls = ServerPromptTooLongError if status == 400 and any(h in msg.lower() for h in _TOO_LONG_HINTS) else None
        text = f"{method} {url} failed with HTTP {status} (not retried): {msg}"
        if err_cls is not None:
            raise err_cls(text)
        raise HTTPStatusError(text, status, msg)

    def _call(self, method: str, path: str, payload: Any = None, text_ok: bool = False) -> Any:
        """``_attempt`` with bounded retries and exponential backoff."""
        url = self._url_for(path)
        attempts = self.max_retries + 1
        self._count("http_requests")
        last: _Retryable | None = None
        connect_only = True
        for k in range(attempts):
            if k:
                self._count("http_retries")
                delay = min(max(self.backoff * 2 ** (k - 1), last.retry_after if last else 0.0), _MAX_RETRY_AFTER)
                log.debug("retrying %s %s in %.2fs after: %s", method, url, delay, last)
                time.sleep(delay)
            self._count("http_attempts")
            try:
                return self._attempt(method, url, payload, text_ok)
            except _Retryable as e:
                last = e
                connect_only = connect_only and e.connect_failed
        assert last is not None
        if connect_only:
            raise ServerError(f"could not connect to {url} after {attempts} attempts ({last}); is the server running?")
        raise ServerError(f"{method} {url} failed after {attempts} attempts; last error: {last}")

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """Run ``fn`` over ``items`` on the pool; results in input order, first error raised."""
        if self._closed:
            raise BackendError("OpenAIBackend is closed; build a new one")
        futures: list[Future[T]] = [self._pool.submit(fn, x) for x in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    # -- model / tokenizer ---------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model name sent to the server (asked from ``/models`` when not given)."""
        if self._model is None:
            names = [m.get("id") for m in self.served_models()]
            if not names or not names[0]:
                raise ServerError(f"{self.base_url}/models lists no models; pass model= explicitly")
            self._model = str(names[0])
        return self._model

    def served_models(self) -> list[dict[str, Any]]:
        """The server's ``/models`` entries (vLLM marks a LoRA adapter with its ``parent`` model)."""
        data = self._call("GET", "/models")
        return [m for m in data.get("data", []) if isinstance(m, dict)] if isinstance(data, dict) else []

    def use_base_model(self) -> None:
        """Send requests to the server's base model (the first listed model that is not an adapter)."""
        base = [m["id"] for m in self.served_models() if m.get("id") and not m.get("parent")]
        if not base:
            raise ServerError(f"{self.base_url}/models lists no base model")
        self._model = str(base[0])

    def load_adapter(self, name: str, path: str) -> None:
        """Have the server load the LoRA adapter at ``path`` (a path the server can read) as model
        ``name``, replacing an adapter of that name, and send requests to it from now on.

        Uses vLLM's runtime LoRA endpoint: the server must run with ``--enable-lora``,
        ``--max-lora-rank`` >= the adapter's rank and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``.
        """
        if any(m.get("id") == name for m in self.served_models()):
            self.unload_adapter(name)
        try:
            self._call("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": path}, text_ok=True)
        except HTTPStatusError as e:
            hint = ("the server has no runtime LoRA endpoint: start it with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True "
                    "and --enable-lora" if e.status in (404, 405) else
                    "is the server's --max-lora-rank at least the adapter's rank, and can it read the path?")
            raise ServerError(f"{self.base_url} did not load LoRA adapter {path!r} as {name!r}: {e.server_message}; "
                              f"{hint}") from e
        self._model = name

    def unload_adapter(self, name: str) -> None:
        """Have the server drop the LoRA adapter ``name`` (loaded by ``load_adapter``)."""
        self._call("POST", "/unload_lora_adapter", {"lora_name": name}, text_ok=True)

    def _local_tokenizer(self) -> Any:
        """An HF tokenizer from ``tokenizer=`` or a local-directory model name, else None."""
        if self._tokenizer is None:
            name = self._tokenizer_name
            if name is None and os.path.isdir(self.model):
                name = self.model
            if name is None:
                return None
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(name)
        return self._tokenizer

    def _server_tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        data = self._call("POST", "^/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": add_special_tokens})
        return [int(t) for t in data["tokens"]]

    # -- Backend API ---------------------------------------------------------------------

    def _payload(self, r: GenerationRequest) -> dict[str, Any]:
        p: dict[str, Any] = {
            "model": self.model,
            "prompt": r.prompt if isinstance(r.prompt, str) else list(r.prompt),
            "n": 1 if r.greedy else r.n,  # servers (vLLM) refuse n > 1 when greedy; copies are made after
            "max_tokens": r.max_tokens,
            "temperature": r.temperature,
            "top_p": r.top_p,
        }
        if r.stop:
            p["stop"] = list(r.stop)
        if r.seed is not None:
            p["seed"] = r.seed
        if self.logprobs:
            p["logprobs"] = 0  # the sampled token's logprob only
        if self.server_extensions:
            p["return_token_ids"] = True
        return p

    def _completion(self, choice: dict[str, Any]) -> Completion:
        reason = _FINISH.get(str(choice.get("finish_reason")))
        if reason is None:
            raise ServerError(
                f"{self.base_url}/completions ended a completion with finish_reason={choice.get('finish_reason')!r}; "
                "expected 'stop' or 'length'"
            )
        text = str(choice.get("text", ""))
        ids = [int(t) for t in choice.get("token_ids") or []]
        block = choice.get("logprobs") if isinstance(choice.get("logprobs"), dict) else {}
        lps, tokens = block.get("token_logprobs"), block.get("tokens")
        if lps and all(x is not None for x in lps):
            logprobs = [float(x) for x in lps]
        else:
            logprobs, tokens = [], None
            if self.logprobs:
                self._count("completions_without_logprobs")
                log.warning("server at %s returned a completion without logprobs; Completion.logprobs is empty", self.base_url)
        if reason is FinishReason.STOP:  # keep only the tokens of ``text``: drop EOS / the stop-bearing token
            k = _tokens_within(tokens, text) if tokens else max(len(ids), len(logprobs)) - 1
            ids, logprobs = ids[:k], logprobs[:k]
        stop = choice.get("stop_reason")
        return Completion(text=text, token_ids=ids, logprobs=logprobs, finish_reason=reason,
                          stop_reason=stop if isinstance(stop, str) else None)

    def _generate_one(self, r: GenerationRequest) -> tuple[list[Completion], int, int]:
        data = self._call("POST", "/completions", self._payload(r))
        choices = data.get("choices") if isinstance(data, dict) else None
        want = 1 if r.greedy else r.n
        if not isinstance(choices, list) or len(choices) != want:
            raise ServerError(f"{self.base_url}/completions returned {len(choices or [])} choices for n={want}")
        comps = [self._completion(c) for c in sorted(choices, key=lambda c: c.get("index", 0))]
        usage = data.get("usage") or {}
        generated = usage.get("completion_tokens")
        if generated is None:
            generated = sum(len(c.token_ids) or len(c.logprobs) for c in comps)
        comps += [dataclasses.replace(comps[0], token_ids=list(comps[0].token_ids), logprobs=list(comps[0].logprobs))
                  for _ in range(r.n - len(comps))]
        return comps, int(usage.get("prompt_tokens") or 0), int(generated)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        if not requests:
            return []
        _ = self.model  # resolve once before fanning out
        start = time.perf_counter()
        results = self._map(self._generate_one, list(requests))
        self.stats.seconds += time.perf_counter() - start
        self.stats.calls += 1
        self.stats.prompts += len(requests)
        for _, prompt_tokens, generated in results:
            self.stats.prompt_tokens += prompt_tokens
            self.stats.generated_tokens += generated
        return [comps for comps, _, _ in results]

    def _score_ids(self, pair: tuple[str, str]) -> float:
        """Exact scoring: tokenize apart on the server, echo the ids with logprobs."""
        p_ids = self._server_tokenize(pair[0], True)
        c_ids = self._server_tokenize(pair[1], False)
        if not c_ids:
            return 0.0
        if not p_ids:
            raise ConfigError("score(): empty prompt; expected at least one token to condition on")
        data = self._call("POST", "/completions", {"model": self.model, "prompt": p_ids + c_ids, "echo": True,
                                                   "max_tokens": 1, "logprobs": 0, "temperature": 0.0})
        lps = self._echo_logprobs(data)["token_logprobs"]
        return float(sum(lps[len(p_ids): len(p_ids) + len(c_ids)]))

    def _score_text(self, pair: tuple[str, str]) -> float:
        """Portable scoring: echo prompt+continuation; sum tokens overlapping the continuation."""
        prompt, cont = pair
        if not cont:
            return 0.0
        data = self._call("POST", "/completions", {"model": self.model, "prompt": prompt + cont, "echo": True,
                                                   "max_tokens": 1, "logprobs": 0, "temperature": 0.0})
        block = self._echo_logprobs(data)
        lo, hi = len(prompt), len(prompt) + len(cont)
        total = 0.0
        for off, tok, lp in zip(block["text_offset"], block["tokens"], block["token_logprobs"]):
            if off < hi and off + len(tok) > lo:
                if lp is None:
                    raise BackendError(f"{self.base_url} gave no logprob for the first continuation token; use a non-empty prompt")
                total += float(lp)
        return total

    def _echo_logprobs(self, data: Any) -> dict[str, Any]:
        choices = data.get("choices") if isinstance(data, dict) else None
        block = (choices or [{}])[0].get("logprobs")
        if not isinstance(block, dict) or not block.get("token_logprobs"):
            raise BackendError(
                f"{self.base_url}/completions returned no prompt logprobs for echo=True; "
                "score() needs a server that supports echo with logprobs (vLLM does)"
            )
        return block

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        if len(prompts) != len(continuations):
            raise ConfigError(f"score() needs one continuation per prompt, got {len(prompts)} prompts and {len(continuations)} continuations")
        if not prompts:
            return []
        _ = self.model
        fn = self._score_ids if self.server_extensions else self._score_text
        try:
            out = self._map(fn, list(zip(prompts, continuations)))
        except HTTPStatusError as e:
            raise HTTPStatusError(f"score() needs echo+logprobs on /completions: {e}", e.status, e.server_message) from e
        self.stats.score_calls += 1
        return out

    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[list[float]]:
        """Each single-token candidate's log-probability right after each prompt, from one
        ``max_tokens=1`` request per prompt with vLLM's ``logprob_token_ids`` extension: the server's
        prefix cache serves the prompt, where ``score``'s echoed prompt logprobs prefill it whole.
        Falls back to ``score`` pairs for multi-token candidates, without server extensions, or when
        the server does not honour the extension (then for the rest of this backend's life)."""
        if not prompts or not candidates or not self.server_extensions or self._label_reads is False:
            return super().next_token_logprobs(prompts, candidates)
        _ = self.model
        ids = [self._tokenize(c, False) for c in candidates]
        if any(len(i) != 1 for i in ids):
            return super().next_token_logprobs(prompts, candidates)
        wanted = [i[0] for i in ids]

        def read(prompt: str) -> list[float]:
            p_ids = self._tokenize(prompt, True)
            if not p_ids:
                raise ConfigError("next_token_logprobs(): empty prompt; expected at least one token")
            data = self._call("POST", "/completions", {
                "model": self.model, "prompt": p_ids, "max_tokens": 1, "temperature": 0.0, "logprobs": 1,
                "logprob_token_ids": sorted(set(wanted)), "return_tokens_as_token_ids": True})
            block = ((data.get("choices") or [{}])[0].get("logprobs") or {}) if isinstance(data, dict) else {}
            top = (block.get("top_logprobs") or [None])[0]
            got = {str(k).removeprefix("token_id:"): v for k, v in top.items()} if isinstance(top, dict) else {}
            if not all(str(t) in got for t in wanted):
                raise _NoLabelReads
            return [float(got[str(t)]) for t in wanted]

        try:
            rows = self._map(read, list(prompts))
        except (HTTPStatusError, _NoLabelReads):
            self._label_reads = False
            log.warning("%s does not return logprob_token_ids reads; scoring candidates with echo instead", self.base_url)
            return super().next_token_logprobs(prompts, candidates)
        self._label_reads = True
        self.stats.score_calls += 1
        return rows

    def _tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        tok = self._local_tokenizer()
        if tok is not None:
            return list(tok.encode(text, add_special_tokens=add_special_tokens))
        return self._server_tokenize(text, add_special_tokens)

    def format_chat(self, messages: Sequence[dict[str, str]], tools: Sequence[dict[str, Any]] | None = None) -> str:
        """The model's chat template when a tokenizer is known (``tokenizer=`` or a local model dir)."""
        tok = self._local_tokenizer()
        if tok is None:
            return super().format_chat(messages, tools)
        return render_chat(tok, messages, tools)

    def count_tokens(self, text: str) -> int:
        if self.server_extensions or self._local_tokenizer() is not None:
            return len(self._tokenize(text, False))
        return super().count_tokens(text)

    def close(self) -> None:
        """Stop the request threads (idempotent); requests in flight finish in the background."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
