"""A scripted OpenAI-compatible chat server for tests (loopback only, bounded, stops with the test).

It answers each request from the JSON schema it was asked to follow (so every Lewin artifact gets
a well-formed reply) unless the prompt carries a fault marker:

  FAIL_JSON     -> a reply that is not JSON
  FAIL_SCHEMA   -> JSON that breaks the schema
  FAIL_500      -> HTTP 500 (the client retries, then gives up)
  FAIL_SLOW     -> answers after the client's timeout
  HARMFUL       -> a quality label of harm "violence" (the record must not reach any table past the gate)
  LOW_QUALITY   -> a quality label "low"
"""

from __future__ import annotations

import hashlib
import json
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
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
        if "FAIL_500" in text:
            self.send_response(500)
            self.end_headers()
            return
        if "FAIL_SLOW" in text:
            time.sleep(srv.slow_s)
        if "FAIL_JSON" in text:
            content = "I think this person is nice {not json"
        elif "FAIL_SCHEMA" in text and "quality" in (schema or {}).get("properties", {}):
            content = json.dumps({"harm": "maybe", "quality": "great", "reason": "?"})
        else:
            content = json.dumps(reply_for(schema, text))
        payload = {"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": len(text) // 4, "completion_tokens": len(content) // 4}}
        data = json.dumps(payload).encode()
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
        self.slow_s = slow_s
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
