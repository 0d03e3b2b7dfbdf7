"""OpenAIBackend against a scripted local HTTP server (faults) and a real ``vllm serve``.

All traffic goes to 127.0.0.1. Every wait is bounded.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from mcts_agent.errors import BackendError, PromptTooLongError, ServerError
from mcts_agent.llm.openai_backend import OpenAIBackend
from mcts_agent.llm.types import FinishReason, GenerationRequest
from tests.conftest import serve_embedded

# --------------------------------------------------------------------------------------
# A scripted server: each test sets ``handler`` to decide the reply to every request.
# --------------------------------------------------------------------------------------

Reply = tuple[int, dict[str, Any] | None]  # (status, JSON body); None body = hang


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # set at teardown so hanging handlers return
        self.handler: Callable[[str, str, dict[str, Any] | None, int], Reply] = lambda m, p, b, i: (500, None)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                with fake.lock:
                    fake.requests.append((method, self.path, body))
                    index = len(fake.requests) - 1
                status, reply = fake.handler(method, self.path, body, index)
                if reply is None:  # hang: hold the connection until teardown (bounded)
                    fake.release.wait(30)
                    return
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def count(self, path: str = "/v1/completions") -> int:
        with self.lock:
            return sum(1 for _, p, _ in self.requests if p == path)

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def _choice(text: str, index: int = 0, logprobs: bool = True, finish: str = "length") -> dict[str, Any]:
    c: dict[str, Any] = {"index": index, "text": text, "finish_reason": finish}
    if logprobs:
        c["logprobs"] = {"tokens": list(text), "token_logprobs": [-0.5] * len(text),
                         "text_offset": list(range(len(text))), "top_logprobs": None}
    return c


def _ok(choices: list[dict[str, Any]]) -> Reply:
    return 200, {"id": "cmpl-1", "object": "text_completion", "model": "m", "choices": choices,
                 "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def _backend(url: str, **kw: Any) -> OpenAIBackend:
    kw.setdefault("model", "m")
    kw.setdefault("backoff", 0.01)
    return OpenAIBackend(base_url=url, **kw)


REQ = GenerationRequest("hello", max_tokens=4)


def test_hanging_server_times_out_each_attempt(fake: FakeServer) -> None:
    fake.handler = lambda m, p, b, i: (200, None)
    timeout, retries, backoff = 0.5, 2, 0.05
    backend = _backend(fake.url, timeout=timeout, max_retries=retries, backoff=backoff)
    start = time.monotonic()
    with pytest.raises(ServerError, match=r"within 0\.5s") as info:
        backend.generate([REQ])
    elapsed = time.monotonic() - start
    backoffs = sum(backoff * 2**k for k in range(retries))
    assert elapsed <= timeout * (retries + 1) + backoffs + 2.0, elapsed
    assert elapsed >= timeout * (retries + 1)
    assert fake.count() == retries + 1
    assert backend.stats.extra["http_attempts"] == retries + 1
    assert fake.url in str(info.value)
    backend.close()


def test_500_is_retried_max_retries_times(fake: FakeServer) -> None:
    fake.handler = lambda m, p, b, i: (500, {"error": {"message": "engine exploded"}})
    backend = _backend(fake.url, max_retries=3)
    with pytest.raises(ServerError, match="after 4 attempts.*HTTP 500: engine exploded"):
        backend.generate([REQ])
    assert fake.count() == 4
    assert backend.stats.extra["http_retries"] == 3


def test_400_is_not_retried(fake: FakeServer) -> None:
    fake.handler = lambda m, p, b, i: (400, {"error": {"message": "top_p must be in (0, 1]"}})
    backend = _backend(fake.url, max_retries=3)
    with pytest.raises(ServerError) as info:
        backend.generate([REQ])
    msg = str(info.value)
    assert f"{fake.url}/completions" in msg and "HTTP 400" in msg and "top_p must be in (0, 1]" in msg
    assert fake.count() == 1


def test_context_overflow_is_prompt_too_long(fake: FakeServer) -> None:
    fake.handler = lambda m, p, b, i: (400, {"error": {"message": "This model's maximum context length is 8 tokens."}})
    with pytest.raises(PromptTooLongError, match="maximum context length"):
        _backend(fake.url).generate([REQ])
    assert fake.count() == 1


def test_closed_port_gives_clear_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    backend = _backend(url, max_retries=2, timeout=2.0)
    start = time.monotonic()
    with pytest.raises(ServerError, match=rf"could not connect to {url}/completions after 3 attempts.*is the server running"):
        backend.generate([REQ])
    assert time.monotonic() - start < 10


def test_429_then_success(fake: FakeServer) -> None:
    fake.handler = lambda m, p, b, i: (429, {"error": {"message": "slow down"}}) if i < 2 else _ok([_choice("ab")])
    backend = _backend(fake.url, max_retries=3)
    [[c]] = backend.generate([REQ])
    assert c.text == "ab" and fake.count() == 3 and backend.stats.extra["http_retries"] == 2


def test_batch_order_n_and_payload(fake: FakeServer) -> None:
    def reply(m: str, p: str, body: dict[str, Any] | None, i: int) -> Reply:
        assert body is not None
        time.sleep(0.2 if body["prompt"] == "p0" else 0.0)  # the first request answers last
        return _ok([_choice(f"{body['prompt']}-{k}", index=k, finish="stop") for k in reversed(range(body["n"]))])

    fake.handler = reply
    reqs = [GenerationRequest(f"p{i}", n=i + 1, max_tokens=5, temperature=0.7, top_p=0.9, stop=("\n",), seed=i)
            for i in range(4)]
    out = _backend(fake.url).generate(reqs)
    assert [[c.text for c in cs] for cs in out] == [[f"p{i}-{k}" for k in range(i + 1)] for i in range(4)]
    assert all(c.finish_reason is FinishReason.STOP and c.logprobs for cs in out for c in cs)
    sent = {b["prompt"]: b for _, _, b in fake.requests if b}
    assert sent["p2"] == {"model": "m", "prompt": "p2", "n": 3, "max_tokens": 5, "temperature": 0.7, "top_p": 0.9,
                          "stop": ["\n"], "seed": 2, "logprobs": 0, "return_token_ids": True}


def test_greedy_n_sends_one_sample_and_copies(fake: FakeServer) -> None:
    fake.handler = lambda m, p, b, i: _ok([_choice("same")])
    [[a, b, c]] = _backend(fake.url).generate([GenerationRequest("x", n=3, max_tokens=4, temperature=0.0)])
    assert [a.text, b.text, c.text] == ["same"] * 3 and a.logprobs is not b.logprobs
    assert fake.requests[0][2]["n"] == 1


def test_closed_backend_refuses_work(fake: FakeServer) -> None:
    backend = _backend(fake.url)
    backend.close()
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.generate([REQ])
    assert fake.count() == 0


def test_stop_drops_eos_and_stop_bearing_tokens(fake: FakeServer) -> None:
    def choice(text: str, toks: list[str], index: int) -> dict[str, Any]:
        return {"index": index, "text": text, "finish_reason": "stop", "token_ids": list(range(len(toks))),
                "logprobs": {"tokens": toks, "token_logprobs": [-1.0] * len(toks), "text_offset": [], "top_logprobs": None}}

    fake.handler = lambda m, p, b, i: _ok([choice("ab", ["a", "b", "<|im_end|>"], 0), choice("x y", ["x", " y", ".\n"], 1)])
    [[eos, stop]] = _backend(fake.url).generate([GenerationRequest("q", n=2, max_tokens=9, stop=("\n",))])
    assert (eos.token_ids, eos.logprobs) == ([0, 1], [-1.0, -1.0])
    assert (stop.token_ids, stop.logprobs) == ([0, 1], [-1.0, -1.0])


def test_missing_logprobs_still_completes(fake: FakeServer) -> None:
    fake.handler = lambda m, p, b, i: _ok([_choice("xyz", logprobs=False)])
    backend = _backend(fake.url, server_extensions=False)
    [[c]] = backend.generate([REQ])
    assert c.text == "xyz" and c.logprobs == [] and c.finish_reason is FinishReason.LENGTH
    assert backend.stats.extra["completions_without_logprobs"] == 1
    assert "return_token_ids" not in fake.requests[0][2]


def test_model_is_asked_from_server(fake: FakeServer) -> None:
    fake.handler = lambda m, p, b, i: (200, {"data": [{"id": "served-model"}]}) if p == "/v1/models" else _ok([_choice("a")])
    backend = OpenAIBackend(model=None, base_url=fake.url)
    backend.generate([REQ, REQ])
    assert backend.model == "served-model" and fake.count("/v1/models") == 1
    assert all(b["model"] == "served-model" for _, p, b in fake.requests if p == "/v1/completions")


def test_text_score_sums_continuation_tokens(fake: FakeServer) -> None:
    # tokens "ab|c|de|f" of "abcdef"; prompt "abc" -> continuation "def" covers "de" and "f"
    def reply(m: str, p: str, body: dict[str, Any] | None, i: int) -> Reply:
        assert body is not None and body["echo"] is True and body["prompt"] == "abcdef"
        lp = {"tokens": ["ab", "c", "de", "f", "!"], "token_logprobs": [None, -1.0, -2.0, -3.0, -9.0],
              "text_offset": [0, 2, 3, 5, 6], "top_logprobs": None}
        return _ok([{"index": 0, "text": "abcdef!", "finish_reason": "length", "logprobs": lp}])

    fake.handler = reply
    assert _backend(fake.url, server_extensions=False).score(["abc"], ["def"]) == [-5.0]


def test_score_without_echo_support_is_clear(fake: FakeServer) -> None:
    fake.handler = lambda m, p, b, i: _ok([_choice("abcdef", logprobs=False)])
    with pytest.raises(BackendError, match="echo"):
        _backend(fake.url, server_extensions=False).score(["abc"], ["def"])


# --------------------------------------------------------------------------------------
# A real OpenAI-compatible server: ``vllm serve`` on the embedded model.
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve_embedded(tmp_path_factory, "vllm_serve", ("--max-model-len", "1024"))


@pytest.fixture
def served(vllm_server: str) -> Iterator[OpenAIBackend]:
    backend = OpenAIBackend(model=None, base_url=vllm_server, timeout=120, max_retries=1)
    yield backend
    backend.close()


@pytest.mark.vllm
@pytest.mark.model
def test_serve_generate_n_stop_logprobs(served: OpenAIBackend) -> None:
    prompt = served.format_chat([{"role": "user", "content": "Name three colors."}])
    assert prompt.rstrip().endswith("assistant")
    reqs = [GenerationRequest(prompt, n=3, max_tokens=24, temperature=0.9, seed=7, stop=("\n",)),
            GenerationRequest("Once upon a time", max_tokens=6, temperature=0.0)]
    out = served.generate(reqs)
    assert [len(cs) for cs in out] == [3, 1]
    for c in out[0]:
        assert "\n" not in c.text
        assert c.finish_reason in (FinishReason.STOP, FinishReason.LENGTH)
        assert c.token_ids and len(c.logprobs) == len(c.token_ids)
        assert all(lp <= 0.0 and math.isfinite(lp) for lp in c.logprobs)
    assert len({c.text for c in out[0]}) > 1  # n samples differ
    [greedy] = out[1]
    assert greedy.finish_reason is FinishReason.LENGTH and len(greedy.token_ids) == 6
    # same seed, same samples
    again = served.generate(reqs[:1])
    assert [c.text for c in again[0]] == [c.text for c in out[0]]
    assert served.stats.generated_tokens > 0 and served.stats.prompt_tokens > 0


@pytest.mark.vllm
@pytest.mark.model
def test_serve_score_matches_generate(served: OpenAIBackend) -> None:
    prompt = "The capital of France is"
    [[c]] = served.generate([GenerationRequest(prompt, max_tokens=8, temperature=0.0)])
    assert c.finish_reason is FinishReason.LENGTH
    [s, s_bad] = served.score([prompt, prompt], [c.text, " a purple elephant banana"])
    assert s < 0 and s_bad < s
    assert abs(s - c.cumulative_logprob) <= 0.05 + 0.01 * abs(s), (s, c.cumulative_logprob)


@pytest.mark.vllm
@pytest.mark.model
def test_serve_next_token_reads_match_echo_scores(served: OpenAIBackend) -> None:
    """Critic reads (vLLM's logprob_token_ids on a one-token completion) equal echo scoring."""
    from mcts_agent.llm.types import Backend

    prompts = ["Is the sky blue? Answer:", "Is 2 + 2 = 5? Answer:"]
    rows = served.next_token_logprobs(prompts, [" Yes", " No"])
    assert served._label_reads is True  # the extension was used, not the fallback
    echo = Backend.next_token_logprobs(served, prompts, [" Yes", " No"])
    for got, want in zip(rows, echo):
        assert got == pytest.approx(want, abs=2e-3)


@pytest.mark.vllm
@pytest.mark.model
def test_serve_errors(served: OpenAIBackend, vllm_server: str) -> None:
    with pytest.raises(PromptTooLongError):
        served.generate([GenerationRequest("word " * 1500, max_tokens=8)])
    wrong = OpenAIBackend(model="no-such-model", base_url=vllm_server, max_retries=3)
    with pytest.raises(ServerError, match="HTTP 404.*no-such-model"):
        wrong.generate([GenerationRequest("hi", max_tokens=2)])
    assert wrong.stats.extra["http_attempts"] == 1


def test_lora_adapter_hand_off(fake: FakeServer) -> None:
    """The base model is the listed model without a parent; an adapter already loaded under the
    same name (a run killed mid-phase) is replaced; a server without the endpoint is explained."""
    listed = [{"id": "run-iter1", "parent": "/models/base"}, {"id": "/models/base", "parent": None}]

    def handler(method: str, path: str, body: Any, i: int) -> Reply:
        if path == "/v1/models":
            return 200, {"data": listed}
        if path == "/v1/load_lora_adapter" and body["lora_path"] == "/nowhere":
            return 404, {"detail": "Not Found"}
        return 200, {"ok": True}

    fake.handler = handler
    b = OpenAIBackend(base_url=fake.url, max_retries=0)
    b.use_base_model()
    assert b.model == "/models/base"
    b.load_adapter("run-iter1", "/runs/iter_1/train/served_adapter")
    posts = [(p, body) for m, p, body in fake.requests if m == "POST"]
    assert posts == [("/v1/unload_lora_adapter", {"lora_name": "run-iter1"}),
                     ("/v1/load_lora_adapter", {"lora_name": "run-iter1", "lora_path": "/runs/iter_1/train/served_adapter"})]
    assert b.model == "run-iter1"
    with pytest.raises(ServerError, match="did not load LoRA adapter '/nowhere' as 'x'.*VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
        b.load_adapter("x", "/nowhere")
