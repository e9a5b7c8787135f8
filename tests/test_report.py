"""``lewin report``: one self-contained HTML file over the current tables.

(a) a table set without LLM outputs (a tiny ingest + curate): the report renders, and every
    section whose tables are absent says which table is missing and which command makes it;
(b) the bundled sample's run (``sample_run``): the report opened in headless Chromium with no
    console error, no network request, and data in every chart;
(c) the browser check itself goes red on a chart without data and on a script error.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: requests
on the browser's fd 3, replies and events on its fd 4, each a JSON message ended by a NUL byte),
with the standard library only. That sees what a console log scraped from stderr would miss or
garble: uncaught exceptions (``Runtime.exceptionThrown``), ``console.error`` calls, the browser's
own errors (``Log.entryAdded``: a blocked resource, a Content-Security-Policy violation) and every
request the page makes (``Network.requestWillBeSent``), and it reads the charts' ``data-points``
from the live DOM. Without ``/usr/bin/chromium`` (Debian's ``chromium`` package) (b) and (c) skip.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from lewin.jobs.curate import curate
from lewin.jobs.ingest import ingest
from lewin.jobs.report import write_report
from lewin.jobs.tables import TableStore
from lewin.schemas.config import LewinConfig, StorageConfig
from lewin.udfs import report_html

from .conftest import FIXTURES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
FIGURES_JS = """JSON.stringify([...document.querySelectorAll('figure.chart')].map(f => ({
    id: f.id, points: Number(f.dataset.points), svg: !!f.querySelector('svg'),
    width: f.getBoundingClientRect().width, height: f.getBoundingClientRect().height})))"""


# --- the browser -------------------------------------------------------------------------------------------
class _Cdp:
    """A headless Chromium on the DevTools protocol over a pipe (stdlib only)."""

    def __init__(self, timeout: float = 30.0):
        self.profile = tempfile.mkdtemp(prefix="lewin-chromium-")
        self.stderr = open(os.path.join(self.profile, "stderr.log"), "wb")
        args = ["--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--no-default-browser-check", "--mute-audio", f"--user-data-dir={self.profile}", "about:blank"]
        # the pipe is the browser's fd 3 (it reads) and fd 4 (it writes): our stdin and stdout pipes, moved there
        self.proc = subprocess.Popen(["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null', CHROMIUM, *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        self.deadline = time.monotonic() + timeout
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read(self) -> dict:
        while b"\0" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe: " + self._stderr_tail())
                self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)

    def _stderr_tail(self) -> str:
        self.stderr.flush()
        return Path(self.stderr.name).read_text(errors="replace")[-2000:]

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.proc.stdin.write(json.dumps(msg).encode() + b"\0")
        self.proc.stdin.flush()
        while True:
            m = self._read()
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_for(self, method: str) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            m = self._read()
            if m.get("method") == method:
                return m
            self.events.append(m)

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                break
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            self.buf += chunk
            while b"\0" in self.buf:
                msg, _, self.buf = self.buf.partition(b"\0")
                self.events.append(json.loads(msg))

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            self.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)


def browse(path: Path) -> dict:
    """Open ``path`` in headless Chromium; return the page's errors (uncaught exceptions, console
    errors, browser log errors), every request that is not the file itself or a data: URL, and the
    charts as the DOM holds them."""
    cdp = _Cdp()
    try:
        target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            cdp.send(f"{domain}.enable", session=session)
        url = path.resolve().as_uri()
        cdp.send("Page.navigate", {"url": url}, session=session)
        cdp.wait_for("Page.loadEventFired")
        charts = json.loads(cdp.send("Runtime.evaluate", {"expression": FIGURES_JS, "returnByValue": True},
                                     session=session)["result"]["value"])
        cdp.drain(0.3)  # messages logged right after the load event
        errors, requests = [], []
        for e in cdp.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                errors.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", "")))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                errors.append(f"log ({p['entry'].get('source')}): {p['entry']['text']}")
            elif m == "Network.requestWillBeSent":
                u = p["request"]["url"]
                if u != url and not u.startswith("data:"):
                    requests.append(u)
            elif m == "Inspector.targetCrashed":
                errors.append("the page crashed")
        return {"errors": errors, "requests": requests, "charts": charts}
    finally:
        cdp.close()


def _section_html(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}".*?</section>', page, re.S)
    assert m, f"section {sid} not in the page"
    return m.group(0)


def _assert_self_contained(page: str) -> None:
    assert "<script" not in page and "<link" not in page and "<iframe" not in page
    assert not re.search(r'(src|href)="(?!#|data:)', page), "the page references something outside itself"
    assert not re.search(r"url\((?!#|data:)", page)
    assert "default-src 'none'" in page  # the browser itself refuses any load


# --- (a) no LLM outputs ---------------------------------------------------------------------------------------
def test_report_without_llm_outputs_names_what_is_missing(store, cfg):
    for s in ("reddit", "twitter", "blogger"):
        ingest(store, cfg, s, [str(FIXTURES / "curate" / s)])
        curate(store, cfg, s)
    res = write_report(store, cfg)  # the default place: <storage.root>/report.html
    assert res.path == str(Path(cfg.storage.root_location) / "report.html")
    page = Path(res.path).read_text(encoding="utf-8")
    assert res.errors == {}
    assert res.sections == ["funnel", "distributions", "llm", "shards", "signals", "tables"]
    _assert_self_contained(page)
    for t in ("users", "llm_ledger", "judged_*", "gold_*", "shards/manifest.json", "synth_signals", "silver_records_scrubbed",
              "record_labels"):
        assert t in res.missing_tables, t
    for t in ("runs", "rejected", "silver_records", "quarantine"):
        assert t not in res.missing_tables, t
    # each section without its tables says what is missing and which command produces it
    for sid, table, command in (("llm", "llm_ledger", "lewin label / lewin llm"), ("llm", "judged_*", "lewin llm"),
                                ("shards", "shards/manifest.json", "lewin emit"),
                                ("signals", "synth_signals", "lewin llm"),
                                ("distributions", "users", "lewin users"),
                                ("distributions", "silver_records_scrubbed", "lewin scrub")):
        sec = _section_html(page, sid)
        assert "Not in this table set" in sec and f"<code>{table}</code>" in sec and command in sec, (sid, table)
    assert "synth_signals table is absent" in _section_html(page, "signals")
    # what the tables do hold is charted, every chart with data
    assert {"funnel", "funnel_reasons", "text_lengths", "lang_scores"} <= set(res.charts)
    assert all(n > 0 for n in res.charts.values()), res.charts
    points = [int(n) for n in re.findall(r'<figure class="chart"[^>]*data-points="(\d+)"', page)]
    assert len(points) == len(res.charts) and all(points)
    funnel = _section_html(page, "funnel")
    for reason in ("rules: reddit_min_score_v1", "language: language_v1", "dedup: dedup_exact_v1",
                   "rules: twitter_brand_account_v1"):
        assert reason in funnel, reason


# --- (b) the bundled sample in a browser ----------------------------------------------------------------------
@needs_chromium
def test_sample_report_opens_cleanly_in_chromium(sample_run, engine, tmp_path):
    cwd, _ = sample_run
    cfg = LewinConfig(storage=StorageConfig(root=cwd / "lewin-data", database=f"t_{uuid.uuid4().hex[:10]}"))
    store = TableStore(engine, cfg.storage)  # reads only: the shared run's tables stay as they are
    run_report = cwd / "lewin-data" / "report.html"  # `lewin run` ends by writing one
    before = run_report.read_bytes()
    res = write_report(store, cfg, tmp_path / "report.html")
    assert res.errors == {}
    assert run_report.read_bytes() == before, "a report written elsewhere leaves the run's own alone"
    # the sample run has every stage; only the quality-signal table may be absent
    assert set(res.missing_tables) <= {"synth_signals"}, res.missing_tables
    for chart in ("funnel", "funnel_reasons", "text_lengths", "per_user", "lang_scores", "pii_types", "ledger_status",
                  "ledger_tokens", "judge_scores", "gold_yield", "shard_counts", "mix", "mcq_origins"):
        assert chart in res.charts, chart
    if "synth_signals" not in res.missing_tables:  # the demo profile bounds persona and profile lengths
        assert "signal_pass_rates" in res.charts
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    _assert_self_contained(page)
    seen = browse(tmp_path / "report.html")
    assert seen["errors"] == [], seen["errors"]
    assert seen["requests"] == [], seen["requests"]
    assert len(seen["charts"]) == len(res.charts)
    empty = [c["id"] for c in seen["charts"] if not c["points"] > 0 or not c["svg"] or c["height"] < 50]
    assert not empty, f"charts without data: {empty}"
    # the page `lewin run` wrote opens as cleanly
    seen = browse(run_report)
    assert seen["errors"] == [] and seen["requests"] == [], seen
    assert seen["charts"] and all(c["points"] > 0 for c in seen["charts"]), seen["charts"]


# --- (c) the check goes red --------------------------------------------------------------------------------------
@needs_chromium
def test_browser_check_catches_an_empty_chart_and_a_script_error(tmp_path):
    page = report_html.render_page("t", [], [], [{"id": "s", "title": "s", "blocks": [
        {"type": "chart", "chart": {"id": "empty", "title": "no data", "kind": "bars", "categories": [], "series": {}}},
        {"type": "chart", "chart": {"id": "full", "title": "data", "kind": "bars", "categories": ["a"],
                                    "series": {"x": [3]}}}]}])
    assert [(c.id, c.points) for c in page.charts] == [("empty", 0), ("full", 1)]
    good = tmp_path / "good.html"
    good.write_text(page.html, encoding="utf-8")
    seen = browse(good)
    assert seen["errors"] == [] and seen["requests"] == []
    assert [(c["id"], c["points"]) for c in seen["charts"]] == [("chart-empty", 0), ("chart-full", 1)]
    # a script error (the page's policy blocks inline scripts: the refusal is itself an error) ...
    bad = tmp_path / "bad.html"
    bad.write_text(page.html.replace("</body>", "<script>undefinedFunction()</script></body>"), encoding="utf-8")
    assert browse(bad)["errors"]
    # ... and, without the policy, the exception itself; an external load is seen as a request
    loose = tmp_path / "loose.html"
    loose.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page.html).replace(
        "</body>", '<img src="http://127.0.0.1:9/x.png"><script>undefinedFunction()</script></body>'), encoding="utf-8")
    seen = browse(loose)
    assert any("undefinedFunction" in e for e in seen["errors"]), seen["errors"]
    assert "http://127.0.0.1:9/x.png" in seen["requests"]


# --- (d) quality signals (synth_signals, long format) ---------------------------------------------------------
SIGNALS_SCHEMA = ("artifact string, input_id string, user_id string, source string, signal string, value double, "
                  "bound string, passed boolean, gate boolean, detail string, run_id string, computed_at timestamp")


def test_signal_pass_rates_and_failing_rows_by_id(store, cfg, tmp_path):
    from datetime import datetime, timezone

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = [("persona", f"reddit:u{i}", f"u{i}", "reddit", "word_count", float(40 + 30 * i), "< 100", 40 + 30 * i < 100,
             True, None, "r1", now) for i in range(4)]  # 2 pass, 2 fail
    rows += [("social_qa", "reddit:t3_a#0", "u0", "reddit", "answer_leak", 0.9, "<= 0.5", False, False, "answer in scenario",
              "r1", now),
             ("social_qa", "reddit:t3_a#1", "u0", "reddit", "answer_leak", 0.1, "<= 0.5", True, False, None, "r1", now),
             ("social_qa", "reddit:t3_a#2", "u0", "reddit", "answer_leak", None, "<= 0.5", None, False, "no answer", "r1", now),
             # an artifact-level aggregate, and a signal reported without a bound
             ("persona", "*", None, None, "near_duplicate", 0.25, "<=0.1", False, False, None, "r1", now),
             ("persona", "reddit:u0", "u0", "reddit", "distinct_1", 0.7, None, None, False, None, "r1", now)]
    store.append("synth_signals", store.spark.createDataFrame(rows, SIGNALS_SCHEMA))
    res = write_report(store, cfg, tmp_path / "r.html")
    assert res.errors == {} and "synth_signals" not in res.missing_tables
    assert res.charts["signal_pass_rates"] == 2  # the bounded unit signals: persona word_count, social_qa answer_leak
    sec = _section_html((tmp_path / "r.html").read_text(encoding="utf-8"), "signals")
    cells = lambda row: [c.strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]  # noqa: E731
    rates = sec[sec.index("<table"):sec.index("</table>")]
    table = {tuple(cells(r)[:2]): cells(r) for r in re.findall(r"<tr>(.*?)</tr>", rates) if cells(r)}
    # artifact, signal, bound, gate, rows, passed, failed, n/a, pass %
    assert table[("persona", "word_count")][2:9] == ["&lt; 100", "gate", "4", "2", "2", "0", "50"]
    assert table[("social_qa", "answer_leak")][2:9] == ["&lt;= 0.5", "report", "3", "1", "1", "1", "50"]
    assert table[("persona", "distinct_1")][2:9] == ["(none: reported only)", "report", "1", "0", "0", "1", ""]
    assert ("persona", "near_duplicate") not in table  # the * aggregate is not a unit
    assert "Across all users (input_id *)" in sec and "<td>near_duplicate</td>" in sec
    assert "Failing rows: 4" in sec
    for rid in ("reddit:u2", "reddit:u3", "reddit:t3_a#0", "*"):
        assert f"<td>{rid}</td>" in sec, rid
    assert "<td>reddit:u0</td>" not in sec and "<td>reddit:t3_a#2</td>" not in sec
