"""An OpenAI-compatible server's bad reply fails only its own request, with a stable reason code.

In a concurrent batch where one request gets an empty body, a body that is not JSON, a reply
without ``choices``, an HTTP error or no reply in time, the other replies are kept and were
requested exactly once; the bad request is retried, then (through the ledger's attempts) dead
with its code (``empty_reply``, ``malformed_reply``, ``missing_choices``, ``http_<n>``,
``timeout``). No Spark: the engine and the stage's Python half (``run_batch``) against the
scripted server.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from lewin.jobs.llm import prompt_options
from lewin.schemas.config import LewinConfig
from lewin.schemas.llm import output_schema, validate_output
from lewin.udfs import llm_prompts
from lewin.udfs.llm_backends import BackendSpec, OpenAIBackend, Request, Sampling, reason_code

from .fake_openai import FakeOpenAI

# marker in the prompt -> (the code its request must fail with, requests per engine call with max_retries=1)
BAD = {
    "FAIL_EMPTY": ("empty_reply", 2),
    "FAIL_MALFORMED": ("malformed_reply", 2),
    "FAIL_NOCHOICES": ("missing_choices", 2),
    "FAIL_NOCONTENT": ("empty_reply", 1),  # the model's own empty answer: the ledger's next attempt retries it
    "FAIL_HTTP_503": ("http_503", 2),
    "FAIL_HTTP_404": ("http_404", 1),  # the request itself is wrong: not retried within the call
    "FAIL_SLOW": ("timeout", 2),
}
SLOW_S, TIMEOUT_S = 2.0, 1.0  # only the FAIL_SLOW request waits for the client's timeout


def _messages(text: str) -> tuple:
    return ({"role": "system", "content": "You label posts. Reply with JSON only."},
            {"role": "user", "content": f"Post: {text}\nLabel it."})


@pytest.mark.parametrize("marker", list(BAD))
def test_one_bad_reply_fails_only_its_request(marker):
    code, tries = BAD[marker]
    with FakeOpenAI(slow_s=SLOW_S) as srv:
        eng = OpenAIBackend(BackendSpec(kind="openai", model="scripted", base_url=srv.url, max_concurrency=8,
                                        timeout_s=TIMEOUT_S, max_retries=1))
        texts = [f"VALID_{i} I baked bread with my grandmother." for i in range(5)]
        texts.insert(2, f"{marker} I moved into a new flat.")
        reqs = [Request(f"k{i}", _messages(t), output_schema("quality")) for i, t in enumerate(texts)]
        out = eng.generate(reqs, Sampling(max_tokens=64))
        assert [o.key for o in out] == [r.key for r in reqs]
        bad = out[2]
        assert bad.text is None and reason_code(bad.error) == code and bad.error.startswith(f"{code}: "), bad.error
        assert len(bad.error) <= 300 and "\n" not in bad.error
        assert srv.requests_with(marker) == tries
        for i, o in enumerate(out):
            if i == 2:
                continue
            assert o.error is None and validate_output("quality", o.text, {})[0] is not None, o.error
        assert all(srv.requests_with(f"VALID_{i}") == 1 for i in range(5)), "a valid reply is never requested again"


def test_dead_letters_carry_the_code_and_valid_rows_are_sent_once():
    """Through the stage's Python half: attempt 1 fails the bad rows (valid rows ok), attempt 2
    (the stage's retry of failed rows) leaves them dead with their code; valid rows sent once."""
    with FakeOpenAI(slow_s=SLOW_S) as srv:
        cfg = LewinConfig()
        e = cfg.llm.engine
        e.kind, e.model, e.base_url, e.timeout_s, e.max_retries, e.max_concurrency = \
            "openai", "scripted-ledger", srv.url, TIMEOUT_S, 1, 8
        cfg.llm.max_attempts = 2
        opts = prompt_options(cfg, "quality")
        texts = {f"ok{i}": f"VALID_{i} I spent the weekend helping my brother move." for i in range(4)}
        texts.update({m.lower(): f"{m} I adopted a shy old dog." for m in BAD})

        def row(key: str, prev: int) -> dict:
            return {"ledger_key": key, "artifact": "quality", "input_id": key, "input_hash": "h", "user_id": "u",
                    "source": "blogger", "prompt_version": "v", "model": e.model, "params_hash": "p",
                    "prev_attempts": prev, "context": json.dumps({"text": texts[key], "date": "2021-01-01"})}

        def attempt(keys: list[str], prev: int) -> dict:
            batch = pa.RecordBatch.from_pylist([row(k, prev) for k in keys])
            return {r["ledger_key"]: r for b in llm_prompts.run_batch(batch, opts) for r in b.to_pylist()}

        first = attempt(list(texts), 0)
        assert all(first[k]["status"] == "ok" for k in texts if k.startswith("ok"))
        assert {k: first[k]["status"] for k in texts if not k.startswith("ok")} == {m.lower(): "failed" for m in BAD}
        second = attempt([k for k, r in first.items() if r["status"] == "failed"], 1)
        for marker, (code, tries) in BAD.items():
            r = second[marker.lower()]
            assert r["status"] == "dead" and r["attempts"] == 2, r
            assert reason_code(r["error"]) == code and r["error"].startswith(f"{code}: "), r["error"]
            assert srv.requests_with(marker) == 2 * tries, marker
        assert all(srv.requests_with(f"VALID_{i}") == 1 for i in range(4)), "valid rows are sent exactly once"
