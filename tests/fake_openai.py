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

The second recipe's artifacts (``lewin patterns``) get replies that pass its validators, built from
the request's schema (names, speakers, items) and prompt, with scripted faults: a bundle with the
framework marked "INCOHERENT" is judged incoherent; a scene's first reply names a character outside the
candidates and a free-order conversation's first reply is opened by the protagonist (both fail the
validators, so the ledger retries them); checklist items on "X" are answered yes, the others no
when the scene's relation is "conflict".
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


def _names(text: str) -> list[str]:
    m = re.search(r"Candidate Names: ([^\n]*?) \(5 Males", text)
    return [n.strip() for n in m.group(1).split(",")] if m else ["Anna", "Ben"]


def _character(name: str, other: str) -> dict:
    return {"name": name, "about_self": {"descriptors": ["careful", "proud", "quick", "warm"],
                                          "background": f"{name} has worked here for years.",
                                          "motivation": "to keep the project alive"},
            "about_others": [{"name": other, "relation": f"{other} is a colleague of long standing."}]}


_LINES = ["I have to keep this calm.", "Why is this on me again?", "They will blame the timeline.",
          "Maybe I was wrong about this.", "Stay steady.", "Say it plainly."]


def pattern_reply_for(schema: dict, text: str, nth: int) -> dict | None:
    """The second recipe's replies (``nth``: how often this exact prompt was asked before, so a
    scripted fault happens on the first attempt only)."""
    props = (schema or {}).get("properties", {})
    if "coherent" in props:
        return {"coherent": "INCOHERENT" not in text, "reason": "the patterns can meet in one meeting"}
    if "rationale" in props:
        names = _names(text)
        return {"rationale": "The deadline puts pressure on both. Each pattern shows in how they explain it.",
                "catalysts": ["a missed deadline", "a manager's email"],
                "tendencies": f"@ [{names[0]}]: 1. blames the schedule; 2. defends the design; 3. seeks approval\n"
                              f"@ [{names[5]}]: 1. asks for facts; 2. presses for a date; 3. keeps notes"}
    if "protagonist" in props and "scenario" in props:
        names = props["protagonist"]["properties"]["name"]["enum"]
        hero, other = names[0], names[5]
        if nth == 0:  # a first reply with a name outside the candidates: the validator refuses it
            hero = "Zorblax"
        return {"scenario": "A review meeting after the launch slipped by two weeks. Both must explain it.",
                "protagonist": _character(hero, other), "supporting": [_character(other, hero)]}
    if "turns" in props:
        turns_schema = props["turns"]
        planned = "items" not in turns_schema
        if planned:
            speakers = [t["properties"]["speaker"].get("const") or t["properties"]["speaker"]["enum"][0]
                        for t in turns_schema["prefixItems"]]
        else:
            names = turns_schema["items"]["properties"]["speaker"]["enum"]
            n = turns_schema["minItems"] + (turns_schema["minItems"] % 2)
            speakers = [names[1] if i % 2 == 0 else names[0] for i in range(n)]
            if nth == 0:  # opened by the protagonist: fails the opener rule
                speakers = speakers[1:] + [names[0]]
        return {"turns": [{"speaker": s, "thought": _LINES[i % len(_LINES)], "action": "looks at the notes",
                           "speech": f"We need to talk about point {i + 1}."} for i, s in enumerate(speakers)]}
    if "questions" in props:
        n = props["questions"]["minItems"]
        if "called X" in text:
            return {"questions": [f"Does X explain the delay by circumstances, point {i + 1}?" for i in range(n)]}
        rel = re.search(r"Patterns in this scene \((\w+) each other\)", text)
        rel = rel.group(1) if rel else "modulate"
        return {"questions": [f"Does one character's view {rel} the other's, point {i + 1}?" for i in range(n)]}
    if "answers" in props:
        items = props["answers"]["prefixItems"]
        lines = re.findall(r"^(\d+)\. (.*)$", text.split("Checklist:")[-1], flags=re.M)
        return {"answers": [{"item": i + 1, "answer": "no" if "view conflict" in q else "yes",
                             "evidence_turns": [1]} for i, (_, q) in zip(range(len(items)), lines)]}
    if "anthropomorphism" in props:
        return {"anthropomorphism": 7, "reasons": "plausible people"}
    if "markdown" in props:
        return {"markdown": "## Definition\nA tendency studied in the corpus. It is described there at length.\n"
                            "## Core Mechanisms\n- a driver named in the corpus\n"
                            "## Real-World Manifestations\n- a behaviour named in the corpus"}
    return None


def reply_for(schema: dict, text: str = "", nth: int = 0, seed: int = 0) -> dict:
    pattern = pattern_reply_for(schema, text, nth)
    if pattern is not None:
        return pattern
    props = set((schema or {}).get("properties", {}))
    if "quality" in props:
        harm = "violence" if "HARMFUL" in text else "none"
        return {"quality": "low" if "LOW_QUALITY" in text else "high", "harm": harm, "reason": "personal and detailed"}
    if "notes" in props:
        return {"notes": "Notes: she writes about her family and her work."}
    length = re.search(r"Reply in (?:at most (\d+)|(\d+)-(\d+)) words as JSON", text)
    if props == {"text"} and length:  # an MCQ distractor: in the asked length, one per sampling seed
        hi = int(length.group(1) or length.group(3))
        lo = int(length.group(2) or 1)
        n = lo if lo > 1 else min(hi, 8)  # the shortest in budget: the trainer's CPU proof reads every option
        words = [f"w{seed}x{i % 17}" for i in range(n)]
        return {"text": " ".join(words)}
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
            nth = srv.calls[key]
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
            content = json.dumps(reply_for(schema, text, nth, body.get("seed") or 0))
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
