"""LLM stages: prompts, parsing, engines' request/response, the ledger under faults, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from lewin.jobs.engine import Engine
from lewin.jobs.label import run_labels
from lewin.jobs.llm import run_llm
from lewin.jobs.tables import TableStore
from lewin.jobs.users import build_users
from lewin.schemas import tables as T
from lewin.schemas.config import LewinConfig, StorageConfig
from lewin.schemas.llm import output_schema, validate_output
from lewin.udfs import llm_prompts
from lewin.udfs.llm_backends import BackendSpec, OpenAIBackend, Request, Response, Sampling, default_gguf

from .conftest import ENGINE
from .fake_openai import FakeOpenAI

pytestmark = pytest.mark.skipif(ENGINE != "embedded", reason="LLM stages are exercised on the embedded engine")

LIMITS = {"persona_max_words": 100, "profile_min_words": 100, "profile_max_words": 400}
TEXTS = {
    "r_ok1": "I spent the weekend helping my brother move into his first flat and we ate pizza on the floor.",
    "r_ok2": "My grandmother taught me to bake bread and I baked her recipe again last night.",
    "r_json": "FAIL_JSON I argued with my landlord about the heating.",
    "r_schema": "FAIL_SCHEMA I started running in the mornings.",
    "r_500": "FAIL_500 I called my dad for the first time in months.",
    "r_slow": "FAIL_SLOW I adopted a shy old dog from the shelter.",
}


# --- pure parts ------------------------------------------------------------------------------------
def test_prompts_are_versioned_files_and_history_is_truncated_oldest_first():
    p = llm_prompts.load_prompt("persona")
    assert p.version.startswith("persona.v2-") and "[system]" not in p.system and not p.standalone
    records = [{"date": f"2020-01-0{i}", "text": "x" * 400} for i in range(1, 6)]
    kept = llm_prompts.fit_history(records, record_max_chars=300, history_max_chars=1000)
    assert [r["date"] for r in kept] == ["2020-01-03", "2020-01-04", "2020-01-05"]
    assert all(len(r["text"]) == 300 for r in kept)
    assert len(llm_prompts.fit_history(records[:1], 5000, 10)) == 1, "the latest post always stays"


def test_validate_output_cases():
    label = validate_output("quality", '{"quality": "high", "harm": "none", "reason": "ok"}', LIMITS)[0]
    assert label["harmful"] == "no"
    assert validate_output("quality", '{"quality": "low", "harm": "violence", "reason": "x"}', LIMITS)[0]["harmful"] == "yes"
    assert validate_output("quality", "not json", LIMITS)[1].startswith("malformed JSON")
    assert validate_output("quality", '{"quality": "great", "harm": "none", "reason": "x"}', LIMITS)[1].startswith("schema violation")
    assert validate_output("quality", '{"quality": "high", "harm": "maybe", "reason": "x"}', LIMITS)[1].startswith("schema violation")
    words = " ".join(["w"] * 120)
    assert "120 words" in validate_output("persona", json.dumps({"persona": words}), LIMITS)[1]
    assert "expected 100-400" in validate_output("profile", json.dumps({"profile": "too short"}), LIMITS)[1]
    ok, why = validate_output("judge_persona", '{"hallucination": 9, "coverage": 8, "conciseness": 9, "relevance": 9, '
                                               '"overall": 9, "reasons": "line one\nline two"}', LIMITS)
    assert why is None and ok["overall"] == 9
    assert "missing scores" in validate_output("judge_persona", '{"overall": 9}', LIMITS)[1]

    schema = json.dumps(output_schema("profile"))
    assert "maxLength" not in schema and "minLength" not in schema


def test_openai_request_building_and_response_parsing():
    eng = OpenAIBackend(BackendSpec(kind="openai", model="m", base_url="http://127.0.0.1:1/v1"))
    req = Request("k", ({"role": "system", "content": "s"}, {"role": "user", "content": "u"}), {"type": "object"})
    body = eng.build_body(req, Sampling(0.7, 0.9, 64, 3))
    assert body["model"] == "m" and body["max_tokens"] == 64 and body["seed"] == 3
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    r = eng.parse("k", {"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 2}}, 12)
    assert (r.text, r.tokens_in, r.tokens_out, r.latency_ms, r.extra["finish_reason"]) == ("{}", 5, 2, 12, "stop")


def test_vllm_request_building_and_response_parsing():
    """Without vLLM installed: the sampling arguments and the RequestOutput parsing."""
    from types import SimpleNamespace

    from lewin.udfs.llm_backends import VllmBackend

    assert VllmBackend.sampling_kwargs(Sampling(0.7, 0.9, 64, 1)) == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 64,
                                                                     "seed": 1}
    out = SimpleNamespace(prompt_token_ids=[1, 2, 3], outputs=[SimpleNamespace(text='{"persona": "x"}', token_ids=[7, 8],
                                                                               finish_reason="stop")])
    r = VllmBackend.parse("k", out, 5)
    assert (r.key, r.text, r.tokens_in, r.tokens_out, r.extra["finish_reason"]) == ("k", '{"persona": "x"}', 3, 2, "stop")


def test_vllm_sampling_params_building():
    pytest.importorskip("vllm", reason="vllm is not installed (GPU extra)")
    from lewin.udfs.llm_backends import VllmBackend

    sp = VllmBackend.sampling_params(Sampling(0.7, 0.9, 64, 1), {"type": "object"})
    assert sp.max_tokens == 64 and sp.seed == 1


@pytest.mark.gpu
def test_vllm_engine_on_a_gpu():
    torch = pytest.importorskip("torch", reason="needs torch with CUDA")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    pytest.importorskip("vllm")
    from lewin.udfs.llm_backends import get_backend

    model = os.environ.get("LEWIN_VLLM_TEST_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")
    eng = get_backend(BackendSpec(kind="vllm", model=model, max_model_len=2048, gpu_memory_utilization=0.5))
    out = eng.generate([Request("a", ({"role": "user", "content": "Describe a baker."},), output_schema("persona"))],
                       Sampling(max_tokens=96))
    assert out[0].error is None and "persona" in json.loads(out[0].text)


# --- the ledger under faults ---------------------------------------------------------------------
def _seed_tables(store: TableStore, spark, cfg: LewinConfig, texts: dict | None = None, kind: str = "blog_post") -> None:
    """Scrubbed records (users ann and bob alternate); nothing labelled yet."""
    rows = []
    for i, (rid, text) in enumerate((texts or TEXTS).items()):
        rec = {f.name: None for f in T.SILVER_RECORDS_SCRUBBED.fields}
        rec.update(record_id=rid, source="blogger", user_id="ann" if i % 2 == 0 else "bob", kind=kind,
                   event_ts=datetime(2021, 1, 1 + i), text=text, text_hash=rid, _bronze_run_id="b",
                   _curate_run_id="c", scrub_version="v", _scrub_run_id="s", pii_spans=[])
        rows.append(rec)
    store.ensure("silver_records_scrubbed", T.SILVER_RECORDS_SCRUBBED)
    store.append("silver_records_scrubbed", spark.createDataFrame(rows, T.SILVER_RECORDS_SCRUBBED))


def _pipeline(store: TableStore, cfg: LewinConfig, retry_dead: bool = False):
    """label -> users -> llm, as `lewin run` chains them: (label result, llm result)."""
    labels = run_labels(store, cfg, retry_dead=retry_dead)
    build_users(store, cfg)
    return labels, run_llm(store, cfg, retry_dead=retry_dead)


def _calls(labels, llm) -> int:
    return sum(s.sent for s in labels.stages) + llm.calls


def _cfg(tmp_path: Path, url: str) -> LewinConfig:
    cfg = LewinConfig(storage=StorageConfig(root=tmp_path / "t", database="llm_" + tmp_path.name[-12:].replace("-", "_")))
    cfg.llm.engine.kind = "openai"
    cfg.llm.engine.model = "scripted"
    cfg.llm.engine.base_url = url
    cfg.llm.engine.timeout_s = 1.0
    cfg.llm.engine.max_retries = 1
    cfg.llm.profile_min_words = 10
    cfg.llm.chunk_size = 4
    cfg.llm.max_attempts = 2
    return cfg


def _ledger(store) -> dict:
    return {r["input_id"]: r for r in store.read("llm_ledger").where(F.col("artifact") == "quality").collect()}


def test_faults_fail_their_row_only_then_retry_then_dead_letters(tmp_path, engine):
    with FakeOpenAI(slow_s=2.5) as srv:
        cfg = _cfg(tmp_path, srv.url)
        store = TableStore(engine, cfg.storage)
        _seed_tables(store, engine.spark, cfg)
        labels, first = _pipeline(store, cfg)
        q = _ledger(store)
        # the good rows pass; each bad one is tried max_attempts (2) times in the run, then left dead
        assert {k: v["status"] for k, v in q.items()} == {
            "r_ok1": "ok", "r_ok2": "ok", "r_json": "dead", "r_schema": "dead", "r_500": "dead", "r_slow": "dead"}
        assert all(q[k]["attempts"] == 2 for k in ("r_json", "r_schema", "r_500", "r_slow"))
        assert all(q[k]["attempts"] == 1 for k in ("r_ok1", "r_ok2"))
        assert q["r_json"]["error"].startswith("malformed JSON")
        assert q["r_schema"]["error"].startswith("schema violation")
        assert q["r_500"]["error"].startswith("http_500: ")  # a stable reason code, then a detail
        assert q["r_slow"]["error"].startswith("timeout: ")
        quality = next(s for s in labels.stages if s.artifact == "quality")
        assert (quality.inputs, quality.sent, quality.ok, quality.dead) == (6, 6 + 4, 2, 4)
        # a dead label is a dropped record, with its reason: only the two labelled records go on
        gates = {r["record_id"]: r for r in store.read("record_labels").collect()}
        assert {k: v["gate"] for k, v in gates.items()} == {
            "r_ok1": "kept", "r_ok2": "kept", "r_json": "label_failed", "r_schema": "label_failed",
            "r_500": "label_failed", "r_slow": "label_failed"}
        assert gates["r_500"]["reason"].startswith("http_500: ")
        assert labels.by_source == {"blogger": {"kept": 2, "label_failed": 4}}
        # the good rows went all the way: synthesis, judging, gold
        for art in ("persona", "profile", "stories", "writing_style", "scenario", "social_qa"):
            assert store.count(f"gold_{art}") >= 1, art
        judged = store.read("judged_persona").collect()[0]
        assert judged["accepted"] and judged["scores"]["overall"] == 9 and judged["reasons"] == "faithful and clear"
        calls = srv.total

        assert _calls(*_pipeline(store, cfg)) == 0 and srv.total == calls, "a rerun sends nothing"
        # dead letters can be given another chance on request
        assert _calls(*_pipeline(store, cfg, retry_dead=True)) == 4 * 2
        keys = store.read("llm_ledger").groupBy("ledger_key").count().where("count > 1").count()
        assert keys == 0


class _Scripted:
    """An in-process engine double: raises for marked prompts, small context window."""

    name = "scripted"
    model = "scripted"
    context_tokens = 400  # a short post (~180 tokens) fits, a 1,500-character one (~550) does not

    def __init__(self):
        self.calls = 0

    def count_tokens(self, messages):
        return sum(len(m["content"]) for m in messages) // 4

    def generate(self, requests, sampling):
        self.calls += len(requests)
        if any("EXPLODE" in r.messages[-1]["content"] for r in requests):
            raise RuntimeError("CUDA out of memory (simulated)")
        from .fake_openai import reply_for

        self.budgets = getattr(self, "budgets", []) + [(r.sampling or sampling).max_tokens for r in requests]
        out = []
        for r in requests:
            text = json.dumps(reply_for(r.schema, r.messages[-1]["content"]))
            if "TRUNCATE" in r.messages[-1]["content"]:  # a reply cut by its budget: a valid-looking prefix
                out.append(Response(r.key, text[:-2] + '"}', 10, (r.sampling or sampling).max_tokens, 1,
                                    extra={"finish_reason": "length"}))
            else:
                out.append(Response(r.key, text, 10, 10, 1, extra={"finish_reason": "stop"}))
        return out


def test_engine_exceptions_and_over_long_prompts(tmp_path, engine):
    from lewin.udfs.llm_backends import register_backend

    cfg = _cfg(tmp_path, "http://unused")
    cfg.llm.engine.kind = "llamacpp"  # the spec key the double is registered under
    cfg.llm.engine.model = "scripted"
    inline = Engine(engine.spark, engine.kind, 1, engine.table_format)  # one process: the double is visible
    store = TableStore(inline, cfg.storage)
    _seed_tables(store, engine.spark, cfg, {"r_ok": "A short fine post.", "r_boom": "EXPLODE please",
                                            "r_long": "word " * 1400})
    from lewin.jobs.llm import backend_spec

    double = _Scripted()
    register_backend(backend_spec(cfg), double)
    cfg.llm.chunk_size = 10
    run_labels(store, cfg)
    q = _ledger(store)
    assert q["r_long"]["status"] == "dead" and q["r_long"]["error"].startswith("prompt_too_long")
    assert q["r_boom"]["status"] == "dead" and q["r_boom"]["attempts"] == 2 and "CUDA out of memory" in q["r_boom"]["error"]
    assert q["r_ok"]["status"] == "ok", "a failing engine call fails only its own prompt"


def test_a_dead_letter_whose_input_is_now_another_prompt_is_superseded_not_dead(tmp_path, engine):
    """Issue 16 (9): a record's label died; its text then changed (a new prompt for the same input)
    and the new prompt succeeded under --retry-dead. The old dead letter is history: ``superseded``,
    not listed as dead; a dead letter of an unchanged input stays dead."""
    from lewin.jobs.llm import backend_spec
    from lewin.udfs.llm_backends import register_backend

    cfg = _cfg(tmp_path, "http://unused")
    cfg.llm.engine.kind, cfg.llm.engine.model = "llamacpp", "scripted"
    inline = Engine(engine.spark, engine.kind, 1, engine.table_format)
    store = TableStore(inline, cfg.storage)
    _seed_tables(store, engine.spark, cfg, {"r_ok": "A short fine post.", "r_boom": "EXPLODE please",
                                            "r_still": "EXPLODE again"})
    register_backend(backend_spec(cfg), _Scripted())
    run_labels(store, cfg)
    assert {k: v["status"] for k, v in _ledger(store).items()} == {"r_ok": "ok", "r_boom": "dead", "r_still": "dead"}
    fixed = store.read("silver_records_scrubbed").withColumn(
        "text", F.when(F.col("record_id") == "r_boom", F.lit("A fixed post.")).otherwise(F.col("text")))
    store.overwrite("silver_records_scrubbed", store.spark.createDataFrame(fixed.collect(), T.SILVER_RECORDS_SCRUBBED))
    run_labels(store, cfg, retry_dead=True)
    rows = store.read("llm_ledger").where(F.col("artifact") == "quality").collect()
    by_input = {}
    for r in rows:
        by_input.setdefault(r["input_id"], []).append(r["status"])
    assert sorted(by_input["r_boom"]) == ["ok", "superseded"]
    assert by_input["r_still"] == ["dead"] and by_input["r_ok"] == ["ok"]


def test_a_reply_cut_by_its_budget_is_a_failure_and_counted(tmp_path, engine):
    """finish_reason "length" fails the attempt as truncated (even when the cut reply parses),
    is retried, then dead; the run counts it. A reply's budget is what the context leaves, at most
    the artifact's derived budget."""
    from lewin.jobs.label import run_labels as labels_of
    from lewin.jobs.llm import backend_spec
    from lewin.udfs.llm_backends import register_backend

    cfg = _cfg(tmp_path, "http://unused")
    cfg.llm.engine.kind, cfg.llm.engine.model = "llamacpp", "scripted-trunc"
    inline = Engine(engine.spark, engine.kind, 1, engine.table_format)
    store = TableStore(inline, cfg.storage)
    _seed_tables(store, engine.spark, cfg, {"r_ok": "A short fine post.", "r_cut": "TRUNCATE this reply"})
    double = _Scripted()
    double.context_tokens = 4096
    register_backend(backend_spec(cfg), double)
    res = labels_of(store, cfg).stages[0]
    q = _ledger(store)
    assert q["r_cut"]["status"] == "dead" and q["r_cut"]["error"].startswith("truncated: reply hit max_tokens=")
    assert q["r_cut"]["attempts"] == cfg.llm.max_attempts and q["r_ok"]["status"] == "ok"
    assert res.truncated == cfg.llm.max_attempts and res.funnel(None).detail["truncated"] == res.truncated
    assert set(double.budgets) == {cfg.llm.reply_budgets["quality"]}


@pytest.mark.parametrize("context, expect", [(1080, 80), (1050, None), (2000, "budget")])
def test_the_reply_gets_what_the_context_leaves(context, expect):
    """Budget = min(the artifact's budget, context - prompt); under MIN_REPLY_TOKENS left: not sent."""
    import pyarrow as pa

    from lewin.jobs.llm import prompt_options
    from lewin.udfs.llm_backends import register_backend

    cfg = LewinConfig()
    cfg.llm.engine.kind, cfg.llm.engine.model = "llamacpp", f"scripted-ctx-{context}"
    double = _Scripted()
    double.context_tokens, double.count_tokens = context, lambda messages: 1000
    register_backend(prompt_options(cfg, "quality").engine, double)
    row = {"ledger_key": "k", "artifact": "quality", "input_id": "r", "input_hash": "h", "user_id": "u", "source": "s",
           "prompt_version": "v", "model": "m", "params_hash": "p", "prev_attempts": 0,
           "context": json.dumps({"text": "A post.", "date": "2021-01-01"})}
    out = next(llm_prompts.run_batch(pa.RecordBatch.from_pylist([row]), prompt_options(cfg, "quality"))).to_pylist()[0]
    if expect is None:
        assert out["status"] == "dead" and out["error"].startswith("prompt_too_long") and not getattr(double, "budgets", [])
    else:
        assert out["status"] == "ok"
        assert double.budgets == [cfg.llm.reply_budgets["quality"] if expect == "budget" else expect]


def test_reply_budgets_follow_the_word_limits_and_schemas():
    """Budgets derive from what a compliant reply may hold: a persona of the word limit fits, a
    profile of 400 words fits, and they move with the settings; overrides win; bad keys fail."""
    from lewin.schemas.config import ConfigError, load_config
    from lewin.schemas.llm import TOKENS_PER_WORD

    lc = LewinConfig().llm
    b = lc.reply_budgets
    assert b["persona"] >= lc.persona_max_words * TOKENS_PER_WORD and b["persona"] < 2 * lc.persona_max_words * TOKENS_PER_WORD
    assert b["profile"] >= lc.profile_max_words * TOKENS_PER_WORD
    assert b["stories"] > b["persona"] and b["social_qa"] > b["scenario"] > b["judge"] > b["quality"]
    more = load_config(None, ["llm.profile_max_words=600", "llm.qa_per_record=6", "llm.max_tokens.judge=99"]).llm.reply_budgets
    assert more["profile"] > b["profile"] and more["social_qa"] > b["social_qa"] and more["judge"] == 99
    with pytest.raises(ConfigError, match="llm.max_tokens"):
        load_config(None, ["llm.max_tokens.jugde=10"])


def test_prompt_version_change_reruns_only_that_artifact(tmp_path, engine, monkeypatch):
    with FakeOpenAI() as srv:
        cfg = _cfg(tmp_path, srv.url)
        store = TableStore(engine, cfg.storage)
        _seed_tables(store, engine.spark, cfg, {"r1": "I baked bread with my grandmother.", "r2": "I moved into a new flat."})
        _pipeline(store, cfg)
        before = {r["ledger_key"] for r in store.read("llm_ledger").collect()}
        # a new version of the persona template, in a copy of the prompt folder
        prompts = tmp_path / "prompts"
        prompts.mkdir()
        for f in llm_prompts.PROMPTS.glob("*.j2"):
            (prompts / f.name).write_text(f.read_text())
        (prompts / "persona.v3.j2").write_text((prompts / "persona.v2.j2").read_text().replace("fewer than", "under"))
        monkeypatch.setattr(llm_prompts, "PROMPTS", prompts)
        llm_prompts.load_prompt.cache_clear()
        try:
            labels, r = _pipeline(store, cfg)
        finally:
            llm_prompts.load_prompt.cache_clear()
        assert [s.sent for s in labels.stages] == [0]
        sent = {s.artifact: s.sent for s in r.stages}
        assert sent == {"persona": 2, "judge_persona": 2, "profile": 0, "judge_profile": 0, "stories": 0,
                        "judge_stories": 0, "writing_style": 0, "judge_writing_style": 0, "scenario": 0,
                        "judge_scenario": 0, "social_qa": 0, "judge_social_qa": 0}
        synth = store.read("synth_persona").collect()
        assert len(synth) == 2 and all(s["prompt_version"].startswith("persona.v3-") for s in synth)
        assert before <= {r["ledger_key"] for r in store.read("llm_ledger").collect()}, "old rows stay in the ledger"


def test_crash_mid_stage_then_resume_loses_at_most_a_chunk(tmp_path, engine):
    """SIGKILL after the first ledger chunk of the label stage, then of the LLM stage; each rerun
    finishes without asking again what was saved."""
    with FakeOpenAI() as srv:
        cfg = _cfg(tmp_path, srv.url)
        store = TableStore(engine, cfg.storage)
        _seed_tables(store, engine.spark, cfg)
        root = cfg.storage.root
        base = [sys.executable, "-m", "lewin.jobs.cli", "--set", f"storage.root={root}", "--set", "llm.engine.kind=openai",
                "--set", f"llm.engine.base_url={srv.url}", "--set", "llm.engine.model=scripted", "--set",
                "llm.chunk_size=2", "--set", "llm.engine.timeout_s=1", "--set", "llm.engine.max_retries=0",
                "--set", "llm.profile_min_words=10"]
        out = tmp_path / "o.txt"
        for command in ("label", "llm"):
            if command == "llm":
                build_users(store, cfg)
            before = store.count("llm_ledger") if store.exists("llm_ledger") else 0
            with out.open("w") as o:
                rc = subprocess.run(base + [command], env=dict(os.environ, LEWIN_FAILPOINT=f"{command}.after_chunk"),
                                    stdout=o, stderr=o, timeout=600).returncode
            assert rc == -signal.SIGKILL, out.read_text()[-3000:]
            assert 0 < store.count("llm_ledger") - before <= 2, f"{command}: exactly the first chunk was saved"
            with out.open("w") as o:
                assert subprocess.run(base + [command], stdout=o, stderr=o, timeout=900).returncode == 0, out.read_text()[-3000:]
        ledger = store.read("llm_ledger")
        assert ledger.groupBy("ledger_key").count().where("count > 1").count() == 0
        assert ledger.where(F.col("artifact") == "quality").count() == len(TEXTS)
        assert store.count("record_labels") == len(TEXTS) and store.count("gold_persona") == 2
        # nothing saved as done was asked again: the only repeats are retries of failed prompts
        # (one HTTP call per attempt here: no HTTP-level retries)
        repeats = sum(n - 1 for n in srv.calls.values() if n > 1)
        retries = ledger.agg(F.sum(F.col("attempts") - 1)).collect()[0][0]
        assert repeats == retries, (repeats, retries)
        assert ledger.where((F.col("attempts") > 1) & (F.col("status") == "ok")).count() == 0


def test_openai_engine_against_llama_cpp_server(tmp_path):
    """The OpenAI path end to end: llama.cpp's own OpenAI-compatible server on the bundled model."""
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", default_gguf(), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "4096", "--model_alias", "smollm2"], stdout=log, stderr=log)
    try:
        import httpx

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("llama.cpp server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
        eng = OpenAIBackend(BackendSpec(kind="openai", model="smollm2", base_url=f"http://127.0.0.1:{port}/v1",
                                      timeout_s=120, max_retries=1, max_concurrency=2))
        msgs = ({"role": "system", "content": "You label social media posts. Reply with JSON only."},
                {"role": "user", "content": "Post: I baked bread with my grandmother.\nIs it harmful? How personal is it? Why?"})
        out = eng.generate([Request("a", msgs, output_schema("quality")), Request("b", msgs, output_schema("persona"))],
                           Sampling(max_tokens=80))
        assert all(o.error is None for o in out), [o.error for o in out]
        label, _ = validate_output("quality", out[0].text, LIMITS)
        assert label is not None and label["quality"] in ("high", "medium", "low")
        assert "persona" in json.loads(out[1].text, strict=False)
        assert out[0].tokens_in > 0 and out[0].tokens_out > 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


# verdicts by marker in the judged record: (overall, every other metric, one other metric's override)
VERDICTS = {
    "V_PASS": (9, 8, None),  # just above both thresholds (> 8, > 7): gold
    "V_TOP": (10, 10, None),  # gold
    "V_EDGE": (8, 10, None),  # overall == judge_overall_gt: "> 8" is strict, not gold
    "V_LOW": (3, 10, None),  # overall below: not gold
    "V_OTHER_EDGE": (10, 10, 7),  # one other metric == judge_others_gt: not gold
    "V_OTHER_LOW": (10, 10, 2),  # one other metric below: not gold
}


class _ScriptedJudge:
    """Well-formed replies for every artifact; judge verdicts scripted by a marker in the source text."""

    name = "scripted"
    model = "scripted-judge"
    context_tokens = 4096

    def __init__(self):
        self.judged = []

    def count_tokens(self, messages):
        return sum(len(m["content"]) for m in messages) // 4

    def generate(self, requests, sampling):
        from .fake_openai import reply_for

        out = []
        for r in requests:
            props = [m for m in (r.schema or {}).get("properties", {}) if m != "reasons"]
            if "overall" not in props:
                out.append(Response(r.key, json.dumps(reply_for(r.schema, r.messages[-1]["content"])), 10, 10, 1))
                continue
            text = "\n".join(m["content"] for m in r.messages)
            marker = next(m for m in VERDICTS if f"{m} " in text)
            overall, others, override = VERDICTS[marker]
            scores = {m: others for m in props}
            scores["overall"] = overall
            if override is not None:
                scores[min(m for m in props if m != "overall")] = override
            self.judged.append(marker)
            out.append(Response(r.key, json.dumps({**scores, "reasons": marker}), 10, 10, 1))
        return out


def test_gold_gate_accepts_only_scores_strictly_above_both_thresholds(tmp_path, engine):
    """judged_<artifact> holds every verdict with its score; gold_<artifact> only the ones whose
    overall > judge_overall_gt and every other score > judge_others_gt (the boundaries rejected)."""
    from lewin.jobs.llm import backend_spec
    from lewin.udfs.llm_backends import register_backend

    cfg = _cfg(tmp_path, "http://unused")
    cfg.llm.engine.kind = "llamacpp"  # the spec key the double is registered under
    cfg.llm.engine.model = "scripted-judge"
    cfg.llm.artifacts = ["scenario"]  # per record: one verdict per marker
    cfg.llm.judge_overall_gt, cfg.llm.judge_others_gt = 8, 7
    inline = Engine(engine.spark, engine.kind, 1, engine.table_format)  # one process: the double is visible
    store = TableStore(inline, cfg.storage)
    texts = {f"r_{m.lower()}": f"{m} I walked to the harbour and watched the boats come in." for m in VERDICTS}
    _seed_tables(store, engine.spark, cfg, texts)
    double = _ScriptedJudge()
    register_backend(backend_spec(cfg), double)
    _, r = _pipeline(store, cfg)
    assert sorted(double.judged) == sorted(VERDICTS), "every record was judged once"
    judged = {x["input_id"]: x for x in store.read("judged_scenario").collect()}
    assert set(judged) == set(texts)
    want_gold = {f"r_{m.lower()}" for m in ("V_PASS", "V_TOP")}
    for rid, row in judged.items():
        marker = rid[2:].upper()
        overall, _, _ = VERDICTS[marker]
        assert row["reasons"] == marker and row["overall"] == overall == row["scores"]["overall"], rid
        assert row["accepted"] is (rid in want_gold), (rid, row["scores"])
    gold = {x["input_id"] for x in store.read("gold_scenario").collect()}
    assert gold == want_gold
    assert r.gold == {"scenario": 2}
    funnel = {x["source"]: x for x in store.read("runs").where(F.col("run_id") == r.run_id).collect()}
    assert json.loads(funnel["judge_scenario"]["detail"])["gold"] == 2


class _FailsScenarios(_ScriptedJudge):
    """Every scenario reply breaks its schema (a dead letter after max_attempts); the rest is well formed."""

    def __init__(self):
        super().__init__()
        self.scenario_calls = 0

    def generate(self, requests, sampling):
        out = super().generate(requests, sampling)
        for i, r in enumerate(requests):
            if "background" in (r.schema or {}).get("properties", {}):
                self.scenario_calls += 1
                out[i] = Response(r.key, '{"background": ""}', 10, 10, 1)
        return out


def test_retry_dead_gives_each_dead_letter_one_fresh_set_of_attempts_through_waves(tmp_path, engine):
    """`--retry-dead` retries a dead letter max_attempts times in its wave; the pass over every
    input that follows the waves must not retry what died again in this run."""
    from lewin.jobs.llm import backend_spec
    from lewin.udfs.llm_backends import register_backend

    cfg = _cfg(tmp_path, "http://unused")
    cfg.llm.engine.kind, cfg.llm.engine.model = "llamacpp", "scripted-fails-scenarios"
    cfg.llm.artifacts = ["scenario"]
    inline = Engine(engine.spark, engine.kind, 1, engine.table_format)
    store = TableStore(inline, cfg.storage)
    _seed_tables(store, engine.spark, cfg, {"r_a": "V_PASS I walked to the harbour and watched the boats come in."})
    double = _FailsScenarios()
    register_backend(backend_spec(cfg), double)
    _pipeline(store, cfg)
    assert double.scenario_calls == cfg.llm.max_attempts
    _, r = _pipeline(store, cfg, retry_dead=True)
    assert r.waves == 1
    assert double.scenario_calls == 2 * cfg.llm.max_attempts, "retried once per --retry-dead, not once per pass"
