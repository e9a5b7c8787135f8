"""A scripted OpenAI-compatible chat server for tests (loopback only, bounded, stops with the test).

It answers each request from the JSON schema it was asked to follow (so every Lewin artifact gets
a well-formed reply) unless the prompt carries a fault marker:

  FAIL_JSON     -> a reply that is not JSON
  FAIL_SCHEMA   -> JSON that breaks the schema
  FAIL_500      -> HTTP 500 (the client retries, then gives up)
  FAIL_HTTP_<n> -> HTTP <n> (e.g. FAIL_HTTP_503, FAIL_HTTP_404)
  FAIL_SLOW     -> answers after the client's timeout
  FAIL_EMPTY    -> HTTP 200 with an empty body
  FAIL_MALFORMED -> HTTP 200 with a body that is not JSON (a completion cut short)
  FAIL_NOCHOICES -> HTTP 200 with a JSON object that has no ``choices``
  FAIL_NOCONTENT -> a well-formed completion whose message is empty
  HARMFUL       -> a quality label of harm "violence" (the record must not reach any table past the gate)
  LOW_QUALITY   -> a quality label "low"
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROFILE = " ".join(["She writes about her family and her work with care and some humour."] * 12)


def reply_for(schema: dict, text: str = "") -> dict:
    props = set((schema or {}).get("properties", {}))
    if "quality" in props:
        harm = "violence" if "HARMFUL" in text else "none"
        return {"quality": "low" if "LOW_QUALITY" in text else "high", "harm": harm, "reason": "personal and detailed"}
    if "notes" in props:
        return {"notes": "Notes: she writes about her family and her work."}
    if props == {"text"}:  # the cleaning rewrite: the post as it is
        post = text.rsplit("):\n", 1)[-1]
        return {"text": post}
    if "persona" in props:
        return {"persona": "A thoughtful writer who cares about her family."}
    if "profile" in props:
        return {"profile": PROFILE}
    if "stories" in props:
        return {"stories": [{"summary": "She moved house.", "narrative": "She moved to a new flat and felt at home."}]}
    if "style" in props:
        return {"style": "Warm, plain sentences, few exclamation marks."}
    if "background" in props:
        return {"background": "A Sunday at home.", "characters": ["the writer", "her brother"], "plots": "They talk."}
    if "items" in props:
        return {"items": [{"type": "inner_state", "scenario": "Her brother calls late at night.",
                           "question": "How does she feel?", "answer": "Worried, then relieved."}]}
    if "overall" in props:
        return {**{m: 9 for m in props if m != "reasons"}, "reasons": "faithful and clear"}
    return {}


class _Handler(BaseHTTPRequestHandler):
    server: "FakeOpenAI"  # type: ignore[assignment]

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = "\n".join(m["content"] for m in body["messages"])
        key = hashlib.sha256(text.encode()).hexdigest()[:16]
        srv = self.server
        with srv.lock:
            srv.calls[key] += 1
            srv.total += 1
            srv.texts.append(text)
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
        status = re.search(r"FAIL_HTTP_(\d{3})", text)
        if "FAIL_500" in text or status:
            self.send_response(int(status.group(1)) if status else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if "FAIL_SLOW" in text:
            time.sleep(srv.slow_s)
        bad = {"FAIL_EMPTY": b"", "FAIL_MALFORMED": b'{"choices": [{"message": {"role": "assistant", "cont',
               "FAIL_NOCHOICES": json.dumps({"object": "error", "message": "model is overloaded"}).encode()}
        for marker, data in bad.items():
            if marker in text:
                self._send(data)
                return
        if "FAIL_NOCONTENT" in text:
            content = ""
        elif "FAIL_JSON" in text:
            content = "I think this person is nice {not json"
        elif "FAIL_SCHEMA" in text and "quality" in (schema or {}).get("properties", {}):
            content = json.dumps({"harm": "maybe", "quality": "great", "reason": "?"})
        else:
            content = json.dumps(reply_for(schema, text))
        payload = {"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": len(text) // 4, "completion_tokens": len(content) // 4}}
        self._send(json.dumps(payload).encode())

    def _send(self, data: bytes) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass


class FakeOpenAI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, slow_s: float = 3.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.calls: Counter = Counter()
        self.total = 0
        self.texts: list[str] = []  # every request's prompt text, in arrival order
        self.slow_s = slow_s
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def requests_with(self, marker: str) -> int:
        """How many requests carried ``marker`` in their prompt."""
        with self.lock:
            return sum(marker in t for t in self.texts)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
